"""What the attacker knows: the one object attacks, update attacks and poisoners receive.

The server-side attacker holds its own labelled population (disjoint from every hospital),
the candidate scans it asks about (with their masks, the hospital each is asked about and
patient ids), the hospitals' training recipe (the server configured it) and a way to train
shadow models. It never holds membership: the ledger stays with the referee
(:mod:`fl_mia.referee`), which joins scores with it only at the end. An import test keeps
every attacker-side module away from the referee's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import nn

from fl_mia.config import TrainingConfig
from fl_mia.data import Split


@dataclass(frozen=True)
class CandidateSet:
    """Candidate scans the attacker asks about, in one fixed order.

    ``hospital[i]`` is the hospital candidate ``i`` was drawn for (whose membership the
    attack is asked about), not whether it is a member.
    """

    images: np.ndarray  # float32 [N, 1, H, W]
    masks: np.ndarray  # int64 [N, H, W]
    hospital: np.ndarray  # int64 [N]
    patient_ids: np.ndarray  # int64 [N]
    image_ids: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.images)

    def as_split(self) -> Split:
        """The candidates as a labelled split (what a shadow model can train on)."""
        return Split(self.images, self.masks, self.patient_ids, self.image_ids)

    def of_hospital(self, hospital: int) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks of the candidates asked about ``hospital``."""
        chosen = self.hospital == hospital
        return self.images[chosen], self.masks[chosen]

    def table_rows(self) -> list[dict[str, int]]:
        return [
            {"candidate": i, "hospital": int(h), "patient": int(p), "image": int(m)}
            for i, (h, p, m) in enumerate(zip(self.hospital, self.patient_ids, self.image_ids))
        ]


class ShadowTrainer(Protocol):
    """Trains (or loads from its cache) a model on ``split`` with the hospitals' recipe.

    ``name`` identifies the shadow: the same name and data give the same, cached model, so
    several attacks share their shadows.
    """

    def train(self, name: str, split: Split) -> nn.Module: ...


@dataclass
class AttackerKnowledge:
    """Everything the attacker owns besides the target: its data, the candidates, the recipe."""

    population: Split  # the attacker's own labelled scans, disjoint from every hospital
    candidates: CandidateSet
    training: TrainingConfig  # the hospitals' recipe, known to the server (it configured the training)
    shadows: ShadowTrainer
    seed: int

    @property
    def dice_weight(self) -> float:
        return self.training.dice_weight

    @property
    def ce_weight(self) -> float:
        return self.training.ce_weight
