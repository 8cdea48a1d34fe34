"""How attacks carve shadow training sets out of the attacker's data.

Shadow models are named after their data, so attacks that ask for the same shadow (the
loss threshold, the learned attacks and the loss-map attack all use the reference shadow)
get one cached model.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from fl_mia.attacker.predictions.base import AttackerKnowledge
from fl_mia.data import Split
from fl_mia.seeding import rng_for

REFERENCE_SHADOW = "reference"


def split_by_patient_halves(split: Split, *, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of two halves of ``split`` with no patient in both."""
    patients = rng_for(seed, "shadow-halves", name).permutation(np.unique(split.patient_ids))
    first = np.isin(split.patient_ids, patients[: len(patients) // 2])
    return first, ~first


def reference_shadow(knowledge: AttackerKnowledge) -> tuple[nn.Module, Split, Split]:
    """One shadow trained on half of the population: (model, its members, its non-members)."""
    population = knowledge.population
    if len(np.unique(population.patient_ids)) < 2:
        raise ValueError("the attacker's population needs at least 2 patients for a shadow model and its non-members")
    inside, outside = split_by_patient_halves(population, seed=knowledge.seed, name=REFERENCE_SHADOW)
    members, non_members = population.subset(np.flatnonzero(inside)), population.subset(np.flatnonzero(outside))
    return knowledge.shadows.train(REFERENCE_SHADOW, members), members, non_members


def balanced_inclusion(count: int, *, num_shadows: int, seed: int, name: str) -> np.ndarray:
    """``[num_shadows, count]`` booleans: each item is IN exactly half of the shadows (⌊K/2⌋).

    Balancing per item (rather than coin flips) guarantees every candidate IN and OUT
    observations even when K is small.
    """
    rng = rng_for(seed, "shadow-inclusion", name)
    inclusion = np.zeros((num_shadows, count), dtype=bool)
    for item in range(count):
        inclusion[rng.permutation(num_shadows)[: num_shadows // 2], item] = True
    return inclusion
