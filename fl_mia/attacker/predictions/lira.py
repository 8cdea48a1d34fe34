"""LiRA, the likelihood-ratio attack of Carlini et al. (S&P 2022), offline and online.

K shadow models each train on a random half of the attacker's data: its population plus the
candidates themselves (the attacker holds the candidate scans, so it may train on them — the
standard online setting). Every candidate is IN exactly ⌊K/2⌋ shadows. A candidate's signal
under a model is the logit of its mean per-pixel confidence in the true label
(:func:`fl_mia.attacker.predictions.output_signals.logit_mean_confidence`). Per candidate, Gaussians are fitted to
the IN and OUT signals; with few shadows one pooled (within-candidate) variance replaces the
per-candidate ones, as Carlini et al. do for small K.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing import Literal

import numpy as np
from scipy.stats import norm

from fl_mia.attacker.predictions.base import AttackerKnowledge, MembershipAttack, TargetView
from fl_mia.attacker.predictions.shadow_data import balanced_inclusion
from fl_mia.attacker.predictions.output_signals import logit_mean_confidence
from fl_mia.data import Split
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.training import predict_logits

if TYPE_CHECKING:
    from fl_mia.attacker.predictions.settings import LiraSettings

GLOBAL_VARIANCE_BELOW = 64  # Carlini et al.: per-example variances need many shadows
_MIN_STD = 1e-6


def _pooled_within_std(signals: np.ndarray, inside: np.ndarray) -> float:
    """Std of signals around each candidate's own mean, pooled over candidates."""
    counts = inside.sum(0)
    means = np.where(inside, signals, 0.0).sum(0) / np.maximum(counts, 1)
    squared = np.where(inside, (signals - means) ** 2, 0.0).sum()
    dof = int(counts.sum() - (counts > 0).sum())
    return float(np.sqrt(squared / dof)) if dof > 0 else _MIN_STD


def _per_candidate(signals: np.ndarray, inside: np.ndarray, *, global_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    counts = inside.sum(0)
    if np.any(counts == 0):
        raise ValueError("a candidate has no shadow on this side; use at least 2 shadow models")
    means = np.where(inside, signals, 0.0).sum(0) / counts
    if global_variance:
        return means, np.full(signals.shape[1], max(_pooled_within_std(signals, inside), _MIN_STD))
    squared = np.where(inside, (signals - means) ** 2, 0.0).sum(0)
    return means, np.maximum(np.sqrt(squared / np.maximum(counts - 1, 1)), _MIN_STD)


class LiRAAttack(MembershipAttack):
    """Likelihood-ratio attack. Higher score = more likely a member.

    Online: log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out). Offline (OUT shadows only): the
    one-sided log Pr[OUT signal ≤ φ] — a candidate the target is unusually confident about
    for a model that never saw it is likely a member.
    """

    uses_shadows = True

    @classmethod
    def offline_from_settings(cls, settings: "LiraSettings", *, seed: int, shadow_models: int, **_unused: object) -> "LiRAAttack":
        return cls(online=False, num_shadows=shadow_models, global_variance=settings.global_variance, seed=seed)

    @classmethod
    def online_from_settings(cls, settings: "LiraSettings", *, seed: int, shadow_models: int, **_unused: object) -> "LiRAAttack":
        return cls(online=True, num_shadows=shadow_models, global_variance=settings.global_variance, seed=seed)

    def __init__(
        self, *, online: bool, num_shadows: int = 4, global_variance: Literal["auto", "always", "never"] = "auto",
        seed: int = 0,
    ) -> None:
        self.online = online
        self.num_shadows = num_shadows
        self.global_variance = global_variance
        self.seed = seed
        self.name = "lira_online" if online else "lira_offline"

    def fit(self, knowledge: AttackerKnowledge, candidates: CandidateSet) -> "LiRAAttack":
        pool = Split.concatenate([candidates.as_split(), knowledge.population])
        n = len(candidates)
        # Candidates and population both balanced; the shadows are shared by online and offline.
        self.inclusion_ = balanced_inclusion(len(pool), num_shadows=self.num_shadows, seed=knowledge.seed, name="lira")
        signals = np.empty((self.num_shadows, n))
        for k in range(self.num_shadows):
            shadow = knowledge.shadows.train(f"lira-{k}-of-{self.num_shadows}", pool.subset(np.flatnonzero(self.inclusion_[k])))
            signals[k] = logit_mean_confidence(predict_logits(shadow, candidates.images), candidates.masks)
        self.shadow_signals_ = signals
        pooled = self.global_variance == "always" or (
            self.global_variance == "auto" and self.num_shadows < GLOBAL_VARIANCE_BELOW
        )
        inside = self.inclusion_[:, :n]
        self.mean_in_, self.std_in_ = _per_candidate(signals, inside, global_variance=pooled)
        self.mean_out_, self.std_out_ = _per_candidate(signals, ~inside, global_variance=pooled)
        self.candidate_ids_ = candidates.image_ids.copy()
        return self

    def score(self, target: TargetView, candidates: CandidateSet) -> np.ndarray:
        if not np.array_equal(candidates.image_ids, self.candidate_ids_):
            raise ValueError("LiRA fits one Gaussian per candidate: score the candidates it was fitted on")
        signal = logit_mean_confidence(target.logits(candidates.images), candidates.masks)
        log_out = norm.logpdf(signal, self.mean_out_, self.std_out_)
        if self.online:
            return norm.logpdf(signal, self.mean_in_, self.std_in_) - log_out
        return norm.logcdf(signal, self.mean_out_, self.std_out_)
