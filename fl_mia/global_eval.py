"""Utility of a global model on every hospital's test split, per hospital and overall.

This is the experiment's measuring instrument, not part of the threat model: the testbed
knows every hospital's test split and scores each round's global model on all of them.
"""

from __future__ import annotations

import numpy as np
import torch

from fl_mia.config import DataConfig, FederationConfig, ModelConfig, TrainingConfig
from fl_mia.data import build_hospital, input_channels, num_classes
from fl_mia.losses import segmentation_loss
from fl_mia.models import build_model, set_weights
from fl_mia.segmentation_metrics import confusion_counts, hard_predictions, summarize
from fl_mia.training import predict_logits


class GlobalModelEvaluator:
    """Scores weights on each hospital's test split; ``overall`` pools all test images."""

    def __init__(
        self,
        *,
        data: DataConfig,
        federation: FederationConfig,
        model: ModelConfig,
        training: TrainingConfig,
        device: torch.device | str,
        seed: int,
    ) -> None:
        self.training = training
        self.classes = num_classes(data.task)
        self.model = build_model(model, in_channels=input_channels(data), classes=self.classes, image_size=data.image_size)
        self.model.to(device)
        self.tests = [build_hospital(data, federation, k, seed=seed).test for k in range(federation.num_hospitals)]

    @torch.no_grad()
    def evaluate(self, weights: list[np.ndarray]) -> dict[str, dict[str, float]]:
        set_weights(self.model, weights)
        per_hospital: dict[str, dict[str, float]] = {}
        counts, foreground, losses = [], [], []
        for hospital, split in enumerate(self.tests):
            logits = predict_logits(self.model, split.images)
            masks = torch.from_numpy(split.masks)
            tp, fp, fn = confusion_counts(hard_predictions(logits), masks, num_classes=self.classes)
            has_fg = (masks.flatten(1) > 0).any(1).numpy()
            loss = segmentation_loss(
                logits, masks, dice_weight=self.training.dice_weight, ce_weight=self.training.ce_weight,
                reduction="none",
            ).numpy()
            per_hospital[str(hospital)] = {**summarize(tp, fp, fn, has_fg), "loss": float(loss.mean())}
            counts.append((tp, fp, fn))
            foreground.append(has_fg)
            losses.append(loss)
        tp, fp, fn = (np.concatenate([c[i] for c in counts]) for i in range(3))
        overall = {**summarize(tp, fp, fn, np.concatenate(foreground)), "loss": float(np.concatenate(losses).mean())}
        return {"overall": overall, **{f"hospital_{k}": v for k, v in per_hospital.items()}}
