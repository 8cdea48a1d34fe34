"""Checkpoint after every round, so that a killed run can be resumed and end identically.

One file, ``checkpoint.npz`` in the run folder, replaced atomically after each round's
evaluation: the global weights plus the state of every registered component. What a
component is: anything the rest of the run depends on that is not a function of the
config and the round number alone — the round log, the client sampler's draw counter,
and (registered by the branches that add them) DP accountants and attack accumulators.
Everything else (data, hospital shuffling, failures) is re-derived from the seed and the
absolute round, so it needs no saving.

A component implements ``state_dict() -> dict`` and ``load_state_dict(dict)``; values are
JSON types, or NumPy arrays at the top level of the dict (stored as arrays, exactly).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fl_mia.run_folder import RunFolderError, atomic_write_bytes

CHECKPOINT_FILE = "checkpoint.npz"
_FORMAT = 1


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# What a missing, truncated or foreign checkpoint.npz raises on reading.
UNREADABLE = (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError)


class CheckpointError(RunFolderError):
    """A checkpoint is missing, unreadable or belongs to another experiment (one line)."""


def config_fingerprint(resolved: dict[str, Any]) -> str:
    """Hash of the resolved config (``ExperimentConfig.to_toml_dict()``): a checkpoint only resumes the experiment that wrote it."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()


@dataclass
class Checkpoint:
    round: int
    weights: list[np.ndarray] = field(repr=False)
    states: dict[str, dict[str, Any]] = field(repr=False)
    config_fingerprint: str
    wall_time_s: float


class Checkpointer:
    """Writes ``checkpoint.npz`` after every round and restores registered components."""

    def __init__(self, run_dir: Path, fingerprint: str, *, wall_time_before_s: float = 0.0) -> None:
        """``fingerprint``: :func:`config_fingerprint` of the experiment's resolved config."""
        self.path = Path(run_dir) / CHECKPOINT_FILE
        self.fingerprint = fingerprint
        self.wall_time_before_s = wall_time_before_s
        self._components: dict[str, Stateful] = {}

    def register(self, name: str, component: Stateful) -> None:
        if name in self._components:
            raise ValueError(f"checkpoint component {name!r} registered twice")
        self._components[name] = component

    def save(self, *, server_round: int, weights: list[np.ndarray], wall_time_s: float) -> None:
        arrays: dict[str, np.ndarray] = {f"weights/{i:05d}": np.asarray(w) for i, w in enumerate(weights)}
        states: dict[str, dict[str, Any]] = {}
        for name, component in self._components.items():
            state = component.state_dict()
            states[name] = {key: value for key, value in state.items() if not isinstance(value, np.ndarray)}
            for key, value in state.items():
                if isinstance(value, np.ndarray):
                    arrays[f"arrays/{name}/{key}"] = value
        meta = {
            "format": _FORMAT,
            "round": server_round,
            "num_weights": len(weights),
            "config_fingerprint": self.fingerprint,
            "wall_time_s": self.wall_time_before_s + wall_time_s,
            "states": states,
        }
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta, allow_nan=True)), **arrays)
        atomic_write_bytes(self.path, buffer.getvalue())

    def restore(self, checkpoint: Checkpoint) -> int:
        """Load every registered component's state; return the round the checkpoint ends."""
        missing = sorted(set(self._components) - set(checkpoint.states))
        if missing:
            raise CheckpointError(
                f"{self.path}: holds no state for {', '.join(missing)} (written by another version of fl-mia?); "
                "start the experiment again"
            )
        for name, component in self._components.items():
            component.load_state_dict(checkpoint.states[name])
        return checkpoint.round


def read_checkpoint(run_dir: Path, fingerprint: str) -> Checkpoint:
    """Load and check ``checkpoint.npz``; every problem is one line naming the file."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no checkpoint (the run stopped before its first evaluation); start it again with fl-mia run CONFIG"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            weights = [archive[f"weights/{i:05d}"] for i in range(int(meta["num_weights"]))]
            arrays = {name: archive[name] for name in archive.files if name.startswith("arrays/")}
    except UNREADABLE as error:
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(error).__name__}); it cannot be resumed, start the experiment again"
        ) from None
    if meta.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')} is not {_FORMAT}; start the experiment again")
    if meta["config_fingerprint"] != fingerprint:
        raise CheckpointError(
            f"{path}: written by a different experiment config than {Path(run_dir) / 'config.toml'}; "
            "resume with the config the run started with"
        )
    states = meta["states"]
    for name, array in arrays.items():
        _, component, key = name.split("/", 2)
        states.setdefault(component, {})[key] = array
    return Checkpoint(
        round=int(meta["round"]),
        weights=weights,
        states=states,
        config_fingerprint=meta["config_fingerprint"],
        wall_time_s=float(meta["wall_time_s"]),
    )


def checkpoint_round(run_dir: Path) -> int | None:
    """The last round ``checkpoint.npz`` holds (``None``: no readable checkpoint), without checking the config."""
    try:
        with np.load(Path(run_dir) / CHECKPOINT_FILE, allow_pickle=False) as archive:
            return int(json.loads(str(archive["meta"]))["round"])
    except UNREADABLE:
        return None
