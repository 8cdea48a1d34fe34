"""The configured poisoner, built through :data:`fl_mia.attacker.poisoning.settings.POISONERS`."""

from __future__ import annotations

from torch import nn

from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.poisoning.base import Poisoner
from fl_mia.attacker.poisoning.settings import NO_POISONING, POISONERS
from fl_mia.config import ThreatConfig


def make_poisoner(threat: ThreatConfig, knowledge: AttackerKnowledge, model: nn.Module) -> Poisoner | None:
    """The poisoner ``threat.poisoning`` names, or ``None`` for an honest-but-curious server.

    Its factory gets the poisoner's own table, what the attacker knows, and a scratch model of
    the federation's architecture (its weights are the poisoner's to overwrite).
    """
    if threat.poisoning == NO_POISONING:
        return None
    return POISONERS.create(
        threat.poisoning, threat.poisoner_settings(), knowledge, model, targets=threat.target_hospitals
    )
