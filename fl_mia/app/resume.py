"""Which run folders ``fl-mia run --resume RUN_DIR`` may continue, checked before Ray starts."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from fl_mia.checkpoint import Checkpoint, config_fingerprint, read_checkpoint
from fl_mia.config import ConfigError, ExperimentConfig
from fl_mia.config.loading import load_config
from fl_mia.run_folder import RunFolderError, read_status


def _first_difference(saved: Any, given: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(saved, dict) and isinstance(given, dict):
        for key in sorted(set(saved) | set(given)):
            found = _first_difference(saved.get(key), given.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if saved == given else (prefix.rstrip("."), saved, given)


def still_running(status: dict[str, Any]) -> bool:
    """A run whose status says running and whose process is alive on this host."""
    pid, host = status.get("pid"), status.get("host")
    if status.get("state") != "running" or not isinstance(pid, int) or host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resumable_run(run_dir: Path, given: ExperimentConfig | None = None) -> tuple[ExperimentConfig, Checkpoint]:
    """The config and checkpoint of an interrupted run; one-line errors naming what is wrong.

    ``given`` (a CONFIG argument with ``--set``) must equal the run's own config: a run
    continues the experiment it started, never another.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / "config.toml").is_file():
        raise RunFolderError(f"--resume {run_dir}: not a run folder (no config.toml); give a folder under runs/")
    try:
        status = read_status(run_dir)
    except (json.JSONDecodeError, UnicodeDecodeError):
        status = {"state": "unknown"}  # status.json is rewritten on resume; the checkpoint decides
    if status.get("state") == "complete":
        raise RunFolderError(f"--resume {run_dir}: the run is already complete; see it with fl-mia show {run_dir}")
    if still_running(status):
        raise RunFolderError(f"--resume {run_dir}: still running (process {status['pid']}); wait for it or stop it first")
    try:
        saved = load_config(run_dir / "config.toml")
    except ConfigError as error:
        raise RunFolderError(f"--resume {run_dir}: its config.toml is damaged ({error})") from None
    if given is not None:
        difference = _first_difference(saved.to_toml_dict(), given.to_toml_dict())
        if difference is not None:
            key, was, now = difference
            raise RunFolderError(
                f"--resume {run_dir}: the run was started with {key}={was!r}, not {now!r}; "
                "a run resumes only its own config (leave out CONFIG and --set)"
            )
    return saved, read_checkpoint(run_dir, config_fingerprint(saved.to_toml_dict()))
