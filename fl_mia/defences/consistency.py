"""Model-consistency check: hospitals compare what they received on a channel of their own.

A malicious server may send different models to different hospitals (model
inconsistency, Pasquini et al. CCS 2022) so that the SecAgg+ sum isolates one
hospital's update. Each hospital publishes the SHA-256 of the model it received on a
*hospital channel* the server does not control, and reads its SecAgg+ neighbours' before
it helps to unmask the sum. Publications are named by the publisher's SecAgg+ public key
of the round (:func:`session_key`), never by anything the server sets per message: a
server that gave each hospital its own group id would otherwise put every digest in a
folder of its own, and no hospital would ever see a mismatch.

In simulation the channel is a folder on the local file system, outside Flower's
messages: the stand-in for hospitals talking to each other directly (a shared
bulletin board, a signed gossip message). Nothing in ``server/`` or ``strategies/``
reads or writes it; only the run's report reads the verdicts afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path


def model_digest(tensors: Iterable[bytes]) -> str:
    """SHA-256 over the serialised arrays of a model, in order."""
    digest = hashlib.sha256()
    for blob in tensors:
        digest.update(len(blob).to_bytes(8, "little"))
        digest.update(blob)
    return digest.hexdigest()


def default_channel_root() -> Path:
    return Path(os.environ.get("FL_MIA_HOSPITAL_CHANNEL", Path(tempfile.gettempdir()) / "fl-mia-hospital-channel"))


def session_key(public_key: bytes) -> str:
    """Name under which a hospital publishes in one SecAgg+ round: a hash of its fresh public key.

    Each hospital draws new key pairs every SecAgg+ round and learns its neighbours' public
    keys in the share-keys stage, so the hospitals of a round agree on these names without
    anything the server can set per hospital (group ids, round numbers, run config).
    """
    return hashlib.sha256(public_key).hexdigest()[:32]


class HospitalChannel:
    """Per run: every hospital's published digest (by session key) and each hospital's verdicts."""

    def __init__(self, root: Path | None = None, *, run_id: int) -> None:
        self.folder = Path(root or default_channel_root()) / f"run-{run_id}"

    def publish(self, key: str, hospital: int, digest: str) -> None:
        folder = self.folder / "digests"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.tmp"
        tmp.write_text(json.dumps({"hospital": hospital, "digest": digest}))
        tmp.replace(folder / f"{key}.json")  # atomic: readers never see half a digest

    def digests(self, keys: Iterable[str]) -> dict[int, str]:
        """``{hospital: digest}`` published under ``keys`` (hospitals that never published are absent)."""
        found: dict[int, str] = {}
        for key in keys:
            path = self.folder / "digests" / f"{key}.json"
            if path.is_file():
                entry = json.loads(path.read_text())
                found[int(entry["hospital"])] = entry["digest"]
        return found

    def record_verdict(self, label: str, hospital: int, consistent: bool, action: str) -> None:
        """``label``: the round as the report shows it (bookkeeping only; never part of the check)."""
        folder = self.folder / f"round-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{hospital}.verdict.json").write_text(json.dumps({"consistent": consistent, "action": action}))

    def verdicts(self) -> dict[str, dict[str, dict]]:
        """``{round: {hospital: {"consistent": bool, "action": str}}}`` for the report."""
        result: dict[str, dict[str, dict]] = {}
        for path in sorted(self.folder.glob("round-*/*.verdict.json")):
            result.setdefault(path.parent.name[len("round-"):], {})[path.name.split(".")[0]] = json.loads(path.read_text())
        return result

    def remove(self) -> None:
        """Delete this run's channel folder (after the report has read the verdicts)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class ModelInconsistencyError(RuntimeError):
    """A hospital refuses to unmask: the hospitals did not all receive the same model."""
