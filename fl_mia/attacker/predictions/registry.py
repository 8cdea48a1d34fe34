"""Attacks by name: one dict and one factory (as Opacus keeps its accountants).

Each attack module lists its factories in ``FACTORIES``; this module imports them (they
never import it back). A factory takes the validated experiment (its ``[privacy]``
settings, seed and task) and returns an unfitted attack. Further attacks (a plugin, a
test double) are added with :func:`register_attack`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fl_mia.attacker.predictions.base import AttackFactory
from fl_mia.attacker.predictions.label_only import FACTORIES as LABEL_ONLY
from fl_mia.attacker.predictions.learned import FACTORIES as LEARNED
from fl_mia.attacker.predictions.lira import FACTORIES as LIRA
from fl_mia.attacker.predictions.loss_threshold import FACTORIES as LOSS_THRESHOLD
from fl_mia.attacker.predictions.rmia import FACTORIES as RMIA

if TYPE_CHECKING:
    from fl_mia.attacker.predictions.base import MembershipAttack
    from fl_mia.config import ExperimentConfig

ATTACKS: dict[str, AttackFactory] = {**LABEL_ONLY, **LEARNED, **LIRA, **LOSS_THRESHOLD, **RMIA}


def register_attack(name: str, factory: AttackFactory) -> None:
    if name in ATTACKS:
        raise ValueError(f"attack {name!r} is registered twice")
    ATTACKS[name] = factory


def attack_names() -> tuple[str, ...]:
    return tuple(ATTACKS)


def make_attack(name: str, cfg: "ExperimentConfig") -> "MembershipAttack":
    """An unfitted attack configured from the experiment's ``[privacy]`` section."""
    if name not in ATTACKS:
        raise ValueError(f"privacy.attacks: unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return ATTACKS[name](cfg)
