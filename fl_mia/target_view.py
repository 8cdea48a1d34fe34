"""What the server holds of a model under attack: a model it can query, at a round.

Neutral ground between the attacker (who scores it) and the output-hardening defence (which
wraps it): neither package imports the other for it.
"""

from __future__ import annotations

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
    this view.
    """

    model: nn.Module
    server_round: int | None = None
    _logits_cache: dict[int, tuple[np.ndarray, torch.Tensor]] = field(default_factory=dict, repr=False)

    def logits(self, images: np.ndarray) -> torch.Tensor:
        """Eval-mode logits ``[N, C, H, W]``."""
        cached = self._logits_cache.get(id(images))
        if cached is not None and cached[0] is images:
            return cached[1]
        logits = predict_logits(self.model, images)
        self._logits_cache[id(images)] = (images, logits)  # holding the array keeps its id unique
        return logits

    def hard_labels(self, images: np.ndarray) -> torch.Tensor:
        """Only the argmax mask ``[N, H, W]`` (what a label-only attacker sees)."""
        return hard_predictions(predict_logits(self.model, images))
