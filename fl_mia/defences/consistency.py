"""Model-consistency check: hospitals compare what they received on a channel of their own.

A malicious server may send different models to different hospitals (model
inconsistency, Pasquini et al. CCS 2022) so that the SecAgg+ sum isolates one
hospital's update. Each hospital publishes the SHA-256 of the model it received on a
*hospital channel* the server does not control, and reads the others' before it
helps to unmask the sum.

In simulation the channel is a folder on the local file system, outside Flower's
messages: the stand-in for hospitals talking to each other directly (a shared
bulletin board, a signed gossip message). Nothing in ``server/`` or ``strategies/``
reads or writes it; only the run's report reads the verdicts afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
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


class HospitalChannel:
    """Per run, per round: every hospital's published digest, and flagged mismatches."""

    def __init__(self, root: Path | None = None, *, run_id: int) -> None:
        self.folder = Path(root or default_channel_root()) / f"run-{run_id}"

    def _round(self, server_round: str) -> Path:
        return self.folder / f"round-{server_round}"

    def publish(self, server_round: str, hospital: int, digest: str) -> None:
        folder = self._round(server_round)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{hospital}.tmp"
        tmp.write_text(digest)
        tmp.replace(folder / f"{hospital}.sha256")  # atomic: readers never see half a digest

    def digests(self, server_round: str) -> dict[int, str]:
        folder = self._round(server_round)
        if not folder.is_dir():
            return {}
        return {int(path.stem): path.read_text() for path in folder.glob("*.sha256")}

    def record_verdict(self, server_round: str, hospital: int, consistent: bool, action: str) -> None:
        folder = self._round(server_round)
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
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


class ModelInconsistencyError(RuntimeError):
    """A hospital refuses to unmask: the hospitals did not all receive the same model."""
