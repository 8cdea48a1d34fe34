"""Every attack on tiny synthetic segmentation tasks, without Ray and without smp.

The target is a small MLP "segmenter" on 16×16 images whose masks are only partly
predictable from the image (a hidden random field decides the rest), so a model that trained
on an image has memorised its mask and one that did not has to guess. Two settings:

- separable: candidates are the target's training images and as many unseen ones;
- control: the "members" are in fact unseen too, so every attack must score AUC 0.5 ± 0.05
  (600 candidates: the AUC's standard error under the null is ≈ 0.017, so ±0.05 is 3 SE).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score
from torch import nn

from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.predictions.base import TargetView, make_attack
from fl_mia.attacker.predictions.settings import PREDICTION_ATTACKS
from fl_mia.config import TrainingConfig
from fl_mia.config.loading import build_config
from fl_mia.data import Split
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.seeding import int_seed, rng_for
from fl_mia.training import train_local
from tests.conftest import tiny_raw

SIDE = 16
RECIPE = TrainingConfig(local_epochs=30, batch_size=16, lr=3e-3)
ATTACK_SETTINGS = {
    "shadows": {"models": 4},
    "learned_type1": {"epochs": 20},
    "learned_type2": {"epochs": 20},
    "loss_map": {"epochs": 20, "patch": 8},
    "label_only": {"queries": 4},
}


def synthetic_split(count: int, *, seed: int, first_id: int) -> Split:
    """Images of smooth noise; mask = image + hidden smooth field > 0 (half unpredictable)."""
    rng = rng_for(seed, "synthetic", first_id)
    visible = gaussian_filter(rng.standard_normal((count, SIDE, SIDE)), sigma=(0, 1.5, 1.5))
    hidden = gaussian_filter(rng.standard_normal((count, SIDE, SIDE)), sigma=(0, 1.5, 1.5))
    scale = visible.std()
    images = (visible / scale)[:, None].astype(np.float32)
    masks = ((visible + hidden) > 0).astype(np.int64)
    ids = np.arange(first_id, first_id + count, dtype=np.int64)
    return Split(images, masks, ids, ids)


class TinySegmenter(nn.Module):
    """An MLP from pixels to per-pixel logits: enough capacity to memorise a few dozen masks."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 512), nn.ReLU(), nn.Linear(512, SIDE * SIDE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).view(-1, 1, SIDE, SIDE)


def train_tiny(split: Split, *, name: str) -> nn.Module:
    torch.manual_seed(int_seed(0, "tiny-init", name))
    model = TinySegmenter()
    train_local(model, split, RECIPE, seed=0, tags=(name,))
    return model.eval()


class TinyShadows:
    """ShadowTrainer for the tests: same recipe as the target, cached by name."""

    def __init__(self) -> None:
        self.trained: dict[str, nn.Module] = {}

    def train(self, name: str, split: Split) -> nn.Module:
        key = f"{name}:{hash(split.image_ids.tobytes())}"
        if key not in self.trained:
            self.trained[key] = train_tiny(split, name=name)
        return self.trained[key]


def as_candidates(split: Split) -> CandidateSet:
    return CandidateSet(split.images, split.masks, np.zeros(len(split), np.int64), split.patient_ids, split.image_ids)


def knowledge(candidates: CandidateSet) -> AttackerKnowledge:
    return AttackerKnowledge(
        population=synthetic_split(64, seed=1, first_id=10_000), candidates=candidates, training=TrainingConfig(),
        shadows=TinyShadows(), seed=0,
    )


def attack_cfg():
    """The ``[attacker]`` section listing every registered attack."""
    return build_config(tiny_raw(attacker={"prediction_attacks": list(PREDICTION_ATTACKS.names()), **ATTACK_SETTINGS})).attacker


@pytest.fixture(scope="module")
def separable():
    members = synthetic_split(32, seed=2, first_id=0)
    unseen = synthetic_split(32, seed=2, first_id=1_000)
    target = train_tiny(members, name="target")
    candidates = as_candidates(Split.concatenate([members, unseen]))
    is_member = np.r_[np.ones(32, bool), np.zeros(32, bool)]
    return knowledge(candidates), target, candidates, is_member


@pytest.fixture(scope="module")
def control():
    trained_on = synthetic_split(32, seed=3, first_id=0)
    called_members = synthetic_split(300, seed=3, first_id=1_000)
    non_members = synthetic_split(300, seed=3, first_id=2_000)
    target = train_tiny(trained_on, name="target")
    candidates = as_candidates(Split.concatenate([called_members, non_members]))
    is_member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    return knowledge(candidates), target, candidates, is_member


def auc_of(name: str, setting) -> float:
    attacker, target, candidates, is_member = setting
    attack = make_attack(name, attack_cfg(), seed=0, classes=1).fit(attacker, candidates)
    scores = attack.score(TargetView(target), candidates)
    assert scores.shape == (len(candidates),) and np.all(np.isfinite(scores))
    return roc_auc_score(is_member, scores)


def test_the_target_memorised_its_members(separable):
    _, target, candidates, is_member = separable
    from fl_mia.attacker.predictions.output_signals import per_image_loss

    loss = per_image_loss(TargetView(target).logits(candidates.images), candidates.masks, dice_weight=1, ce_weight=1)
    assert loss[is_member].mean() < 0.5 * loss[~is_member].mean()


@pytest.mark.parametrize("name", PREDICTION_ATTACKS.names())
def test_attack_separates_members_of_an_overfit_model(name, separable):
    assert auc_of(name, separable) > 0.8


@pytest.mark.parametrize("name", PREDICTION_ATTACKS.names())
def test_attack_is_at_chance_when_members_are_unseen_images(name, control):
    assert abs(auc_of(name, control) - 0.5) <= 0.05


def test_loss_attack_threshold_is_minus_the_shadows_training_loss(separable):
    attacker, _, candidates, _ = separable
    attack = make_attack("loss", attack_cfg(), seed=0, classes=1).fit(attacker, candidates)
    assert attack.decision_threshold_ == pytest.approx(-attack.shadow_train_loss_)
    assert attack.shadow_train_loss_ > 0


def test_lira_every_candidate_is_in_half_of_the_shadows(separable):
    attacker, _, candidates, _ = separable
    attack = make_attack("lira_online", attack_cfg(), seed=0, classes=1).fit(attacker, candidates)
    inside = attack.inclusion_[:, : len(candidates)]
    assert (inside.sum(0) == 2).all()
    assert attack.shadow_signals_.shape == (4, len(candidates))
