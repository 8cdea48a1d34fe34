"""The server as attacker: what it scores, round by round and at the end, from what it holds.

Runs in the server process. :class:`ServerAttacker` receives one
:class:`~fl_mia.attacker.knowledge.AttackerKnowledge` (never the membership ledger), scores the
per-round prediction attacks on each round's global model, feeds the update attacks from
the strategy's view of every hospital's reply, and at the end scores every attack on the
final model. What it returns is scores only; the referee (:mod:`fl_mia.referee.evaluation`)
joins them with the ledger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from fl_mia.attacker.forwards import CandidateForwards
from fl_mia.attacker.knowledge import AttackerKnowledge, CandidateSet
from fl_mia.attacker.predictions.base import MembershipAttack, TargetView, make_attack
from fl_mia.attacker.predictions.shadows import ShadowStore
from fl_mia.config import AttackerConfig, OutputConfig, TrainingConfig
from fl_mia.data import Split
from fl_mia.defences.output import target_view
from fl_mia.models import set_weights
from fl_mia.attacker.updates.recorder import UpdateAttackRecorder, candidate_round_scores, candidate_scores, source_guess

logger = logging.getLogger("fl_mia")


@dataclass
class AttackScores:
    """Everything the attacker concluded, as scores (higher = more likely a member)."""

    final: dict[str, np.ndarray]  # attack → [N] on the final model (update attacks included)
    per_round: dict[str, dict[int, np.ndarray]]  # attack → round → [N]
    decision_thresholds: dict[str, float | None]  # each attack's hard threshold, chosen without the ledger
    update_matrices: dict[str, np.ndarray] = field(default_factory=dict)  # signal → [rounds, N, hospitals]
    source_guess: np.ndarray | None = None  # [N]: the hospital the update attacks name for each candidate
    fit_seconds: dict[str, float] = field(default_factory=dict)
    score_seconds: dict[str, float] = field(default_factory=dict)
    update_attack_names: tuple[str, ...] = ()
    threshold_sources: dict[str, str] = field(default_factory=dict)  # where each decision threshold came from


class ServerAttacker:
    """The honest-but-curious (or dishonest) server's membership inference on what it holds."""

    def __init__(
        self,
        settings: AttackerConfig,
        candidates: CandidateSet,
        *,
        population: Split,
        shadows: ShadowStore,
        training: TrainingConfig,
        output: OutputConfig,
        make_model: Callable[[], nn.Module],
        num_hospitals: int,
        total_rounds: int,
        seed: int,
        classes: int,
    ) -> None:
        """``population``: the attacker's own scans; ``training``: the hospitals' recipe; ``output``:
        how the target serves its predictions; ``make_model()``: an untrained model of the target's
        architecture on the server's device."""
        self.seed = seed
        self.output = output
        self.shadows = shadows
        self.knowledge = AttackerKnowledge(
            population=population, candidates=candidates, training=training, shadows=shadows, seed=seed
        )
        self.attacks: dict[str, MembershipAttack] = {
            name: make_attack(name, settings, seed=seed, classes=classes) for name in settings.prediction_attacks
        }
        self.model = make_model()  # scratch: whoever runs it sets the weights it needs first
        # One forward pass per distinct model over the candidates, read by the update signals
        # and the prediction attacks alike (round r's global model is round r + 1's sent model).
        # It runs on the same scratch model (no second copy of a large one): views are used only
        # while the round or the final step that made them runs.
        self.forwards = CandidateForwards(self.model, candidates.images)
        self.fit_seconds: dict[str, float] = {}
        self.score_seconds: dict[str, float] = {name: 0.0 for name in self.attacks}
        self.round_scores: dict[str, dict[int, np.ndarray]] = {name: {} for name in settings.per_round_attacks}
        # The server's white-box view of each hospital's update: a round observer the strategy
        # feeds with the model it sent and the one it got back, hospital by hospital.
        self.updates: UpdateAttackRecorder | None = None
        if settings.update_attacks:
            self.updates = UpdateAttackRecorder(
                self.knowledge,
                model=make_model(),
                num_hospitals=num_hospitals,
                total_rounds=total_rounds,
                signals=tuple(settings.update_attacks),
                every_candidate=settings.scores_every_candidate(num_hospitals),
                forwards=self.forwards,
            )

    @property
    def candidates(self) -> CandidateSet:
        return self.knowledge.candidates

    def fit_attacks(self) -> None:
        """Fit every prediction attack now (shadows, calibrations): they read only the attacker's
        knowledge, so the server can do it before the federation needs it, e.g. while hospitals start."""
        for name in self.attacks:
            self._fitted(name)

    def _fitted(self, name: str) -> MembershipAttack:
        attack = self.attacks[name]
        if name not in self.fit_seconds:
            started = time.perf_counter()
            attack.fit(self.knowledge, self.candidates)
            self.fit_seconds[name] = time.perf_counter() - started
        return attack

    def _score(self, name: str, view: TargetView) -> np.ndarray:
        attack = self._fitted(name)
        started = time.perf_counter()
        scores = np.asarray(attack.score(view, self.candidates), dtype=np.float64)
        self.score_seconds[name] += time.perf_counter() - started
        if scores.shape != (len(self.candidates),):
            raise ValueError(f"attack {name} returned {scores.shape} scores for {len(self.candidates)} candidates")
        return scores

    def _view(self, server_round: int | None, weights: list[np.ndarray]) -> TargetView:
        set_weights(self.model, weights)
        return target_view(
            self.model, server_round, self.output, seed=self.seed, shared_logits=self.forwards.for_view(weights)
        )

    def observe_round(self, server_round: int, weights: list[np.ndarray]) -> None:
        """Score the per-round attacks on this round's global model (0 = untrained)."""
        started = time.perf_counter()
        if self.round_scores:
            view = self._view(server_round, weights)
            for name in self.round_scores:
                self.round_scores[name][server_round] = self._score(name, view)
        per_round = time.perf_counter() - started
        on_updates = self.updates.seconds_by_round.get(server_round, 0.0) if self.updates is not None else 0.0
        if server_round > 0:
            # bench/scale.py reads this line: the server's privacy work per round against the training it observes.
            logger.info(
                "privacy step round %d: %.2f s (update attacks %.2f s, per-round attacks %.2f s)",
                server_round, on_updates + per_round, on_updates, per_round,
            )

    # Checkpoint protocol (fl_mia.checkpoint): the per-round scores gathered so far.
    def state_dict(self) -> dict[str, Any]:
        state = {
            f"{name}@{server_round}": scores
            for name, rounds in self.round_scores.items()
            for server_round, scores in rounds.items()
        }
        if self.updates is not None:
            state.update(self.updates.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.updates is not None:
            self.updates.load_state_dict({k: v for k, v in state.items() if k.startswith("update:")})
        for key, scores in state.items():
            name, _, server_round = key.rpartition("@")
            if name in self.round_scores:
                self.round_scores[name][int(server_round)] = np.asarray(scores)

    def finish(self, final_weights: list[np.ndarray]) -> AttackScores:
        """Score every attack on the final model and collect the update attacks' scores."""
        view = self._view(None, final_weights)
        final = {name: self._score(name, view) for name in self.attacks}
        outcome = AttackScores(
            final=final,
            per_round={name: dict(rounds) for name, rounds in self.round_scores.items()},
            decision_thresholds={name: attack.decision_threshold_ for name, attack in self.attacks.items()},
            fit_seconds=dict(self.fit_seconds),
            score_seconds=dict(self.score_seconds),
        )
        if self.updates is not None and self.updates.observed_anything:
            drawn_for = self.candidates.hospital
            update_scores = candidate_scores(self.updates, drawn_for)
            outcome.final.update(update_scores)
            outcome.update_attack_names = tuple(update_scores)
            outcome.per_round.update(candidate_round_scores(self.updates, drawn_for))
            outcome.update_matrices = dict(self.updates.scores)
            if self.updates.every_candidate:
                outcome.source_guess = source_guess(self.updates)
        for name, scores in outcome.final.items():
            if outcome.decision_thresholds.get(name) is None:
                # No threshold of its own (LiRA, RMIA, the update signals): the attacker calls the upper
                # half of its candidates members. The membership game's prior is one half (the
                # candidates are drawn balanced by design), and no ledger is needed for the median.
                outcome.decision_thresholds[name] = float(np.median(scores))
                outcome.threshold_sources[name] = "median of the candidates' scores (the game's prior: one half)"
            else:
                outcome.threshold_sources.setdefault(name, "the attack's own (from its shadows or population)")
        return outcome
