"""The referee: joins the attacker's scores with the membership ledger, and writes them.

The only code that reads the ledger. It receives the attacker's
:class:`~fl_mia.attacker.server_attacker.AttackScores` after training, computes every attack's membership
metrics (overall, per hospital, per round), the source-inference accuracy and the
candidate set's mask-only confound, and writes ``keep.npy``, ``candidates.csv``,
``scores.npz`` and the figures.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from fl_mia.attacker.server_attacker import AttackScores
from fl_mia.config import RefereeConfig
from fl_mia.defences.accounting import REFERENCE_DELTA
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.referee.candidates import CANDIDATE_COLUMNS, PATIENT_COLUMNS, MembershipLedger, lesion_area, with_patient_names
from fl_mia.referee.dp_audit import empirical_epsilon
from fl_mia.referee.metrics import membership_metrics
from fl_mia.referee.plots import plot_privacy_by_round, plot_roc_loglog
from fl_mia.referee.statistics import bootstrap_intervals
from fl_mia.referee.verdict import defence_verdict
from fl_mia.run_folder import write_csv, write_npy, write_npz
from fl_mia.seeding import seed_sequence

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


class Referee:
    """Holds the ground truth of one run's candidates and judges the attacker's scores."""

    def __init__(
        self,
        settings: RefereeConfig,
        candidates: CandidateSet,
        ledger: MembershipLedger,
        run_dir: Path | None,
        *,
        seed: int,
        task: str,
        run_name: str,
        patient_names: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.task = task
        self.run_name = run_name
        self.patient_names = patient_names  # the dataset's ids for the CSVs a user reads; None: numbered patients
        self.candidates = candidates
        self._ledger = ledger
        self._patients = ledger.patient_level(candidates)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # One resampling stream for every attack of the run: their intervals come from the same
        # resamples of the same patients, as a paired comparison between them needs.
        self._bootstrap_seed = seed_sequence(seed, "bootstrap")

    def _result(
        self, scores: np.ndarray, *, threshold: float | None, per_round: dict[int, np.ndarray] | None
    ) -> dict[str, Any]:
        result = attack_metrics(scores, self._ledger, self.candidates, decision_threshold=threshold)
        is_member = self._ledger.is_member()
        # Audited at δ = 1e-5, the δ every DP run also reports its accountant's ε at.
        result["empirical_epsilon"] = empirical_epsilon(scores, is_member, delta=REFERENCE_DELTA)
        # Slices of one patient are resampled together: they are not independent evidence.
        result["overall"]["ci"] = bootstrap_intervals(
            scores, is_member, groups=self._patients.row_of_candidate, seed=self._bootstrap_seed
        )
        result["patient"] = self._patient_result(scores, threshold=threshold)
        if per_round:
            result["per_round"] = {
                str(r): {key: membership_metrics(s, is_member)[key] for key in ROUND_METRIC_KEYS}
                for r, s in sorted(per_round.items())
            }
        return result

    def _patient_result(self, scores: np.ndarray, *, threshold: float | None) -> dict[str, Any]:
        """Metrics over patients: a patient's score is the mean of its candidate slices' scores."""
        patient_scores = self._patients.aggregate(scores)
        is_member = self._patients.is_member
        overall = membership_metrics(patient_scores, is_member, decision_threshold=threshold)
        overall["ci"] = bootstrap_intervals(patient_scores, is_member, seed=self._bootstrap_seed)
        return {
            "aggregation": "mean of the patient's candidate slice scores", "overall": overall,
            # One trial per patient: the audit that patient-level DP's ε is compared with.
            "empirical_epsilon": empirical_epsilon(patient_scores, is_member, delta=REFERENCE_DELTA),
        }

    def _source_inference(self, guess: np.ndarray) -> dict[str, Any]:
        """Which hospital holds each member: the update attack's guess against the ledger."""
        keep = self._ledger.keep
        members = keep.any(axis=1)
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

    def judge(
        self, scores: AttackScores, *, population_images: int, shadows, dp_epsilon: float | None = None
    ) -> dict[str, Any]:
        """``metrics.json``'s privacy section; writes the privacy outputs into the run folder.

        ``dp_epsilon``: the accountant's largest per-hospital sample-level ε at δ = 1e-5 when
        DP-SGD is on; the ROC figure then shows the bound TPR ≤ e^ε·FPR + δ it implies.
        """
        section: dict[str, Any] = {}
        for name in scores.final:
            if name in scores.update_attack_names:
                continue
            threshold = scores.decision_thresholds.get(name)
            result = self._result(scores.final[name], threshold=threshold, per_round=scores.per_round.get(name))
            result["decision_threshold"] = threshold
            result["fit_seconds"] = scores.fit_seconds.get(name)
            result["score_seconds"] = scores.score_seconds.get(name)
            section[name] = result
        for name in scores.update_attack_names:
            section[name] = self._result(scores.final[name], threshold=None, per_round=scores.per_round.get(name))
        if scores.source_guess is not None:
            section["source_inference"] = self._source_inference(scores.source_guess)
        for name in scores.final:
            overall = section[name]["overall"]
            logger.info(
                "privacy %s: AUC %.3f, TPR@1%%FPR %.3f, TPR@0.1%%FPR %.3f",
                name, overall["auc"], overall["tpr_at_1pct_fpr"], overall["tpr_at_0.1pct_fpr"],
            )
        is_member = self._ledger.is_member()
        areas = lesion_area(self.candidates.masks, self.task)
        section["candidate_set"] = {
            "members": int(is_member.sum()),
            "non_members": int((~is_member).sum()),
            "per_hospital": {
                str(k): int(is_member[self.candidates.hospital == k].sum()) for k in np.unique(self.candidates.hospital)
            },
            "patients": {
                "members": int(self._patients.is_member.sum()),
                "non_members": int((~self._patients.is_member).sum()),
            },
            "attacker_population_images": population_images,
            # How far the masks alone separate members: a model-free score every attack gets for free.
            "lesion_area_auc": float(roc_auc_score(is_member, areas)),
            "lesion_free_share": {
                "members": float((areas[is_member] == 0).mean()),
                "non_members": float((areas[~is_member] == 0).mean()),
            },
            "matched_lesion_area": self.settings.match_lesion_area,
            "shadow_epochs": shadows.epochs,
            "shadow_train_seconds": dict(shadows.train_seconds),
        }
        # Every attack, prediction and update, counted; after the candidate set, whose size says
        # which TPRs are resolvable.
        section["verdict"] = defence_verdict(section)
        if self.run_dir is not None:
            self._write_outputs(scores, section, dp_epsilon=dp_epsilon)
        return section

    def _write_outputs(self, scores: AttackScores, section: dict[str, Any], *, dp_epsilon: float | None) -> None:
        run_dir = self.run_dir
        write_npy(run_dir / "keep.npy", self._ledger.keep)
        write_csv(run_dir / "candidates.csv", with_patient_names(self.candidates.table_rows(), self.patient_names), CANDIDATE_COLUMNS)
        # The ledger's patient level (keep.npy is the slice level): re-scoring patients needs only this.
        write_csv(run_dir / "keep_patients.csv", with_patient_names(self._patients.table_rows(), self.patient_names), PATIENT_COLUMNS)
        arrays = dict(scores.final)
        for name, rounds in scores.per_round.items():
            arrays.update({round_score_key(name, r): s for r, s in rounds.items()})
        # [rounds, candidates, hospitals], NaN where unobserved: any other aggregation can be re-scored.
        arrays.update({f"update_matrix.{name}": values for name, values in scores.update_matrices.items()})
        write_npz(run_dir / "scores.npz", arrays)
        is_member = self._ledger.is_member()
        title = f"{self.run_name} · {int(is_member.sum())} members / {int((~is_member).sum())} non-members"
        # Prediction attacks and the accumulated update attacks: the last-round variants would crowd the plot.
        plotted = {n: (s, is_member) for n, s in scores.final.items() if not n.startswith("update.") or n.endswith(".accumulated")}
        dp_bound = (dp_epsilon, REFERENCE_DELTA) if dp_epsilon is not None else None
        plot_roc_loglog(run_dir / "roc_loglog.png", plotted, title=title, dp_bound=dp_bound)
        by_round = [name for name in scores.final if "per_round" in section[name]]
        if by_round:
            per_round = {name: {int(r): m for r, m in section[name]["per_round"].items()} for name in by_round}
            plot_privacy_by_round(run_dir / "privacy_by_round.png", per_round, title=self.run_name)
