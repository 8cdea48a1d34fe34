"""Output hardening: what a prediction attacker sees instead of the raw logits.

:func:`harden_probabilities` maps a model's logits ``[N, C, H, W]`` to the per-pixel class
probabilities the attacker is allowed to see (for one output channel, C = 1 holds p(lesion)).

* ``probabilities``: sigmoid / softmax of the logits (no hardening);
* ``argmax``: the one-hot predicted mask (label-only; p(lesion) ∈ {0, 1});
* ``noisy_probabilities``: probabilities plus N(0, noise_std²), clipped to [0, 1] and,
  for several classes, renormalised to sum to 1 (uniform where every class clipped to 0).

The noise is drawn from a seeded generator per call, so a run is reproducible, and
fresh noise is drawn for every query (repeating a query does not return the same draw).

Prediction attacks read a :class:`~fl_mia.attacker.predictions.TargetView`; :func:`target_view` gives them
a :class:`HardenedTargetView` when hardening is on, whose ``logits`` are the logits *of the
released probabilities* (so every attack's signal — loss, probability map, LiRA's confidence —
is computed from what the defence releases) and whose ``hard_labels`` are the argmax of the
released probabilities (with ``argmax`` hardening exactly the model's own masks, so label-only
attacks lose nothing by construction). Shadow models are the attacker's own and stay unhardened:
this is a non-adaptive attacker that calibrates on full outputs and is then served hardened ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fl_mia.target_view import TargetView
from fl_mia.config import OutputConfig
from fl_mia.seeding import torch_generator
from fl_mia.segmentation_metrics import hard_predictions

# Released probabilities are clamped to [floor, 1 − floor] before they become logits again, so
# an argmax release (p ∈ {0, 1}) maps to finite logits ±log((1 − floor) / floor) ≈ ±13.8.
RELEASED_PROBABILITY_FLOOR = 1e-6


def harden_probabilities(logits: torch.Tensor, output: OutputConfig, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Probabilities the attacker sees for ``logits`` ``[N, C, H, W]``."""
    binary = logits.shape[1] == 1
    probs = torch.sigmoid(logits) if binary else torch.softmax(logits, dim=1)
    if output.mode == "argmax":
        if binary:
            return (logits > 0).to(probs.dtype)
        return torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    if output.mode == "noisy_probabilities" and output.noise_std > 0:
        noise = torch.randn(probs.shape, generator=generator, dtype=probs.dtype) * output.noise_std
        probs = (probs + noise).clamp(0.0, 1.0)
        if not binary:
            # A pixel whose noisy probabilities all clip to 0 releases the uniform distribution.
            total = probs.sum(1, keepdim=True)
            probs = torch.where(total > 0, probs / total.clamp_min(1e-12), torch.full_like(probs, 1.0 / probs.shape[1]))
    return probs


def released_logits(probs: torch.Tensor, *, floor: float = RELEASED_PROBABILITY_FLOOR) -> torch.Tensor:
    """Logits whose sigmoid (one channel) or softmax (several) gives back ``probs`` ``[N, C, H, W]``.

    Probabilities are clamped to [floor, 1 − floor] first; for several classes log p is a
    valid logit vector because softmax(log p) = p / Σp (= p up to the clamp).
    """
    p = probs.clamp(floor, 1.0 - floor)
    if probs.shape[1] == 1:
        return torch.log(p) - torch.log1p(-p)
    return torch.log(p)


@dataclass
class HardenedTargetView(TargetView):
    """A :class:`~fl_mia.attacker.predictions.TargetView` that answers with hardened outputs only.

    ``logits`` returns :func:`released_logits` of the released probabilities (computed once per
    image stack and shared by the attacks scoring this view, like the plain view: one release
    per candidate, so noise is not averaged away by asking every attack separately);
    ``hard_labels`` returns the argmax of a fresh release for every query.
    """

    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        round_tag = "final" if self.server_round is None else self.server_round
        self._generator = torch_generator(self.seed, "output-hardening", round_tag)

    def _release(self, images: np.ndarray) -> torch.Tensor:
        probs = harden_probabilities(self.raw_logits(images), self.output, generator=self._generator)
        return released_logits(probs)

    def logits(self, images: np.ndarray) -> torch.Tensor:
        cached = self._logits_cache.get(id(images))
        if cached is not None and cached[0] is images:
            return cached[1]
        logits = self._release(images)
        self._logits_cache[id(images)] = (images, logits)
        return logits

    def hard_labels(self, images: np.ndarray) -> torch.Tensor:
        return hard_predictions(self._release(images))


def target_view(
    model: nn.Module, server_round: int | None, output: OutputConfig, *, seed: int, shared_logits=None
) -> TargetView:
    """The view prediction attacks get: plain, or hardened when ``output.mode`` is not ``probabilities``.

    ``shared_logits``: see :class:`~fl_mia.target_view.TargetView` (the model's raw outputs
    computed once for everyone; hardening still applies on top)."""
    if output.mode == "probabilities":
        return TargetView(model, server_round, shared_logits=shared_logits)
    return HardenedTargetView(model, server_round, output=output, seed=seed, shared_logits=shared_logits)
