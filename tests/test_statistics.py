"""Bootstrap intervals, paired differences, seed means and resolvability (fl_mia.referee.statistics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from fl_mia.referee.metrics import membership_metrics
from fl_mia.referee.statistics import (
    auc_interval,
    bootstrap_intervals,
    mean_interval,
    non_members_needed,
    paired_difference,
    _statistics,
)


def _dataset(rng: np.random.Generator, *, members: int, non_members: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([rng.normal(shift, 1.0, members), rng.normal(0.0, 1.0, non_members)])
    return scores, np.r_[np.ones(members, bool), np.zeros(non_members, bool)]


def test_unweighted_statistics_equal_the_referees_point_estimates():
    rng = np.random.default_rng(3)
    scores, is_member = _dataset(rng, members=150, non_members=250, shift=1.0)
    scores = np.round(scores, 1)  # ties on both sides
    ones_m, ones_n = np.ones((1, is_member.sum())), np.ones((1, (~is_member).sum()))
    ours = _statistics(scores, is_member, ones_m, ones_n)
    reference = membership_metrics(scores, is_member)
    assert ours["auc"][0] == pytest.approx(reference["auc"])
    assert ours["tpr_at_1pct_fpr"][0] == pytest.approx(reference["tpr_at_1pct_fpr"])
    assert ours["tpr_at_0.1pct_fpr"][0] == pytest.approx(reference["tpr_at_0.1pct_fpr"])


def test_auc_interval_is_the_one_bootstrap_intervals_reports():
    rng = np.random.default_rng(6)
    scores, is_member = _dataset(rng, members=40, non_members=60, shift=0.5)
    assert auc_interval(scores, is_member, seed=3) == bootstrap_intervals(scores, is_member, seed=3)["auc"]


def test_auc_interval_covers_the_true_auc_about_95_percent_of_the_time():
    # Known AUC of two unit normals shifted by d: Φ(d / √2).
    shift = 0.8
    true_auc = norm.cdf(shift / np.sqrt(2))
    rng = np.random.default_rng(0)
    datasets = 200
    covered = 0
    for i in range(datasets):
        scores, is_member = _dataset(rng, members=80, non_members=120, shift=shift)
        low, high = auc_interval(scores, is_member, seed=i, resamples=500)
        covered += low <= true_auc <= high
    # Binomial sd of the coverage over 200 datasets is 1.5 points: ±3 sd around 95%.
    assert 0.905 <= covered / datasets <= 0.995, covered / datasets


def test_patient_resampling_widens_the_interval_when_slices_of_a_patient_agree():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(60), 5)  # 5 slices per patient, patients 0..29 members
    is_member = patients < 30
    patient_effect = rng.normal(0.0, 1.0, 60)[patients]
    scores = 0.5 * is_member + patient_effect + 0.1 * rng.normal(size=len(patients))
    by_slice = bootstrap_intervals(scores, is_member, seed=0)
    by_patient = bootstrap_intervals(scores, is_member, groups=patients, seed=0)
    assert by_patient["unit"] == "patient"
    width = lambda ci: ci["auc"][1] - ci["auc"][0]  # noqa: E731
    assert width(by_patient) > 1.5 * width(by_slice)


def test_intervals_are_reproducible_from_the_seed():
    rng = np.random.default_rng(2)
    scores, is_member = _dataset(rng, members=50, non_members=50, shift=0.5)
    assert bootstrap_intervals(scores, is_member, seed=7) == bootstrap_intervals(scores, is_member, seed=7)
    assert bootstrap_intervals(scores, is_member, seed=7) != bootstrap_intervals(scores, is_member, seed=8)


def test_tpr_at_an_unresolvable_fpr_has_no_interval_and_says_what_it_needs():
    rng = np.random.default_rng(4)
    scores, is_member = _dataset(rng, members=150, non_members=150, shift=1.0)
    ci = bootstrap_intervals(scores, is_member, seed=0)
    assert ci["tpr_at_1pct_fpr"] is not None
    assert ci["tpr_at_0.1pct_fpr"] is None
    assert ci["resolvability"]["tpr_at_0.1pct_fpr"] == {"resolvable": False, "non_members_needed": 1000}
    assert non_members_needed(0.01) == 100


def test_paired_difference_detects_a_better_attack_and_not_a_copy():
    rng = np.random.default_rng(5)
    is_member = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    signal = rng.normal(size=400) + 0.6 * is_member
    strong = signal + 0.8 * is_member
    weak = signal + 0.3 * rng.normal(size=400)
    better = paired_difference(strong, weak, is_member, seed=0)
    assert better["auc"]["difference"] > 0 and better["auc"]["significant"]
    same = paired_difference(weak, weak, is_member, seed=0)
    assert same["auc"]["difference"] == 0 and not same["auc"]["significant"]


def test_mean_interval_is_a_t_interval():
    result = mean_interval([0.6, 0.7, 0.8])
    assert result["mean"] == pytest.approx(0.7)
    # t(0.975, 2) = 4.303, sd = 0.1, n = 3
    assert result["ci"] == pytest.approx([0.7 - 4.3027 * 0.1 / np.sqrt(3), 0.7 + 4.3027 * 0.1 / np.sqrt(3)], abs=1e-4)
    assert mean_interval([0.5])["ci"] is None
