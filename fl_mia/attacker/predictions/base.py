"""What every membership inference attack looks like, and what it may see.

An attack never receives the membership ledger. It gets:

- :class:`~fl_mia.attacker.knowledge.AttackerKnowledge`: the attacker's own labelled population data
  (disjoint from every hospital), the hospitals' recipe and a way to train shadow models;
- the :class:`~fl_mia.attacker.knowledge.CandidateSet`: the scans it asks about (the attacker holds
  them, with their masks);
- a :class:`TargetView`: what the server holds of the model under attack.

Attacks follow scikit-learn's manners: every parameter in ``__init__``, ``fit`` returns
``self``, learned state ends in ``_``, and ``score`` returns one float per candidate where
higher means more likely a member.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fl_mia.attacker.knowledge import AttackerKnowledge, CandidateSet
from fl_mia.attacker.predictions.settings import PREDICTION_ATTACKS
from fl_mia.target_view import TargetView

if TYPE_CHECKING:
    from fl_mia.config import AttackerConfig


class MembershipAttack(ABC):
    """Base of every attack; ``score`` gives higher values to likelier members."""

    name: ClassVar[str] = ""
    uses_shadows: ClassVar[bool] = False
    decision_threshold_: float | None = None  # on the score's scale: member when score >= it

    @abstractmethod
    def fit(self, knowledge: AttackerKnowledge, candidates: CandidateSet) -> "MembershipAttack":
        """Learn whatever the attack needs from the attacker's own data; returns ``self``."""

    @abstractmethod
    def score(self, target: TargetView, candidates: CandidateSet) -> np.ndarray:
        """One float per candidate, ``[N]``; higher = more likely a member."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def make_attack(name: str, attacker: "AttackerConfig", *, seed: int, classes: int) -> MembershipAttack:
    """An unfitted attack from its registered factory and its table in ``[attacker]``.

    ``classes``: the segmentation's foreground classes; ``attacker.shadows.models`` is the
    number of shadow (or reference) models of the attacks that train several.
    """
    return PREDICTION_ATTACKS.create(
        name, attacker.attack_settings(name), seed=seed, classes=classes, shadow_models=attacker.shadows.models
    )
