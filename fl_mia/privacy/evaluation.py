"""The privacy step of a run: the server attacks, then evaluation joins the ledger.

Runs in the server process. :meth:`PrivacyEvaluation.observe_round` scores the per-round
attacks on each round's global model as the strategy evaluates it; :meth:`finish` scores
every attack on the final model, joins the scores with the ledger (the only place that reads
it) and writes ``keep.npy``, ``candidates.csv``, ``scores.npz`` and the figures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from fl_mia.attacks import AttackerKnowledge, MembershipAttack, TargetView, make_attack
from fl_mia.config import ExperimentConfig
from fl_mia.data import build_attacker_population
from fl_mia.defences.output import target_view
from fl_mia.models import build_experiment_model, set_weights
from fl_mia.privacy.candidates import CANDIDATE_COLUMNS, CandidateSet, MembershipLedger, build_candidates, lesion_area
from fl_mia.privacy.metrics import membership_metrics
from fl_mia.privacy.plots import plot_privacy_by_round, plot_roc_loglog
from fl_mia.privacy.shadows import ShadowStore
from fl_mia.run_folder import write_csv, write_npy, write_npz
from fl_mia.update_attacks.recorder import (
    UpdateAttackRecorder,
    candidate_round_scores,
    candidate_scores,
    source_guess,
)

logger = logging.getLogger("fl_mia")

ROUND_METRIC_KEYS = ("auc", "balanced_accuracy", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")


def round_score_key(attack: str, server_round: int) -> str:
    """Name of a per-round score array in ``scores.npz``."""
    return f"{attack}.round{server_round}"


def attack_metrics(
    scores: np.ndarray, ledger: MembershipLedger, candidates: CandidateSet, *, decision_threshold: float | None
) -> dict[str, Any]:
    """Overall and per-hospital metrics of one score array (the ledger joins here, nowhere earlier)."""
    is_member = ledger.is_member()
    per_hospital = {
        str(k): membership_metrics(
            scores[candidates.hospital == k], is_member[candidates.hospital == k], decision_threshold=decision_threshold
        )
        for k in np.unique(candidates.hospital)
    }
    return {
        "overall": membership_metrics(scores, is_member, decision_threshold=decision_threshold),
        "per_hospital": per_hospital,
    }


class PrivacyEvaluation:
    """The honest-but-curious server's membership inference on the models it holds."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path | None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.candidates, self._ledger = build_candidates(cfg)
        self.shadows = ShadowStore(cfg, self.run_dir / "shadows" if self.run_dir is not None else None)
        self.knowledge = AttackerKnowledge(
            population=build_attacker_population(cfg),
            shadows=self.shadows,
            dice_weight=cfg.training.dice_weight,
            ce_weight=cfg.training.ce_weight,
            seed=cfg.seed,
        )
        self.attacks: dict[str, MembershipAttack] = {name: make_attack(name, cfg) for name in cfg.privacy.attacks}
        self.model = build_experiment_model(cfg)
        self.fit_seconds: dict[str, float] = {}
        self.score_seconds: dict[str, float] = {name: 0.0 for name in self.attacks}
        self.round_scores: dict[str, dict[int, np.ndarray]] = {name: {} for name in cfg.privacy.per_round_attacks}
        # The server's white-box view of each hospital's update (issue 4): a round observer the
        # strategy feeds with the model it sent and the one it got back, hospital by hospital.
        self.updates: UpdateAttackRecorder | None = None
        if cfg.threat.update_attacks:
            self.updates = UpdateAttackRecorder(
                model=build_experiment_model(cfg),
                training=cfg.training,
                images=self.candidates.images,
                masks=self.candidates.masks,
                num_hospitals=cfg.federation.num_hospitals,
                total_rounds=cfg.federation.rounds,
                with_gradient_alignment=cfg.threat.gradient_alignment,
            )

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
        if not self.round_scores:
            return
        set_weights(self.model, weights)
        view = target_view(self.model, server_round, self.cfg.defences.output, seed=self.cfg.seed)
        for name in self.round_scores:
            self.round_scores[name][server_round] = self._score(name, view)

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

    def _result(
        self, scores: np.ndarray, *, threshold: float | None, per_round: dict[int, np.ndarray] | None
    ) -> dict[str, Any]:
        result = attack_metrics(scores, self._ledger, self.candidates, decision_threshold=threshold)
        if per_round:
            is_member = self._ledger.is_member()
            result["per_round"] = {
                str(r): {key: membership_metrics(s, is_member)[key] for key in ROUND_METRIC_KEYS}
                for r, s in sorted(per_round.items())
            }
        return result

    def _source_inference(self) -> dict[str, Any]:
        """Which hospital holds each member: the update attack's guess against the ledger."""
        keep = self._ledger.keep
        members = keep.any(axis=1)
        guess = source_guess(self.updates)
        owner = keep.argmax(axis=1)
        return {
            "signal": "update.returned_loss.accumulated (standardised per hospital)",
            "members": int(members.sum()),
            "accuracy": float((guess[members] == owner[members]).mean()) if members.any() else None,
            "chance": 1.0 / keep.shape[1],
            # Naming always the hospital with most members needs no information either; with
            # unequal hospitals it beats 1/K (and it is what ties, e.g. under SecAgg+, give).
            "majority_share": float(np.bincount(owner[members], minlength=keep.shape[1]).max() / members.sum())
            if members.any() else None,
        }

    def finish(self, final_weights: list[np.ndarray]) -> dict[str, Any]:
        """Score every attack on the final model, write the privacy outputs, return ``metrics.json``'s section."""
        started = time.perf_counter()
        set_weights(self.model, final_weights)
        view = target_view(self.model, None, self.cfg.defences.output, seed=self.cfg.seed)
        final_scores = {name: self._score(name, view) for name in self.attacks}
        section: dict[str, Any] = {}
        for name, scores in final_scores.items():
            threshold = self.attacks[name].decision_threshold_
            result = self._result(scores, threshold=threshold, per_round=self.round_scores.get(name))
            result["decision_threshold"] = threshold
            result["fit_seconds"] = self.fit_seconds.get(name)
            result["score_seconds"] = self.score_seconds[name]
            section[name] = result
        update_round_scores: dict[str, dict[int, np.ndarray]] = {}
        if self.updates is not None and self.updates.observed_anything:
            drawn_for = self.candidates.hospital
            update_round_scores = candidate_round_scores(self.updates, drawn_for)
            for name, scores in candidate_scores(self.updates, drawn_for).items():
                final_scores[name] = scores
                section[name] = self._result(scores, threshold=None, per_round=update_round_scores.get(name))
            section["source_inference"] = self._source_inference()
        for name in final_scores:
            overall = section[name]["overall"]
            logger.info(
                "privacy %s: AUC %.3f, TPR@1%%FPR %.3f, TPR@0.1%%FPR %.3f",
                name, overall["auc"], overall["tpr_at_1pct_fpr"], overall["tpr_at_0.1pct_fpr"],
            )
        is_member = self._ledger.is_member()
        areas = lesion_area(self.candidates.masks, self.cfg.data.task)
        section["candidate_set"] = {
            "members": int(is_member.sum()),
            "non_members": int((~is_member).sum()),
            "per_hospital": {
                str(k): int(is_member[self.candidates.hospital == k].sum()) for k in np.unique(self.candidates.hospital)
            },
            "attacker_population_images": len(self.knowledge.population),
            # How far the masks alone separate members: a model-free score every attack gets for free.
            "lesion_area_auc": float(roc_auc_score(is_member, areas)),
            "lesion_free_share": {
                "members": float((areas[is_member] == 0).mean()),
                "non_members": float((areas[~is_member] == 0).mean()),
            },
            "matched_lesion_area": self.cfg.privacy.match_lesion_area,
            "shadow_epochs": self.shadows.epochs,
            "shadow_train_seconds": dict(self.shadows.train_seconds),
        }
        if self.run_dir is not None:
            self._write_outputs(final_scores, section, update_round_scores)
        section["candidate_set"]["finish_seconds"] = time.perf_counter() - started
        return section

    def _write_outputs(
        self,
        final_scores: dict[str, np.ndarray],
        section: dict[str, Any],
        update_round_scores: dict[str, dict[int, np.ndarray]],
    ) -> None:
        run_dir = self.run_dir
        write_npy(run_dir / "keep.npy", self._ledger.keep)
        write_csv(run_dir / "candidates.csv", self.candidates.table_rows(), CANDIDATE_COLUMNS)
        arrays = dict(final_scores)
        for name, rounds in {**self.round_scores, **update_round_scores}.items():
            arrays.update({round_score_key(name, r): s for r, s in rounds.items()})
        if self.updates is not None and self.updates.observed_anything:
            # [rounds, candidates, hospitals], NaN where unobserved: any other aggregation can be re-scored.
            arrays.update({f"update_matrix.{name}": values for name, values in self.updates.scores.items()})
        write_npz(run_dir / "scores.npz", arrays)
        is_member = self._ledger.is_member()
        title = f"{self.cfg.name} · {int(is_member.sum())} members / {int((~is_member).sum())} non-members"
        # Prediction attacks and the accumulated update attacks: the last-round variants would crowd the plot.
        plotted = {n: (s, is_member) for n, s in final_scores.items() if not n.startswith("update.") or n.endswith(".accumulated")}
        plot_roc_loglog(run_dir / "roc_loglog.png", plotted, title=title)
        by_round = [name for name in final_scores if "per_round" in section[name]]
        if by_round:
            per_round = {name: {int(r): m for r, m in section[name]["per_round"].items()} for name in by_round}
            plot_privacy_by_round(run_dir / "privacy_by_round.png", per_round, title=self.cfg.name)


def privacy_evaluation(cfg: ExperimentConfig, run_dir: Path | None) -> PrivacyEvaluation | None:
    """The run's privacy step, or None when it is off, lists no attack, or the attacker has no data."""
    if not cfg.privacy.enabled or not cfg.privacy.attacks:
        return None
    if cfg.federation.attacker_patients < 2:
        logger.warning("privacy step skipped: federation.attacker_patients < 2 leaves the attacker no shadow data")
        return None
    return PrivacyEvaluation(cfg, run_dir)
