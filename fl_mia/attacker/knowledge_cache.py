"""The attacker's knowledge computed once per suite: content-addressed files the cells share.

What the attacker builds from its own knowledge — shadow and reference models trained on its
population with the hospitals' recipe — does not depend on the threat or the defence a suite
cell varies. A suite (:func:`fl_mia.app.suite.run_suite`) therefore points every cell at one
folder, ``OUT/knowledge/``, through ``FL_MIA_KNOWLEDGE_CACHE``; a cell that needs a model
first looks for it there under a key that hashes exactly what the model depends on (the
recipe, the seed, and the bytes of its training images and masks), and trains it only when
it is missing. A run outside a suite sees no such folder and trains as before.

Writes are atomic (temporary file and rename), and a lock per key makes a second cell that
wants the same model while the first trains it wait and load it, instead of training it
twice: safe under ``--resume`` (a half-written file is never visible) and under cells running
at the same time (``--jobs``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

KNOWLEDGE_CACHE_ENV = "FL_MIA_KNOWLEDGE_CACHE"


def knowledge_cache_folder() -> Path | None:
    """The suite's shared knowledge folder, or None outside a suite."""
    value = os.environ.get(KNOWLEDGE_CACHE_ENV)
    return Path(value) if value else None


def content_key(recipe: str, *arrays: np.ndarray) -> str:
    """A key for something computed from ``recipe`` (a canonical string) and ``arrays``."""
    digest = hashlib.sha256(recipe.encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:24]


@contextmanager
def locked(folder: Path, key: str) -> Iterator[None]:
    """Hold ``folder/key.lock`` exclusively (other processes asking for the same key wait)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
