"""Label-only attack: the attacker sees nothing but the target's argmax masks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fl_mia.attacker.predictions.base import AttackerKnowledge, MembershipAttack, TargetView
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.segmentation_metrics import confusion_counts, dice_iou_per_image
from fl_mia.seeding import torch_generator

if TYPE_CHECKING:
    from fl_mia.attacker.predictions.settings import LabelOnlySettings


def mask_agreement(predicted: torch.Tensor, masks: np.ndarray, *, classes: int) -> np.ndarray:
    """Mean of per-image Dice and pixel accuracy between predicted and true masks, ``[N]``.

    Dice alone ignores background errors and ties at 1 on every correctly empty slice;
    pixel accuracy breaks those ties with the boundary's quality.
    """
    truth = torch.as_tensor(masks).long()
    tp, fp, fn = confusion_counts(predicted, truth, num_classes=classes)
    dice, _ = dice_iou_per_image(tp, fp, fn)
    accuracy = (predicted == truth).flatten(1).float().mean(1).numpy()
    return 0.5 * (np.asarray(dice, dtype=np.float64) + accuracy.astype(np.float64))


class LabelOnlyAttack(MembershipAttack):
    """Agreement of the target's argmax mask with the ground truth, clean and under noise.

    Score = mean agreement over the clean query and ``queries`` copies with Gaussian noise
    of std ``noise`` (members sit further from the decision boundary, so their masks are
    both better and steadier). Higher = more likely a member. No threshold, no shadows.
    """

    name = "label_only"

    @classmethod
    def from_settings(cls, settings: "LabelOnlySettings", *, seed: int, classes: int, **_unused: object) -> "LabelOnlyAttack":
        return cls(queries=settings.queries, noise=settings.noise, classes=classes, seed=seed)

    def __init__(self, *, queries: int = 8, noise: float = 0.1, classes: int = 1, seed: int = 0) -> None:
        self.queries = queries
        self.noise = noise
        self.classes = classes
        self.seed = seed

    def fit(self, knowledge: AttackerKnowledge, candidates: CandidateSet) -> "LabelOnlyAttack":
        return self  # nothing to learn: the score is a fixed function of the returned masks

    def score(self, target: TargetView, candidates: CandidateSet) -> np.ndarray:
        generator = torch_generator(self.seed, "label-only-noise")
        images = torch.from_numpy(candidates.images)
        total = mask_agreement(target.hard_labels(candidates.images), candidates.masks, classes=self.classes)
        for _ in range(self.queries):
            noisy = images + self.noise * torch.randn(images.shape, generator=generator)
            total = total + mask_agreement(target.hard_labels(noisy.numpy()), candidates.masks, classes=self.classes)
        return total / (1 + self.queries)
