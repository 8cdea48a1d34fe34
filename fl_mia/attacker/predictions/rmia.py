"""RMIA, the relative membership inference attack of Zarifzadeh, Liu and Shokri (ICML 2024), offline.

A candidate x is a likely member when the target raises its likelihood more than it raises
the likelihood of typical population samples z, each relative to what reference models that
never saw it give:

    LR(x) = Pr(x | θ) / Pr(x),   Pr(x) = mean over reference models of Pr(x | θ_ref),
    score(x) = share of population samples z with LR(x) / LR(z) > γ.

Offline (every reference model is OUT for x), Pr(x) underestimates the average over IN and
OUT models; the paper's linear correction replaces it by ½((1 + a)·Pr_OUT(x) + (1 − a)).

Per-image likelihood for segmentation: Pr(x | θ) = the **mean per-pixel probability of the
true class** under θ (computed in log space). It lies in [0, 1] like the class probability
of the original classification setting, for which the offline correction was designed.

Reference models = the shadow store (``knowledge.shadows``): K models, each on a balanced
half of the attacker's population split by patient (no candidate in any — that is what makes
the attack offline). The z samples are the population itself; Pr(z) averages only the
reference models z was OUT of, so x and z are judged alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.special import expit

from fl_mia.attacker.predictions.base import AttackerKnowledge, MembershipAttack, TargetView
from fl_mia.attacker.predictions.shadow_data import balanced_inclusion
from fl_mia.attacker.predictions.output_signals import log_true_class_probability
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.training import predict_logits

if TYPE_CHECKING:
    from fl_mia.attacker.predictions.settings import RmiaSettings


def mean_true_class_probability(logits: torch.Tensor, masks: np.ndarray) -> np.ndarray:
    """RMIA's per-image likelihood: mean over pixels of p(true class), ``[N]``."""
    pixels = logits.shape[-1] * logits.shape[-2]
    log_mean = torch.logsumexp(log_true_class_probability(logits, masks).flatten(1), dim=1) - np.log(pixels)
    return log_mean.exp().cpu().numpy().astype(np.float64)


class RMIAAttack(MembershipAttack):
    """Offline RMIA. Higher score = more likely a member (share of z that x dominates).

    The share is a non-decreasing function of LR(x) for a fixed target and z set, so many
    candidates tie at 0 or 1; ``score`` adds ½·sigmoid(log LR(x)) / |Z|, smaller than one
    step of the share, so the ranking is LR(x)'s and no share is reordered.
    """

    name = "rmia"
    uses_shadows = True

    @classmethod
    def from_settings(cls, settings: "RmiaSettings", *, seed: int, shadow_models: int, **_unused: object) -> "RMIAAttack":
        return cls(num_references=shadow_models, offline_a=settings.offline_a, gamma=settings.gamma, seed=seed)

    def __init__(self, *, num_references: int = 4, offline_a: float = 0.3, gamma: float = 1.0, seed: int = 0) -> None:
        if num_references < 2:
            raise ValueError("RMIA needs at least 2 reference models (each population sample must be OUT of one)")
        if not 0.0 <= offline_a <= 1.0:
            raise ValueError(f"offline_a must lie in [0, 1], got {offline_a}")
        self.num_references = num_references
        self.offline_a = offline_a
        self.gamma = gamma
        self.seed = seed

    def _offline_prior(self, out_mean: np.ndarray) -> np.ndarray:
        return 0.5 * ((1 + self.offline_a) * out_mean + (1 - self.offline_a))

    def fit(self, knowledge: AttackerKnowledge, candidates: CandidateSet) -> "RMIAAttack":
        population = knowledge.population
        patients = np.unique(population.patient_ids)
        if len(patients) < 2:
            raise ValueError("RMIA: the attacker's population needs at least 2 patients for its reference models")
        by_patient = balanced_inclusion(len(patients), num_shadows=self.num_references, seed=knowledge.seed, name="rmia")
        # Whole patients go in or out together: no reference model sees a slice of an OUT patient.
        self.inclusion_ = by_patient[:, np.searchsorted(patients, population.patient_ids)]
        candidate_likelihood = np.empty((self.num_references, len(candidates)))
        population_likelihood = np.empty((self.num_references, len(population)))
        for k in range(self.num_references):
            reference = knowledge.shadows.train(
                f"rmia-{k}-of-{self.num_references}", population.subset(np.flatnonzero(self.inclusion_[k]))
            )
            candidate_likelihood[k] = mean_true_class_probability(predict_logits(reference, candidates.images), candidates.masks)
            population_likelihood[k] = mean_true_class_probability(predict_logits(reference, population.images), population.masks)
        outside = ~self.inclusion_
        self.candidate_prior_ = self._offline_prior(candidate_likelihood.mean(0))
        self.population_prior_ = self._offline_prior((population_likelihood * outside).sum(0) / outside.sum(0))
        self.population_images_ = population.images
        self.population_masks_ = population.masks
        self.candidate_ids_ = candidates.image_ids.copy()
        return self

    def score(self, target: TargetView, candidates: CandidateSet) -> np.ndarray:
        if not np.array_equal(candidates.image_ids, self.candidate_ids_):
            raise ValueError("RMIA keeps one reference likelihood per candidate: score the candidates it was fitted on")
        log_ratio_x = np.log(mean_true_class_probability(target.logits(candidates.images), candidates.masks)) - np.log(
            self.candidate_prior_
        )
        log_ratio_z = np.log(
            mean_true_class_probability(target.logits(self.population_images_), self.population_masks_)
        ) - np.log(self.population_prior_)
        dominated = np.sort(log_ratio_z)
        # LR(x) / LR(z) > γ  ⇔  log LR(z) < log LR(x) − log γ
        share = np.searchsorted(dominated, log_ratio_x - np.log(self.gamma), side="left") / len(dominated)
        return share + 0.5 / len(dominated) * expit(log_ratio_x)
