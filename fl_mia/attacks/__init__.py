"""Membership inference attacks, registered by name (see :mod:`fl_mia.attacks.registry`).

The registry holds the attacks on predictions: ``loss``, ``learned_type1``,
``learned_type2``, ``loss_map``, ``lira_offline``, ``lira_online``, ``label_only``.
"""

from fl_mia.attacks.base import MembershipAttack, TargetView
from fl_mia.attacks.registry import ATTACKS, attack_names, make_attack, register_attack
from fl_mia.knowledge import AttackerKnowledge, ShadowTrainer

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
