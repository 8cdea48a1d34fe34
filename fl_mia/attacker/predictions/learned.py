"""Learned attacks on output maps (Chobola et al. Type-I / Type-II) and on the structured
per-pixel loss map (He et al., "Segmentations-Leak", ECCV 2020).

Both train a small CNN on the reference shadow model's outputs for its own members and
non-members, then apply it to the target's outputs for the candidates (the shadow stands in
for the target, so the classifier learns what "trained on" looks like).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fl_mia.attacker.predictions.base import AttackerKnowledge, MembershipAttack, TargetView
from fl_mia.attacker.predictions.classifier import classifier_logits, train_membership_cnn
from fl_mia.attacker.predictions.shadow_data import reference_shadow
from fl_mia.attacker.predictions.output_signals import log_true_class_probability, mask_channels, probability_maps
from fl_mia.data import Split
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.seeding import rng_for
from fl_mia.training import predict_logits

if TYPE_CHECKING:
    from fl_mia.attacker.predictions.settings import LearnedSettings, LossMapSettings

# A confident pixel's loss can be ~1e-9; the log keeps those differences visible, the
# clamp keeps one wrong pixel (loss ~20) from dominating the input's scale.
_MIN_PIXEL_LOSS, _MAX_PIXEL_LOSS = 1e-6, 20.0


class OutputMapAttack(MembershipAttack):
    """CNN on the target's probability map (Type-I), or the map ⊕ ground-truth mask (Type-II).

    Score = the classifier's logit; higher = more likely a member. ``decision_threshold_``
    is 0 (the classifier's own 50% point).
    """

    uses_shadows = True

    @classmethod
    def without_mask(cls, settings: "LearnedSettings", *, seed: int, **_unused: object) -> "OutputMapAttack":
        return cls(include_mask=False, epochs=settings.epochs, lr=settings.lr, seed=seed)

    @classmethod
    def with_mask(cls, settings: "LearnedSettings", *, seed: int, **_unused: object) -> "OutputMapAttack":
        return cls(include_mask=True, epochs=settings.epochs, lr=settings.lr, seed=seed)

    def __init__(self, *, include_mask: bool, epochs: int = 30, lr: float = 1e-3, batch_size: int = 16, seed: int = 0):
        self.include_mask = include_mask
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.name = "learned_type2" if include_mask else "learned_type1"

    def _features(self, logits: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
        maps = probability_maps(logits)
        if self.include_mask:
            maps = torch.cat([maps, mask_channels(masks, logits.shape[1])], dim=1)
        return maps

    def fit(self, knowledge: AttackerKnowledge, candidates: CandidateSet) -> "OutputMapAttack":
        shadow, members, non_members = reference_shadow(knowledge)
        both = Split.concatenate([members, non_members])
        inputs = self._features(predict_logits(shadow, both.images), both.masks)
        labels = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
        self.classifier_ = train_membership_cnn(
            inputs, labels, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed, name=self.name
        )
        self.decision_threshold_ = 0.0
        return self

    def score(self, target: TargetView, candidates: CandidateSet) -> np.ndarray:
        return classifier_logits(self.classifier_, self._features(target.logits(candidates.images), candidates.masks))


def structured_loss_map(logits: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """log of the clamped per-pixel loss −log p(true class), one channel ``[N, 1, H, W]``."""
    loss = (-log_true_class_probability(logits, masks)).clamp(_MIN_PIXEL_LOSS, _MAX_PIXEL_LOSS)
    return loss.log()[:, None]


def grid_patch_corners(size: int, patch: int) -> list[int]:
    """Top-left offsets of patches at half-patch stride covering ``[0, size)`` (last one flush)."""
    if patch >= size:
        return [0]
    corners = list(range(0, size - patch + 1, max(1, patch // 2)))
    if corners[-1] != size - patch:
        corners.append(size - patch)
    return corners


class LossMapAttack(MembershipAttack):
    """Segmentations-Leak: a CNN classifies patches of the structured loss map.

    Trained on random patches of the reference shadow's loss maps for its members and
    non-members; an image's score is the mean patch logit over a half-overlapping grid of
    patches. Higher = more likely a member.
    """

    name = "loss_map"
    uses_shadows = True

    @classmethod
    def from_settings(cls, settings: "LossMapSettings", *, seed: int, **_unused: object) -> "LossMapAttack":
        return cls(patch=settings.patch, epochs=settings.epochs, lr=settings.lr, seed=seed)

    def __init__(
        self, *, patch: int = 16, patches_per_image: int = 8, epochs: int = 30, lr: float = 1e-3,
        batch_size: int = 32, seed: int = 0,
    ) -> None:
        self.patch = patch
        self.patches_per_image = patches_per_image
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed

    def _patch_side(self, maps: torch.Tensor) -> int:
        return min(self.patch, maps.shape[-2], maps.shape[-1])

    def fit(self, knowledge: AttackerKnowledge, candidates: CandidateSet) -> "LossMapAttack":
        shadow, members, non_members = reference_shadow(knowledge)
        both = Split.concatenate([members, non_members])
        maps = structured_loss_map(predict_logits(shadow, both.images), both.masks)
        side = self._patch_side(maps)
        rng = rng_for(self.seed, "loss-map-patches")
        rows = rng.integers(0, maps.shape[-2] - side + 1, size=(len(maps), self.patches_per_image))
        cols = rng.integers(0, maps.shape[-1] - side + 1, size=(len(maps), self.patches_per_image))
        patches = torch.stack(
            [maps[i, :, r : r + side, c : c + side] for i in range(len(maps)) for r, c in zip(rows[i], cols[i])]
        )
        labels = np.repeat(np.r_[np.ones(len(members)), np.zeros(len(non_members))], self.patches_per_image)
        self.classifier_ = train_membership_cnn(
            patches, labels, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed, name=self.name
        )
        self.patch_side_ = side
        self.decision_threshold_ = 0.0
        return self

    def score(self, target: TargetView, candidates: CandidateSet) -> np.ndarray:
        maps = structured_loss_map(target.logits(candidates.images), candidates.masks)
        side = self.patch_side_
        corners = [(r, c) for r in grid_patch_corners(maps.shape[-2], side) for c in grid_patch_corners(maps.shape[-1], side)]
        patch_scores = np.stack(
            [classifier_logits(self.classifier_, maps[:, :, r : r + side, c : c + side]) for r, c in corners], axis=1
        )
        return patch_scores.mean(axis=1)
