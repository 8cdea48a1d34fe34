"""Named, independent random streams derived from the experiment seed.

Each consumer asks for its own stream by name (and indices), so adding a random draw in
one place never shifts the numbers drawn anywhere else.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _tag_to_int(tag: str | int) -> int:
    if isinstance(tag, int):
        return tag
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "little")


def seed_sequence(seed: int, *tags: str | int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *(_tag_to_int(t) for t in tags)])


def rng_for(seed: int, *tags: str | int) -> np.random.Generator:
    """A numpy generator for the stream named by ``tags`` under ``seed``."""
    return np.random.default_rng(seed_sequence(seed, *tags))


def int_seed(seed: int, *tags: str | int) -> int:
    """A 63-bit integer seed for libraries that take one (torch)."""
    return int(seed_sequence(seed, *tags).generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1, 2**32]) % (2**63)


def torch_generator(seed: int, *tags: str | int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int_seed(seed, *tags))
    return generator
