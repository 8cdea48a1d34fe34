"""Output hardening: what a prediction attacker sees instead of the logits."""

import pytest
import torch

from fl_mia.config import OutputConfig
from fl_mia.defences.output import harden_probabilities


class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, images):
        return self.logits[: len(images)]


BINARY = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])  # [1, 1, 2, 2]
MULTI = torch.tensor([[[[1.0]], [[3.0]], [[2.0]]]])  # [1, 3, 1, 1]: class 1 wins


def test_plain_probabilities_are_sigmoid_or_softmax():
    assert torch.allclose(harden_probabilities(BINARY, OutputConfig()), torch.sigmoid(BINARY))
    assert torch.allclose(harden_probabilities(MULTI, OutputConfig()), torch.softmax(MULTI, 1))


def test_argmax_leaves_only_the_predicted_mask():
    cfg = OutputConfig(mode="argmax")
    assert harden_probabilities(BINARY, cfg).flatten().tolist() == [1.0, 0.0, 1.0, 0.0]
    assert harden_probabilities(MULTI, cfg).flatten().tolist() == [0.0, 1.0, 0.0]


def test_noise_has_the_configured_spread_stays_in_range_and_is_fresh_per_query():
    logits = torch.zeros((64, 1, 16, 16))  # p = 0.5 everywhere: clipping to [0, 1] never bites at std 0.1
    noisy = OutputConfig(mode="noisy_probabilities", noise_std=0.1)
    generator = torch.Generator().manual_seed(0)
    first, second = harden_probabilities(logits, noisy, generator=generator), harden_probabilities(logits, noisy, generator=generator)
    assert (first - 0.5).std().item() == pytest.approx(0.1, rel=0.03)
    assert not torch.equal(first, second)
    again = harden_probabilities(logits, noisy, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, first)  # seeded: runs reproduce
    multi = harden_probabilities(MULTI.repeat(10, 1, 4, 4), OutputConfig(mode="noisy_probabilities", noise_std=0.3))
    assert multi.min() >= 0 and torch.allclose(multi.sum(1), torch.ones(1))


# --- hardened outputs reach the prediction attacks --------------------------------------------

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from fl_mia.attacker.predictions.base import MembershipAttack, TargetView  # noqa: E402
from fl_mia.attacker.predictions.settings import PREDICTION_ATTACKS  # noqa: E402
from fl_mia.attacker.predictions.label_only import LabelOnlyAttack  # noqa: E402
from fl_mia.attacker.predictions.output_signals import per_image_loss  # noqa: E402
from fl_mia.config.loading import build_config  # noqa: E402
from fl_mia.defences.output import (  # noqa: E402
    RELEASED_PROBABILITY_FLOOR,
    HardenedTargetView,
    released_logits,
    target_view,
)
from fl_mia.models import get_weights  # noqa: E402
from fl_mia.attacker.knowledge import CandidateSet  # noqa: E402
from tests.privacy_step import PrivacyStep  # noqa: E402
from tests.conftest import tiny_raw  # noqa: E402

ARGMAX = OutputConfig(mode="argmax")


def test_released_logits_give_back_the_released_probabilities():
    binary = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0]).view(1, 1, 1, 5)
    back = torch.sigmoid(released_logits(binary))
    assert torch.allclose(back, binary.clamp(RELEASED_PROBABILITY_FLOOR, 1 - RELEASED_PROBABILITY_FLOOR), atol=1e-7)
    multi = torch.tensor([0.7, 0.2, 0.1]).view(1, 3, 1, 1)
    assert torch.allclose(torch.softmax(released_logits(multi), 1), multi, atol=1e-6)


def test_plain_outputs_keep_the_plain_view():
    model = FixedLogits(BINARY)
    assert type(target_view(model, 3, OutputConfig(), seed=0)) is TargetView
    assert isinstance(target_view(model, 3, ARGMAX, seed=0), HardenedTargetView)


def test_argmax_view_releases_the_one_hot_mask_and_the_same_hard_labels():
    for logits in (BINARY, MULTI):
        images = np.zeros((1, 1, 2, 2), np.float32)
        hardened = HardenedTargetView(FixedLogits(logits), output=ARGMAX)
        probs = torch.sigmoid(hardened.logits(images)) if logits.shape[1] == 1 else torch.softmax(hardened.logits(images), 1)
        assert torch.allclose(probs, harden_probabilities(logits, ARGMAX), atol=1e-5)
        assert torch.equal(hardened.hard_labels(images), TargetView(FixedLogits(logits)).hard_labels(images))


def _candidates(masks: np.ndarray) -> CandidateSet:
    n = len(masks)
    ids = np.arange(n, dtype=np.int64)
    return CandidateSet(np.zeros((n, 1, *masks.shape[1:]), np.float32), masks, np.zeros(n, np.int64), ids, ids)


class PerImageLogits(torch.nn.Module):
    """Returns fixed logits per image, whatever the (noisy) input: enough for a label-only query."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.calls = 0

    def forward(self, images):
        start = self.calls % len(self.logits)
        self.calls += len(images)
        return self.logits[start : start + len(images)]


def _confidence_only_leak():
    """8 members predicted with confidence |z| = 8, 8 non-members with |z| = 0.5; every mask right.

    Every candidate has the same mask, so once the confidence is gone all scores tie exactly.
    """
    rng = np.random.default_rng(0)
    masks = np.repeat((rng.random((1, 8, 8)) > 0.5).astype(np.int64), 16, axis=0)
    sign = torch.from_numpy(2.0 * masks - 1.0).float()[:, None]
    confidence = torch.tensor([8.0] * 8 + [0.5] * 8).view(16, 1, 1, 1)
    is_member = np.r_[np.ones(8, bool), np.zeros(8, bool)]
    return PerImageLogits(sign * confidence), _candidates(masks), is_member


def test_argmax_removes_a_leak_that_lives_only_in_the_confidence():
    model, candidates, is_member = _confidence_only_leak()

    def loss_auc(view):
        scores = -per_image_loss(view.logits(candidates.images), candidates.masks, dice_weight=1.0, ce_weight=1.0)
        return roc_auc_score(is_member, scores)

    assert loss_auc(TargetView(model)) == 1.0
    assert loss_auc(HardenedTargetView(model, output=ARGMAX)) == 0.5  # every candidate gets the same score


def test_argmax_leaves_label_only_scores_unchanged():
    model, candidates, _ = _confidence_only_leak()
    attack = LabelOnlyAttack(queries=3, noise=0.1, classes=1, seed=0)
    model.calls = 0
    plain = attack.score(TargetView(model), candidates)
    model.calls = 0
    hardened = attack.score(HardenedTargetView(model, output=ARGMAX), candidates)
    assert np.array_equal(plain, hardened)


def test_noisy_view_shares_one_release_per_stack_and_draws_fresh_labels():
    images = np.zeros((64, 1, 8, 8), np.float32)
    model = FixedLogits(torch.zeros((64, 1, 8, 8)))  # p = 0.5: noise alone decides the label
    view = HardenedTargetView(model, 2, output=OutputConfig(mode="noisy_probabilities", noise_std=0.1), seed=0)
    assert view.logits(images) is view.logits(images)  # attacks scoring this view see the same release
    assert not torch.equal(view.hard_labels(images), view.hard_labels(images))
    again = HardenedTargetView(model, 2, output=OutputConfig(mode="noisy_probabilities", noise_std=0.1), seed=0)
    assert torch.equal(again.logits(images), view.logits(images))  # seeded by (seed, round)


class ViewSpy(MembershipAttack):
    name = "view_spy"
    views: list = []

    def fit(self, knowledge, candidates):
        return self

    def score(self, target, candidates):
        ViewSpy.views.append(target)
        return np.zeros(len(candidates))


@pytest.fixture
def view_spy():
    # A test double registered like any plug-in, before the config that names it is loaded.
    PREDICTION_ATTACKS.register("view_spy", summary="records the views it scores", factory=lambda settings, **_: ViewSpy())
    yield "view_spy"
    PREDICTION_ATTACKS.unregister("view_spy")


@pytest.mark.parametrize("mode", ["probabilities", "argmax", "noisy_probabilities"])
def test_privacy_step_scores_every_attack_on_the_view_the_defence_allows(mode, view_spy):
    cfg = build_config(
        tiny_raw(attacker={"prediction_attacks": [view_spy], "per_round_attacks": [view_spy]},
                 defences={"output": {"mode": mode}})
    )
    step = PrivacyStep(cfg, None)
    ViewSpy.views = []
    weights = get_weights(step.model)
    step.observe_round(1, weights)
    step.finish(weights)
    hardened = mode != "probabilities"
    assert len(ViewSpy.views) == 2
    assert all(isinstance(v, HardenedTargetView) == hardened for v in ViewSpy.views)
    assert all(v.output.mode == mode for v in ViewSpy.views if hardened)
