"""What the server holds of a model under attack: a model it can query, at a round.

Neutral ground between the attacker (who scores it) and the output-hardening defence (which
wraps it): neither package imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fl_mia.segmentation_metrics import hard_predictions
from fl_mia.training import predict_logits


@dataclass
class TargetView:
    """The server's view of the model under attack: a model it can query, at a round.

    Outputs for the same image stack are computed once and shared by every attack scoring
    this view. ``shared_logits(images)``, when given, may answer for the model instead (the
    server's :class:`fl_mia.attacker.forwards.CandidateForwards`, which already ran this model
    over the candidates); it returns None for image stacks it does not hold.
    """

    model: nn.Module
    server_round: int | None = None
    _logits_cache: dict[int, tuple[np.ndarray, torch.Tensor]] = field(default_factory=dict, repr=False)
    shared_logits: Callable[[np.ndarray], torch.Tensor | None] | None = field(default=None, repr=False)

    def raw_logits(self, images: np.ndarray) -> torch.Tensor:
        """The model's own eval-mode logits, before any output hardening."""
        shared = self.shared_logits(images) if self.shared_logits is not None else None
        return shared if shared is not None else predict_logits(self.model, images)

    def logits(self, images: np.ndarray) -> torch.Tensor:
        """Eval-mode logits ``[N, C, H, W]``."""
        cached = self._logits_cache.get(id(images))
        if cached is not None and cached[0] is images:
            return cached[1]
        logits = self.raw_logits(images)
        self._logits_cache[id(images)] = (images, logits)  # holding the array keeps its id unique
        return logits

    def hard_labels(self, images: np.ndarray) -> torch.Tensor:
        """Only the argmax mask ``[N, H, W]`` (what a label-only attacker sees)."""
        return hard_predictions(self.raw_logits(images))
