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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fl_mia.devices import process_device
from fl_mia.attacker.predictions import MembershipAttack, TargetView, make_attack
from fl_mia.attacker.predictions.shadows import ShadowStore
from fl_mia.config import ExperimentConfig
from fl_mia.data import build_attacker_population
from fl_mia.defences.output import target_view
from fl_mia.attacker.knowledge import AttackerKnowledge, CandidateSet
from fl_mia.models import build_experiment_model, set_weights
from fl_mia.attacker.updates.recorder import UpdateAttackRecorder, candidate_round_scores, candidate_scores, source_guess

logger = logging.getLogger("fl_mia")


@dataclass
class AttackScores:
    """Everything the attacker concluded, as scores (higher = more likely a member)."""

    final: dict[str, np.ndarray]  # attack → [N] on the final model (update attacks included)
    per_round: dict[str, dict[int, np.ndarray]]  # attack → round → [N]
    decision_thresholds: dict[str, float | None]  # prediction attacks' own hard threshold
    update_matrices: dict[str, np.ndarray] = field(default_factory=dict)  # signal → [rounds, N, hospitals]
    source_guess: np.ndarray | None = None  # [N]: the hospital the update attacks name for each candidate
    fit_seconds: dict[str, float] = field(default_factory=dict)
    score_seconds: dict[str, float] = field(default_factory=dict)
    update_attack_names: tuple[str, ...] = ()


class ServerAttacker:
    """The honest-but-curious (or dishonest) server's membership inference on what it holds."""

    def __init__(self, cfg: ExperimentConfig, candidates: CandidateSet, run_dir: Path | None) -> None:
        self.cfg = cfg
        self.shadows = ShadowStore(cfg, Path(run_dir) / "shadows" if run_dir is not None else None)
        self.knowledge = AttackerKnowledge(
            population=build_attacker_population(cfg.data, cfg.federation, seed=cfg.seed),
            candidates=candidates,
            training=cfg.training,
            shadows=self.shadows,
            seed=cfg.seed,
        )
        self.attacks: dict[str, MembershipAttack] = {name: make_attack(name, cfg) for name in cfg.privacy.attacks}
        device = process_device(cfg.simulation, role="server")
        self.model = build_experiment_model(cfg.model, cfg.data, device=device)
        self.fit_seconds: dict[str, float] = {}
        self.score_seconds: dict[str, float] = {name: 0.0 for name in self.attacks}
        self.round_scores: dict[str, dict[int, np.ndarray]] = {name: {} for name in cfg.privacy.per_round_attacks}
        # The server's white-box view of each hospital's update: a round observer the strategy
        # feeds with the model it sent and the one it got back, hospital by hospital.
        self.updates: UpdateAttackRecorder | None = None
        if cfg.threat.update_attacks:
            self.updates = UpdateAttackRecorder(
                self.knowledge,
                model=build_experiment_model(cfg.model, cfg.data, device=device),
                num_hospitals=cfg.federation.num_hospitals,
                total_rounds=cfg.federation.rounds,
                with_gradient_alignment=cfg.threat.gradient_alignment,
                every_candidate=cfg.threat.scores_every_candidate(cfg.federation.num_hospitals),
            )

    @property
    def candidates(self) -> CandidateSet:
        return self.knowledge.candidates

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

    def observe_round(self, server_round: int, weights: list[np.ndarray]) -> None:
        """Score the per-round attacks on this round's global model (0 = untrained)."""
        started = time.perf_counter()
        if self.round_scores:
            set_weights(self.model, weights)
            view = target_view(self.model, server_round, self.cfg.defences.output, seed=self.cfg.seed)
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
        set_weights(self.model, final_weights)
        view = target_view(self.model, None, self.cfg.defences.output, seed=self.cfg.seed)
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
        return outcome


def server_attacker(cfg: ExperimentConfig, candidates: CandidateSet, run_dir: Path | None) -> ServerAttacker | None:
    """The run's attacker, or None when the privacy step is off, lists no attack, or has no data."""
    if not cfg.privacy.enabled or not cfg.privacy.attacks:
        return None
    if cfg.federation.attacker_patients < 2:
        logger.warning("privacy step skipped: federation.attacker_patients < 2 leaves the attacker no shadow data")
        return None
    return ServerAttacker(cfg, candidates, run_dir)
