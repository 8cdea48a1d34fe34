"""What every membership inference attack looks like, and what it may see.

An attack never receives the membership ledger. It gets:

- :class:`~fl_mia.knowledge.AttackerKnowledge`: the attacker's own labelled population data
  (disjoint from every hospital), the hospitals' recipe and a way to train shadow models;
- the :class:`~fl_mia.knowledge.CandidateSet`: the scans it asks about (the attacker holds
  them, with their masks);
- a :class:`TargetView`: what the server holds of the model under attack.

Attacks follow scikit-learn's manners: every parameter in ``__init__``, ``fit`` returns
``self``, learned state ends in ``_``, and ``score`` returns one float per candidate where
higher means more likely a member.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from fl_mia.knowledge import AttackerKnowledge, CandidateSet
from fl_mia.segmentation_metrics import hard_predictions
from fl_mia.training import predict_logits

if TYPE_CHECKING:
    from fl_mia.config import ExperimentConfig


@dataclass
class TargetView:
    """The server's view of the model under attack: a model it can query, at a round.

    Outputs for the same image stack are computed once and shared by every attack scoring
    this view. Update-based attacks (issue 4) extend the view with the models sent to and
    returned by each hospital.
    """

    model: nn.Module
    server_round: int | None = None
    _logits_cache: dict[int, tuple[np.ndarray, torch.Tensor]] = field(default_factory=dict, repr=False)

    def logits(self, images: np.ndarray) -> torch.Tensor:
        """Eval-mode logits ``[N, C, H, W]``."""
        cached = self._logits_cache.get(id(images))
        if cached is not None and cached[0] is images:
            return cached[1]
        logits = predict_logits(self.model, images)
        self._logits_cache[id(images)] = (images, logits)  # holding the array keeps its id unique
        return logits

    def hard_labels(self, images: np.ndarray) -> torch.Tensor:
        """Only the argmax mask ``[N, H, W]`` (what a label-only attacker sees)."""
        return hard_predictions(predict_logits(self.model, images))


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


# Builds an unfitted attack from the validated experiment (its [privacy] settings, seed, task).
AttackFactory = Callable[["ExperimentConfig"], MembershipAttack]
