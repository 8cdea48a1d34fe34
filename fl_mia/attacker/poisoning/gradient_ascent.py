"""Gradient ascent on the target records (Nasr, Shokri, Houmansadr, S&P 2019, active global attacker).

Before sending, the server raises the loss of the candidate records it asks about. In the
hospital's local training the members' loss then falls sharply (they are in the data),
the non-members' much less, which widens the gap update attacks read.

Naive ascent is fragile: a fixed step raised candidate loss anywhere from 1.5× to 10²⁶×
across seeds in trials here. So the ascent is calibrated: it stops as soon as the mean
candidate loss reaches ``target_loss_ratio`` × its starting value, within ``max_steps``,
and only the chosen ``layers`` move.
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
from fl_mia.attacker.poisoning.settings import GradientAscentSettings

LAYER_PREFIXES = {"all": ("",), "decoder": ("decoder", "segmentation_head"), "head": ("segmentation_head",)}


class GradientAscentPoisoner(Poisoner):
    name = "gradient_ascent"
    matched_signals = ("update.loss_reduction", "update.loss_reduction.accumulated")

    def __init__(
        self,
        knowledge: AttackerKnowledge,
        model: nn.Module,
        *,
        targets: list[int],
        target_loss_ratio: float = 2.0,
        max_steps: int = 30,
        lr: float = 1e-3,
        layers: str = "all",
    ) -> None:
        if target_loss_ratio <= 1.0:
            raise ValueError("threat.gradient_ascent.loss_ratio must be above 1 (1 = no ascent)")
        if layers not in LAYER_PREFIXES:
            raise ValueError(f"threat.gradient_ascent.layers must be one of {', '.join(LAYER_PREFIXES)}")
        self.knowledge = knowledge
        self.model = model  # scratch: its weights are overwritten
        self.targets = set(targets)
        self.target_loss_ratio = target_loss_ratio
        self.max_steps = max_steps
        self.lr = lr
        self.layers = layers
        self.history: list[dict] = []  # achieved loss ratio and steps, per round and hospital

    @classmethod
    def from_settings(
        cls, settings: GradientAscentSettings, knowledge: AttackerKnowledge, model: nn.Module, *, targets: list[int]
    ) -> "GradientAscentPoisoner":
        return cls(
            knowledge, model, targets=targets, target_loss_ratio=settings.loss_ratio, max_steps=settings.max_steps,
            lr=settings.lr, layers=settings.layers,
        )

    def describe(self) -> str:
        return (
            f"before sending, ascends the {self.layers} layers on the candidate records of hospitals "
            f"{sorted(self.targets)} until their mean loss is {self.target_loss_ratio:g}× higher "
            f"(Adam, lr {self.lr:g}, at most {self.max_steps} steps)"
        )

    def report(self) -> dict:
        ratios = [entry["loss_ratio"] for entry in self.history]
        return {
            "ascent_history": self.history,
            "loss_ratio_reached_mean": float(np.mean(ratios)) if ratios else None,
        }

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))

    def poison(self, *, server_round: int, hospital: int, global_weights: list[np.ndarray]) -> list[np.ndarray] | None:
        if hospital not in self.targets:
            return None
        images, masks = self.knowledge.candidates.of_hospital(hospital)
        if len(images) == 0:
            return None
        model, training = self.model, self.knowledge.training
        set_weights(model, global_weights)
        model.eval()  # normalisation statistics stay those of the global model
        prefixes = LAYER_PREFIXES[self.layers]
        params = [p for name, p in model.named_parameters() if name.startswith(prefixes)]
        optimizer = torch.optim.Adam(params, lr=self.lr, maximize=True)
        device = model_device(model)
        images_t, masks_t = torch.as_tensor(images).to(device), torch.as_tensor(masks).to(device)

        def mean_loss() -> torch.Tensor:
            return segmentation_loss(
                model(images_t), masks_t, dice_weight=training.dice_weight, ce_weight=training.ce_weight
            )

        with torch.no_grad():
            start = float(mean_loss())
        reached, steps = start, 0
        while steps < self.max_steps and reached < self.target_loss_ratio * start:
            optimizer.zero_grad(set_to_none=True)
            loss = mean_loss()
            loss.backward()
            optimizer.step()
            steps += 1
            with torch.no_grad():
                reached = float(mean_loss())
        model.zero_grad(set_to_none=True)
        self.history.append(
            {"round": server_round, "hospital": hospital, "loss_ratio": reached / start, "steps": steps}
        )
        return get_weights(model)
