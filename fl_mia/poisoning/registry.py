"""Poisoners by name, built from the ``[threat]`` config."""

from __future__ import annotations

from collections.abc import Callable

from fl_mia.config import ThreatConfig
from fl_mia.poisoning.backdoor import BackdoorPoisoner
from fl_mia.poisoning.base import PoisoningKnowledge, Poisoner
from fl_mia.poisoning.gradient_ascent import GradientAscentPoisoner
from fl_mia.poisoning.isolation import IsolationPoisoner
from fl_mia.poisoning.model_inconsistency import ModelInconsistencyPoisoner
from fl_mia.poisoning.trap_weights import TrapWeightsPoisoner

POISONERS: dict[str, Callable[[ThreatConfig, PoisoningKnowledge], Poisoner]] = {
    "gradient_ascent": lambda t, k: GradientAscentPoisoner(
        k, targets=t.target_hospitals, target_loss_ratio=t.ascent_loss_ratio, max_steps=t.ascent_max_steps,
        lr=t.ascent_lr, layers=t.ascent_layers,
    ),
    "isolation": lambda t, k: IsolationPoisoner(targets=t.target_hospitals),
    "model_inconsistency": lambda t, k: ModelInconsistencyPoisoner(k.model, targets=t.target_hospitals),
    "backdoor": lambda t, k: BackdoorPoisoner(
        k, targets=t.target_hospitals, trigger_size=t.backdoor_trigger_size, trigger_value=t.backdoor_trigger_value,
        steps=t.backdoor_steps, lr=t.backdoor_lr,
    ),
    "trap_weights": lambda t, k: TrapWeightsPoisoner(
        k, targets=t.target_hospitals, detectors_per_round=t.trap_detectors_per_round, fit_steps=t.trap_fit_steps,
        in_turn=t.trap_in_turn,
    ),
}


def make_poisoner(threat: ThreatConfig, knowledge: PoisoningKnowledge) -> Poisoner | None:
    """The configured poisoner, or ``None`` for an honest-but-curious server."""
    if threat.poisoning == "none":
        return None
    return POISONERS[threat.poisoning](threat, knowledge)
