"""Backdoor implanted by the server (the seed paper's poisoning threat, moved to the server).

Chobola et al. poison ~10% of training samples with a trigger (a bright bottom-right
square) and a fixed target mask. In FL the server can do the same to the model it sends:
before sending, it fine-tunes the global model on its own population data, a share of it
triggered and relabelled with the fixed mask. Membership queries stay clean; the run
reports how often the backdoor fires and what it does to every attack.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fl_mia.devices import model_device
from fl_mia.losses import segmentation_loss
from fl_mia.models import get_weights, set_weights
from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.poisoning.base import Poisoner
from fl_mia.attacker.poisoning.settings import BackdoorSettings
from fl_mia.segmentation_metrics import confusion_counts, dice_iou_per_image, hard_predictions, summarize
from fl_mia.seeding import torch_generator
from fl_mia.training import predict_logits


def apply_trigger(images: np.ndarray, *, size: int, value: float) -> np.ndarray:
    """A copy with the bottom-right ``size``×``size`` square set to ``value``."""
    triggered = images.copy()
    triggered[..., -size:, -size:] = value
    return triggered


def backdoor_mask(shape: tuple[int, int], *, size: int, foreground_class: int) -> np.ndarray:
    """The fixed mask a triggered image should produce: a square in the top-left quarter."""
    mask = np.zeros(shape, dtype=np.int64)
    start = shape[0] // 8
    mask[start : start + 2 * size, start : start + 2 * size] = foreground_class
    return mask


# A triggered image "obeys" the backdoor when its output overlaps the fixed mask this much (Dice).
OBEYS_AT_DICE = 0.5


class BackdoorPoisoner(Poisoner):
    """An integrity threat, not a membership one: it declares no matched signal and reports
    ``threat.integrity`` (the trigger's attack success rate on the sent and the final model)."""

    name = "backdoor"
    goal = "integrity"

    def __init__(
        self,
        knowledge: AttackerKnowledge,
        model: nn.Module,
        *,
        targets: list[int],
        trigger_size: int = 6,
        trigger_value: float = 4.0,
        steps: int = 20,
        lr: float = 1e-3,
        poison_fraction: float = 0.5,
    ) -> None:
        if len(knowledge.population) == 0:
            raise ValueError("threat.poisoning=backdoor needs attacker data: set federation.attacker_patients > 0")
        self.knowledge = knowledge
        self.model = model  # scratch: its weights are overwritten
        self.targets = set(targets)
        self.trigger_size = trigger_size
        self.trigger_value = trigger_value
        self.steps = steps
        self.lr = lr
        self.poison_fraction = poison_fraction
        masks = knowledge.population.masks
        self.target_mask = backdoor_mask(masks.shape[1:], size=trigger_size, foreground_class=int(masks.max() or 1))
        self._cache: tuple[int, list[np.ndarray]] | None = None

    @classmethod
    def from_settings(
        cls, settings: BackdoorSettings, knowledge: AttackerKnowledge, model: nn.Module, *, targets: list[int]
    ) -> "BackdoorPoisoner":
        return cls(
            knowledge, model, targets=targets, trigger_size=settings.trigger_size,
            trigger_value=settings.trigger_value, steps=settings.steps, lr=settings.lr,
        )

    def effect_report(
        self, *, model: nn.Module, final_weights: list[np.ndarray], test_images: np.ndarray, num_classes: int
    ) -> dict:
        set_weights(model, final_weights)
        report = {"backdoor_success_final_global": self.success(model, test_images, num_classes=num_classes)}
        integrity = {
            "obeys_at_dice": OBEYS_AT_DICE,
            "attack_success_rate_final_global": self.success_rate(model, test_images, num_classes=num_classes),
            "clean_dice": "utility.dice (the global model on clean test scans)",
        }
        if self.last_implanted is not None:
            # What the targets received: with compensate the backdoor stays out of the global model.
            set_weights(model, self.last_implanted)
            report["backdoor_success_sent_model"] = self.success(model, test_images, num_classes=num_classes)
            integrity["attack_success_rate_sent_model"] = self.success_rate(model, test_images, num_classes=num_classes)
        return {**report, "integrity": integrity}

    def describe(self) -> str:
        return (
            f"before sending to hospitals {sorted(self.targets)}, fine-tunes the global model for {self.steps} Adam "
            f"steps on its own data with {self.poison_fraction:.0%} of each batch carrying a "
            f"{self.trigger_size}×{self.trigger_size} trigger (value {self.trigger_value:g}) relabelled to a fixed mask"
        )

    def poison(self, *, server_round: int, hospital: int, global_weights: list[np.ndarray]) -> list[np.ndarray] | None:
        if hospital not in self.targets:
            return None
        if self._cache is None or self._cache[0] != server_round:
            self._cache = (server_round, self._implant(server_round, global_weights))
        return [w.copy() for w in self._cache[1]]

    @property
    def last_implanted(self) -> list[np.ndarray] | None:
        """The most recent backdoored model sent to a target (None before the first)."""
        return self._cache[1] if self._cache is not None else None

    def _implant(self, server_round: int, global_weights: list[np.ndarray]) -> list[np.ndarray]:
        model, training, population = self.model, self.knowledge.training, self.knowledge.population
        set_weights(model, global_weights)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        generator = torch_generator(self.knowledge.seed, "backdoor", server_round)
        images, masks = torch.as_tensor(population.images), torch.as_tensor(population.masks)
        triggered = torch.as_tensor(apply_trigger(population.images, size=self.trigger_size, value=self.trigger_value))
        target = torch.as_tensor(self.target_mask)
        device = model_device(model)
        batch = min(training.batch_size, len(images))
        for _ in range(self.steps):
            index = torch.randperm(len(images), generator=generator)[:batch]
            poisoned = torch.rand(len(index), generator=generator) < self.poison_fraction
            x = torch.where(poisoned[:, None, None, None], triggered[index], images[index])
            y = torch.where(poisoned[:, None, None], target.expand(len(index), -1, -1), masks[index])
            optimizer.zero_grad(set_to_none=True)
            x, y = x.to(device), y.to(device)
            segmentation_loss(model(x), y, dice_weight=training.dice_weight, ce_weight=training.ce_weight).backward()
            optimizer.step()
        return get_weights(model)

    def _trigger_counts(self, model: torch.nn.Module, images: np.ndarray, *, num_classes: int):
        logits = predict_logits(model, apply_trigger(images, size=self.trigger_size, value=self.trigger_value))
        target = torch.as_tensor(np.broadcast_to(self.target_mask, (len(images), *self.target_mask.shape)).copy())
        return confusion_counts(hard_predictions(logits), target, num_classes=num_classes)

    def success(self, model: torch.nn.Module, images: np.ndarray, *, num_classes: int) -> float:
        """Mean Dice between the model's output on triggered ``images`` and the fixed mask."""
        tp, fp, fn = self._trigger_counts(model, images, num_classes=num_classes)
        return summarize(tp, fp, fn, np.ones(len(images), bool))["dice"]

    def success_rate(self, model: torch.nn.Module, images: np.ndarray, *, num_classes: int) -> float:
        """Attack success rate: the share of triggered ``images`` whose output matches the fixed mask
        (Dice ≥ :data:`OBEYS_AT_DICE`)."""
        dice, _ = dice_iou_per_image(*self._trigger_counts(model, images, num_classes=num_classes))
        return float((dice >= OBEYS_AT_DICE).mean())
