"""Active per-record gradient ascent, calibrated by shadow hospitals (Nasr, Shokri, Houmansadr, S&P 2019).

In each attack round (``threat.poison_rounds``, after ordinary training rounds so that the
model is useful first) the server ascends, before sending to a target hospital, the loss of
*each* candidate it asks about that hospital: the objective is the mean of the candidates'
log-losses, so every record's relative rise counts alike and no few hard scans set the
direction. It never knows which candidates are members: members and non-members are raised
alike. In the hospital's local training a member's loss then falls back sharply (it is
trained on), a non-member's only as far as similar scans pull it.

The drop alone is compared with nothing; here it is **calibrated**. From the same poisoned
model the server trains ``shadows`` shadow hospitals of the target's size, with the
hospitals' recipe, on random draws of its own population (never a candidate, never the
ledger), and reads every candidate's drop under each: that is the candidate's non-member
(OUT) distribution. The score ``update.ascent_calibrated`` is how far the candidate's real
drop sits above it, in units of the shadows' spread (offline LiRA with a fixed variance;
higher = member). Since the sent loss is common to the target and the shadows, the score
equals the shadows' mean log-loss minus the returned model's, per candidate.

The target's reply in an attack round is left out of the aggregate (``fold_back`` → None),
so the global model and its Dice never carry the ascent.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.poisoning.base import Poisoner
from fl_mia.attacker.poisoning.gradient_ascent import LAYER_PREFIXES
from fl_mia.attacker.poisoning.settings import ActiveAscentSettings
from fl_mia.attacker.updates.signals import candidate_losses
from fl_mia.devices import model_device
from fl_mia.losses import segmentation_loss
from fl_mia.models import get_weights, set_weights
from fl_mia.seeding import rng_for
from fl_mia.training import train_local

SIGNAL = "ascent_calibrated"
_EPS = 1e-8


def per_record_ascent(
    model: nn.Module,
    images: np.ndarray,
    masks: np.ndarray,
    *,
    strength: float,
    steps: int,
    layers: str,
    dice_weight: float,
    ce_weight: float,
    held: tuple[np.ndarray, np.ndarray] | None = None,
    contrast: float = 0.0,
    within_budget=None,
) -> int:
    """Ascend the mean of the records' own log-losses in place; returns the steps taken.

    ``held`` (images, masks) with ``contrast`` > 0: minus ``contrast`` × their mean log-loss,
    so scans like the server's own are held where they are. ``within_budget()`` (optional)
    is asked after every step; when it says no, that step is undone and the ascent stops
    (the stealth budget).
    """
    prefixes = LAYER_PREFIXES[layers]
    params = [p for name, p in model.named_parameters() if name.startswith(prefixes)]
    optimizer = torch.optim.Adam(params, lr=strength, maximize=True)
    device = model_device(model)
    images_t, masks_t = torch.as_tensor(images).to(device), torch.as_tensor(masks).to(device)
    held_t = tuple(torch.as_tensor(a).to(device) for a in held) if held is not None else None
    model.eval()  # normalisation statistics stay those of the model the hospital receives
    taken = 0
    for _ in range(steps):
        before = [p.detach().clone() for p in params]
        optimizer.zero_grad(set_to_none=True)
        losses = segmentation_loss(
            model(images_t), masks_t, dice_weight=dice_weight, ce_weight=ce_weight, reduction="none"
        )
        objective = torch.log(losses + _EPS).mean()
        if held is not None and contrast > 0:
            held_losses = segmentation_loss(
                model(held_t[0]), held_t[1], dice_weight=dice_weight, ce_weight=ce_weight, reduction="none"
            )
            objective = objective - contrast * torch.log(held_losses + _EPS).mean()
        objective.backward()
        optimizer.step()
        if within_budget is not None and not within_budget():
            with torch.no_grad():
                for p, old in zip(params, before):
                    p.copy_(old)
            break
        taken += 1
    model.zero_grad(set_to_none=True)
    return taken


def calibrated_scores(sent: np.ndarray, returned: np.ndarray, shadows: np.ndarray, *, calibration: str) -> np.ndarray:
    """How far each candidate's log-loss drop sits above its non-member reference (higher = member).

    ``sent``, ``returned``: ``[n]`` losses; ``shadows``: ``[K, n]`` losses after the shadow
    hospitals' training from the same sent model (every candidate a non-member there).
    """
    drop = np.log(sent + _EPS) - np.log(returned + _EPS)
    shadow_drops = np.log(sent + _EPS)[None, :] - np.log(shadows + _EPS)
    if calibration == "global":
        mean, spread = shadow_drops.mean(), shadow_drops.std()
    else:
        mean = shadow_drops.mean(axis=0)
        spread = (shadow_drops - mean[None, :]).std()  # pooled over candidates: a fixed variance, as offline LiRA
    return (drop - mean) / (spread + _EPS)


class ActiveAscentPoisoner(Poisoner):
    """Per-record ascent on a target's candidates in attack rounds; its matched signal is calibrated by shadows."""

    name = "active_ascent"
    update_signal_names = (SIGNAL,)
    matched_signals = (f"update.{SIGNAL}.accumulated", f"update.{SIGNAL}")

    def __init__(
        self,
        knowledge: AttackerKnowledge,
        model: nn.Module,
        *,
        targets: list[int],
        settings: ActiveAscentSettings,
    ) -> None:
        self.knowledge = knowledge
        self.model = model  # scratch: its weights are overwritten
        self.targets = set(targets)
        self.settings = settings
        self.training_sizes: dict[int, int] = {}  # hospital → num_examples it reported (what FedAvg weighs by)
        self.history: list[dict] = []
        self.references: dict[tuple[int, int], dict[str, np.ndarray]] = {}  # (round, hospital) → losses

    @classmethod
    def from_settings(
        cls, settings: ActiveAscentSettings | None, knowledge: AttackerKnowledge, model: nn.Module, *, targets: list[int]
    ) -> "ActiveAscentPoisoner":
        return cls(knowledge, model, targets=targets, settings=settings or ActiveAscentSettings())

    def describe(self) -> str:
        s = self.settings
        budget = f", population loss kept under {s.stealth_loss_ratio:g}×" if s.stealth_loss_ratio else ""
        budget += f", its own scans held (contrast {s.contrast:g})" if s.contrast else ""
        return (
            f"before sending to hospitals {sorted(self.targets)} in attack rounds, ascends the {s.layers} layers on "
            f"the mean log-loss of each candidate asked about them ({s.steps} Adam steps of {s.strength:g}{budget}); "
            f"each candidate's loss drop is scored against {s.shadows} shadow hospitals trained from the same model "
            f"on the server's population ({s.calibration}); the target's reply is left out of the aggregate"
        )

    def observe_size(self, *, hospital: int, num_examples: int) -> None:
        self.training_sizes[hospital] = int(num_examples)

    def fold_back(self, *, global_weights, sent, returned):
        return None  # the reply was trained from an ascended model: keep the global model clean

    def poisoned_pairs(self) -> set[tuple[int, int]]:
        return set(self.references)

    def poison(self, *, server_round: int, hospital: int, global_weights: list[np.ndarray]) -> list[np.ndarray] | None:
        if hospital not in self.targets:
            return None
        rows = np.flatnonzero(self.knowledge.candidates.hospital == hospital)
        if len(rows) == 0:
            return None
        s, training = self.settings, self.knowledge.training
        images, masks = self.knowledge.candidates.images[rows], self.knowledge.candidates.masks[rows]
        weights = dict(dice_weight=training.dice_weight, ce_weight=training.ce_weight)
        model = self.model
        set_weights(model, global_weights)
        before = candidate_losses(model, images, masks, **weights)
        probe = self._population_probe()
        probe_before = float(candidate_losses(model, *probe, **weights).mean())
        def within_stealth_budget() -> bool:
            return float(candidate_losses(model, *probe, **weights).mean()) <= s.stealth_loss_ratio * probe_before
        steps = per_record_ascent(
            model, images, masks, strength=s.strength, steps=s.steps, layers=s.layers, held=probe, contrast=s.contrast,
            within_budget=within_stealth_budget if s.stealth_loss_ratio is not None else None, **weights,
        )
        poisoned = get_weights(model)
        sent = candidate_losses(model, images, masks, **weights)
        probe_after = float(candidate_losses(model, *probe, **weights).mean())
        self.references[(server_round, hospital)] = {
            "rows": rows, "sent": sent, "shadows": self._shadow_losses(poisoned, server_round, hospital, images, masks)
        }
        self.history.append({
            "round": server_round, "hospital": hospital, "steps": steps,
            "candidate_loss_ratio": float(np.exp(np.mean(np.log(sent + _EPS) - np.log(before + _EPS)))),
            "population_loss_ratio": probe_after / max(probe_before, _EPS),
        })
        return poisoned

    def _population_probe(self) -> tuple[np.ndarray, np.ndarray]:
        """At most 32 of the server's own scans: what it watches the stealth budget on."""
        population = self.knowledge.population
        chosen = rng_for(self.knowledge.seed, "active-ascent-probe").permutation(len(population))[:32]
        return population.images[chosen], population.masks[chosen]

    def _shadow_losses(self, poisoned, server_round: int, hospital: int, images, masks) -> np.ndarray:
        """``[K, n]``: the candidates' losses after each shadow hospital's local training from ``poisoned``."""
        population, s = self.knowledge.population, self.settings
        size = min(s.shadow_size or self.training_sizes.get(hospital, len(population) // 2), len(population))
        shadow_model = copy.deepcopy(self.model)
        out = []
        for k in range(s.shadows):
            rng = rng_for(self.knowledge.seed, "active-ascent-shadow", server_round, hospital, k)
            split = population.subset(np.sort(rng.choice(len(population), size=size, replace=False)))
            set_weights(shadow_model, poisoned)
            train_local(shadow_model, split, self.knowledge.training, seed=self.knowledge.seed,
                        tags=("active-ascent-shadow", server_round, hospital, k))
            out.append(candidate_losses(shadow_model, images, masks, dice_weight=self.knowledge.dice_weight,
                                        ce_weight=self.knowledge.ce_weight))
        return np.stack(out)

    def update_signals(self, *, server_round: int, hospital: int, sent, returned) -> dict[str, np.ndarray]:
        scores = np.full(len(self.knowledge.candidates), np.nan)
        reference = self.references.get((server_round, hospital))
        if reference is not None:
            rows = reference["rows"]
            set_weights(self.model, returned)
            after = candidate_losses(
                self.model, self.knowledge.candidates.images[rows], self.knowledge.candidates.masks[rows],
                dice_weight=self.knowledge.dice_weight, ce_weight=self.knowledge.ce_weight,
            )
            scores[rows] = calibrated_scores(
                reference["sent"], after, reference["shadows"], calibration=self.settings.calibration
            )
        return {SIGNAL: scores}

    def report(self) -> dict:
        ratios = [entry["population_loss_ratio"] for entry in self.history]
        return {
            "active_ascent": {
                "history": self.history,
                "population_loss_ratio_max": float(np.max(ratios)) if ratios else None,
            }
        }

    # Checkpoint protocol: sizes seen, what was sent and the shadows' reference, per attack (round, hospital).
    def state_dict(self) -> dict:
        state: dict = {"history": self.history, **{f"size:{h}": np.asarray(n) for h, n in self.training_sizes.items()}}
        for (r, h), reference in self.references.items():
            state.update({f"ref:{r}:{h}:{key}": value for key, value in reference.items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            parts = key.split(":")
            if key == "history":
                self.history = list(value)
            elif parts[0] == "size":
                self.training_sizes[int(parts[1])] = int(value)
            elif parts[0] == "ref":
                self.references.setdefault((int(parts[1]), int(parts[2])), {})[parts[3]] = np.asarray(value)
