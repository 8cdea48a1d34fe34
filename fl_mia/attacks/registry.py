"""Attacks by name: one dict and one factory (as Opacus keeps its accountants).

A factory takes the validated experiment (its ``[privacy]`` settings, seed and task) and
returns an unfitted attack.
Other attack families (e.g. update-based attacks) add themselves with :func:`register_attack`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fl_mia.attacks.base import MembershipAttack
    from fl_mia.config import ExperimentConfig

AttackFactory = Callable[["ExperimentConfig"], "MembershipAttack"]
ATTACKS: dict[str, AttackFactory] = {}


def register_attack(name: str, factory: AttackFactory) -> None:
    if name in ATTACKS:
        raise ValueError(f"attack {name!r} is registered twice")
    ATTACKS[name] = factory


def _load_builtin_attacks() -> None:
    import fl_mia.attacks  # noqa: F401  (its modules register themselves on import)


def attack_names() -> tuple[str, ...]:
    _load_builtin_attacks()
    return tuple(ATTACKS)


def make_attack(name: str, cfg: "ExperimentConfig") -> "MembershipAttack":
    """An unfitted attack configured from the experiment's ``[privacy]`` section."""
    _load_builtin_attacks()
    if name not in ATTACKS:
        raise ValueError(f"privacy.attacks: unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return ATTACKS[name](cfg)
