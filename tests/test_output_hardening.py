"""Output hardening: what a prediction attacker sees instead of the logits."""

import pytest
import torch

from fl_mia.defences.config import OutputConfig
from fl_mia.defences.output import HardenedPredictor, harden_probabilities


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
    predictor = HardenedPredictor(FixedLogits(logits), OutputConfig(mode="noisy_probabilities", noise_std=0.1), seed=0)
    first, second = predictor(torch.zeros((64, 1, 16, 16))), predictor(torch.zeros((64, 1, 16, 16)))
    assert (first - 0.5).std().item() == pytest.approx(0.1, rel=0.03)
    assert not torch.equal(first, second)
    again = HardenedPredictor(FixedLogits(logits), OutputConfig(mode="noisy_probabilities", noise_std=0.1), seed=0)
    assert torch.equal(again(torch.zeros((64, 1, 16, 16))), first)  # seeded: runs reproduce
    multi = harden_probabilities(MULTI.repeat(10, 1, 4, 4), OutputConfig(mode="noisy_probabilities", noise_std=0.3))
    assert multi.min() >= 0 and torch.allclose(multi.sum(1), torch.ones(1))
