"""The run folder: created fresh, written atomically, marked complete only at the end.

Layout (later features add files, never rename these):

    runs/<name>-<YYYYmmdd-HHMMSS>/
        config.toml       resolved experiment (after --set overrides)
        status.json       running | complete | failed (with the error)
        metrics.json      utility, cost, threat model (privacy added by the attack step)
        rounds.csv        one row per round and hospital (and an "all" row per round)
        timings.csv       each hospital's fit time per round (wall clock, not reproducible)
        global_model.pt   final global weights (torch state dict)
        run.log           log of the run (fl-mia and Flower)
        keep.npy          membership ledger [candidates, hospitals] (privacy step)
        candidates.csv    candidate order: hospital drawn for, patient and image ids
        scores.npz        one score array per attack (and per round), aligned with keep.npy
        roc_loglog.png    ROC of every attack on log-log axes
        privacy_by_round.png  AUC and TPR at 1% FPR of per-round attacks
        shadows/          the attacker's shadow models (weights + data fingerprint)
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w


class RunFolderError(ValueError):
    """The run folder cannot be used; the message names it and says what to do."""


def check_new_run_folder(out: Path) -> None:
    """``--out`` must be new or an empty folder: an earlier run is never overwritten."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(f"--out {out}: already exists and is not empty; choose a new folder")


def create_run_folder(name: str, *, out: Path | None = None, runs_root: Path = Path("runs")) -> Path:
    """A new, empty folder; an existing run is never reused or overwritten."""
    if out is not None:
        out = Path(out)
        check_new_run_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    runs_root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = runs_root / (f"{name}-{stamp}" if attempt == 0 else f"{name}-{stamp}-{attempt + 1}")
        try:
            candidate.mkdir()  # atomic: two runs started in the same second get different folders
            return candidate
        except FileExistsError:
            continue
    raise RunFolderError(f"{runs_root}: could not find a free run folder name for {name}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_npz(path: Path, arrays: dict[str, Any]) -> None:
    """An ``.npz`` that ``np.load`` reads, byte-identical for identical arrays.

    ``np.savez`` stamps each member with the current time; fixed stamps keep same-seed runs
    byte-for-byte equal.
    """
    import zipfile

    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    atomic_write_bytes(path, buffer.getvalue())


def write_npy(path: Path, array: Any) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def write_toml(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, tomli_w.dumps(data))


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    atomic_write_text(path, buffer.getvalue())


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # full precision: identical runs give identical files
    return "" if value is None else value


def set_status(run_dir: Path, state: str, **details: Any) -> None:
    write_json(Path(run_dir) / "status.json", {"state": state, **details})


def read_status(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {"state": "unknown"}
