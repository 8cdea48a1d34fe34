"""Empirical ε from an attack's scores: Clopper–Pearson bounds, both directions, known cases."""

import math

import numpy as np
import pytest

from fl_mia.referee.dp_audit import clopper_pearson_lower, clopper_pearson_upper, empirical_epsilon
from fl_mia.seeding import rng_for


def test_pure_noise_scores_demonstrate_almost_no_epsilon():
    rng = rng_for(0, "audit-noise")
    scores = rng.standard_normal(2000)
    is_member = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    audit = empirical_epsilon(scores, is_member, delta=1e-5)
    # 1000 trials per class resolve rates to a few percent: anything above ~0.3 would be a false claim.
    assert 0.0 <= audit["epsilon_lower_bound"] < 0.3


def test_perfect_separation_gives_exactly_what_the_counts_allow():
    n, delta = 100, 1e-5
    scores = np.r_[np.ones(n), np.zeros(n)]
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    audit = empirical_epsilon(scores, is_member, delta=delta, confidence=0.95)
    # Closed forms at one-sided level 1 − 0.025: lower(n of n) = 0.025^(1/n), upper(0 of n) = 1 − 0.025^(1/n).
    lower = 0.025 ** (1 / n)
    assert audit["epsilon_lower_bound"] == pytest.approx(math.log((lower - delta) / (1 - lower)), rel=1e-9)
    assert audit["rate_lower"] == pytest.approx(lower) and audit["rate_upper"] == pytest.approx(1 - lower)


def test_bound_grows_with_the_number_of_candidates():
    small = empirical_epsilon(np.r_[np.ones(20), np.zeros(20)], np.r_[np.ones(20, bool), np.zeros(20, bool)], delta=1e-5)
    large = empirical_epsilon(np.r_[np.ones(500), np.zeros(500)], np.r_[np.ones(500, bool), np.zeros(500, bool)], delta=1e-5)
    assert large["epsilon_lower_bound"] > small["epsilon_lower_bound"] > 0


def test_scores_pointing_the_wrong_way_count_the_same():
    rng = rng_for(0, "audit-direction")
    is_member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    scores = rng.standard_normal(600) + 2.0 * is_member
    forward = empirical_epsilon(scores, is_member, delta=1e-5)
    backward = empirical_epsilon(-scores, is_member, delta=1e-5)
    assert forward["epsilon_lower_bound"] > 1.0
    assert backward["epsilon_lower_bound"] == pytest.approx(forward["epsilon_lower_bound"], rel=1e-9)


def test_large_delta_swallows_the_evidence():
    scores = np.r_[np.ones(50), np.zeros(50)]
    is_member = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    assert empirical_epsilon(scores, is_member, delta=0.99)["epsilon_lower_bound"] == 0.0


def test_clopper_pearson_bounds_cover_the_estimate_and_match_known_values():
    # 5 of 10 at one-sided 97.5%: the two-sided 95% interval (0.187, 0.813).
    assert clopper_pearson_lower(np.array([5]), 10, alpha=0.025)[0] == pytest.approx(0.187086, abs=1e-5)
    assert clopper_pearson_upper(np.array([5]), 10, alpha=0.025)[0] == pytest.approx(0.812914, abs=1e-5)
    assert clopper_pearson_lower(np.array([0]), 10, alpha=0.025)[0] == 0.0
    assert clopper_pearson_upper(np.array([10]), 10, alpha=0.025)[0] == 1.0


def test_one_class_only_has_no_bound():
    assert empirical_epsilon(np.zeros(4), np.ones(4, bool), delta=1e-5)["epsilon_lower_bound"] is None
