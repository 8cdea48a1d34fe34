"""Membership inference attacks, registered by name (see :mod:`fl_mia.attacker.predictions.registry`).

The registry holds the attacks on predictions: ``loss``, ``learned_type1``,
``learned_type2``, ``loss_map``, ``lira_offline``, ``lira_online``, ``label_only``, ``rmia``.
"""

from fl_mia.attacker.predictions.base import MembershipAttack, TargetView
from fl_mia.attacker.predictions.registry import ATTACKS, attack_names, make_attack, register_attack
from fl_mia.attacker.knowledge import AttackerKnowledge, ShadowTrainer

__all__ = [
    "ATTACKS",
    "AttackerKnowledge",
    "MembershipAttack",
    "ShadowTrainer",
    "TargetView",
    "attack_names",
    "make_attack",
    "register_attack",
]
