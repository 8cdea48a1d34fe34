"""RMIA beside LiRA on the tiny overfit setting of tests/test_attacks.py (no Ray, no smp)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fl_mia.attacker.predictions.base import TargetView, make_attack
from fl_mia.attacker.predictions.rmia import RMIAAttack, mean_true_class_probability
from tests.test_attacks import attack_cfg, control, separable  # noqa: F401  (fixtures)


def fitted_auc(name, setting):
    attacker, target, candidates, is_member = setting
    attack = make_attack(name, attack_cfg(), seed=0, classes=1).fit(attacker, candidates)
    return roc_auc_score(is_member, attack.score(TargetView(target), candidates)), attack


def test_rmia_is_at_least_as_strong_as_offline_lira_on_the_same_run(separable):
    rmia_auc, _ = fitted_auc("rmia", separable)
    lira_auc, _ = fitted_auc("lira_offline", separable)
    print(f"RMIA AUC {rmia_auc:.3f} vs LiRA offline AUC {lira_auc:.3f} on 32 members / 32 non-members")
    assert rmia_auc > 0.8
    assert rmia_auc >= lira_auc - 0.05


def test_rmia_is_at_chance_on_a_model_that_never_saw_the_members(control):
    rmia_auc, _ = fitted_auc("rmia", control)
    assert abs(rmia_auc - 0.5) <= 0.05


def test_rmia_reference_models_split_the_population_by_patient(separable):
    attacker, _, candidates, _ = separable
    _, attack = fitted_auc("rmia", separable)
    population = attacker.population
    assert attack.inclusion_.shape == (4, len(population))
    for patient in np.unique(population.patient_ids):
        rows = attack.inclusion_[:, population.patient_ids == patient]
        assert (rows == rows[:, :1]).all()  # a patient is in or out as a whole
    assert (attack.inclusion_.sum(0) == 2).all()  # each population sample OUT of two references
    assert len([key for key in attacker.shadows.trained if key.startswith("rmia-")]) == 4


def test_score_ranks_as_the_likelihood_ratio_and_breaks_ties_within_one_step(separable):
    attacker, target, candidates, _ = separable
    attack = RMIAAttack(num_references=4).fit(attacker, candidates)
    scores = attack.score(TargetView(target), candidates)
    ratio = np.log(mean_true_class_probability(TargetView(target).logits(candidates.images), candidates.masks)) - np.log(
        attack.candidate_prior_
    )
    assert (np.argsort(scores, kind="stable") == np.argsort(ratio, kind="stable")).all()
    assert scores.min() >= 0 and scores.max() < 1 + 1 / len(attacker.population)


def test_mean_true_class_probability_by_hand():
    logits = torch.tensor([[[[0.0, 2.0], [-2.0, 0.0]]]])  # one image, one channel, 2×2
    masks = np.array([[[1, 1], [0, 0]]])
    p = torch.sigmoid(torch.tensor([0.0, 2.0, 2.0, 0.0])).mean().item()  # p(y=0) = sigmoid(−z)
    assert mean_true_class_probability(logits, masks)[0] == pytest.approx(p, rel=1e-6)


def test_rmia_rejects_one_reference_model():
    with pytest.raises(ValueError, match="at least 2 reference"):
        RMIAAttack(num_references=1)
