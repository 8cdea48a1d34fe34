"""Poisoners by name, built from the ``[threat]`` config."""

from __future__ import annotations

from collections.abc import Callable

from fl_mia.config import ThreatConfig
from fl_mia.attacker.poisoning.backdoor import BackdoorPoisoner
from torch import nn

from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.poisoning.base import Poisoner
from fl_mia.attacker.poisoning.gradient_ascent import GradientAscentPoisoner
from fl_mia.attacker.poisoning.isolation import IsolationPoisoner
from fl_mia.attacker.poisoning.model_inconsistency import ModelInconsistencyPoisoner
from fl_mia.attacker.poisoning.trap_inconsistency import TrapInconsistencyPoisoner
from fl_mia.attacker.poisoning.trap_weights import TrapWeightsPoisoner

# Each factory gets the threat section, what the attacker knows, and a scratch model of the
# federation's architecture (its weights are the poisoner's to overwrite).
POISONERS: dict[str, Callable[[ThreatConfig, AttackerKnowledge, nn.Module], Poisoner]] = {
    "gradient_ascent": lambda t, k, m: GradientAscentPoisoner(
        k, m, targets=t.target_hospitals, target_loss_ratio=t.ascent_loss_ratio, max_steps=t.ascent_max_steps,
        lr=t.ascent_lr, layers=t.ascent_layers,
    ),
    "isolation": lambda t, k, m: IsolationPoisoner(targets=t.target_hospitals),
    "model_inconsistency": lambda t, k, m: ModelInconsistencyPoisoner(m, targets=t.target_hospitals),
    "backdoor": lambda t, k, m: BackdoorPoisoner(
        k, m, targets=t.target_hospitals, trigger_size=t.backdoor_trigger_size, trigger_value=t.backdoor_trigger_value,
        steps=t.backdoor_steps, lr=t.backdoor_lr,
    ),
    "trap_weights": lambda t, k, m: TrapWeightsPoisoner(
        k, m, targets=t.target_hospitals, detectors_per_round=t.trap_detectors_per_round, fit_steps=t.trap_fit_steps,
        in_turn=t.trap_in_turn,
    ),
    "trap_inconsistency": lambda t, k, m: TrapInconsistencyPoisoner(
        k, m, targets=t.target_hospitals, detectors_per_round=t.trap_detectors_per_round, fit_steps=t.trap_fit_steps,
    ),
}


def make_poisoner(threat: ThreatConfig, knowledge: AttackerKnowledge, model: nn.Module) -> Poisoner | None:
    """The configured poisoner, or ``None`` for an honest-but-curious server."""
    if threat.poisoning == "none":
        return None
    return POISONERS[threat.poisoning](threat, knowledge, model)
