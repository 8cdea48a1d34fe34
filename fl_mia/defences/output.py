"""Output hardening: what a prediction attacker sees instead of the raw logits.

Hand the attack code a :class:`HardenedPredictor` in place of the model: it maps a
stack of images ``[N, C_in, H, W]`` to the per-pixel class probabilities ``[N, C, H, W]``
the attacker is allowed to see (for one output channel, C = 1 holds p(lesion)).

* ``probabilities``: sigmoid / softmax of the logits (no hardening);
* ``argmax``: the one-hot predicted mask (label-only; p(lesion) ∈ {0, 1});
* ``noisy_probabilities``: probabilities plus N(0, noise_std²), clipped to [0, 1] and,
  for several classes, renormalised to sum to 1.

The noise is drawn from a seeded generator per call, so a run is reproducible, and
fresh noise is drawn for every query (repeating a query does not return the same draw).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fl_mia.defences.config import OutputConfig
from fl_mia.training import predict_logits


def harden_probabilities(logits: torch.Tensor, cfg: OutputConfig, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Probabilities the attacker sees for ``logits`` ``[N, C, H, W]``."""
    binary = logits.shape[1] == 1
    probs = torch.sigmoid(logits) if binary else torch.softmax(logits, dim=1)
    if cfg.mode == "argmax":
        if binary:
            return (logits > 0).to(probs.dtype)
        return torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    if cfg.mode == "noisy_probabilities" and cfg.noise_std > 0:
        noise = torch.randn(probs.shape, generator=generator, dtype=probs.dtype) * cfg.noise_std
        probs = (probs + noise).clamp(0.0, 1.0)
        if not binary:
            probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
    return probs


class HardenedPredictor:
    """``predictor(images) -> probabilities`` as the defence lets an attacker see them.

    Parameters
    ----------
    model:
        The segmentation model (logits out); evaluated in eval mode, without gradients.
    cfg:
        ``defences.output`` of the experiment.
    seed:
        Seeds the noise stream of ``noisy_probabilities``.
    """

    def __init__(self, model: nn.Module, cfg: OutputConfig, *, seed: int = 0) -> None:
        self.model = model
        self.cfg = cfg
        self._generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: np.ndarray | torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
        return harden_probabilities(predict_logits(self.model, images, batch_size=batch_size), self.cfg, generator=self._generator)
