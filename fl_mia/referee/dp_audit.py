"""Empirical ε: a statistical lower bound on ε from one attack's scores (DP auditing).

An (ε, δ)-DP training mechanism bounds every membership test: for any rejection region,
TPR ≤ e^ε·FPR + δ, and the same with members and non-members swapped and with the test
complemented (Kairouz et al. 2015). Reading that backwards, an attack that reaches some
(TPR, FPR) proves ε ≥ log((TPR − δ)/FPR) — the DP auditing bound of Jagielski, Ullman and
Oprea (NeurIPS 2020) and Nasr et al. (S&P 2021). Rates measured on a finite candidate set
are estimates, so, as those papers do, the bound uses a Clopper–Pearson lower confidence
bound on the numerator's rate and an upper bound on the denominator's.

What the number means here: each candidate is treated as one independent trial of the
membership game (the auditing papers train one model per trial; we score many candidates on
one model, a common, cheaper, heuristic audit). With ``confidence`` = 0.95 each of the two
rates is bounded one-sidedly at 97.5%, so both hold together with probability ≥ 95%
(Bonferroni), for the threshold reported; the maximum over thresholds is not corrected for
multiple testing, so read it as an estimate of how much leakage the attack demonstrates,
not as a certificate. It is never above what the counts can show: with n members and m
non-members perfectly separated, the bound is log((lower(n of n) − δ)/upper(0 of m)).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import beta

from fl_mia.referee.scopes import headline

DEFAULT_CONFIDENCE = 0.95


def clopper_pearson_lower(successes: np.ndarray, trials: int, *, alpha: float) -> np.ndarray:
    """One-sided (1 − alpha) lower confidence bound on a binomial rate (0 where successes = 0)."""
    successes = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(alpha, successes, trials - successes + 1)
    return np.where(successes > 0, bound, 0.0)


def clopper_pearson_upper(successes: np.ndarray, trials: int, *, alpha: float) -> np.ndarray:
    """One-sided (1 − alpha) upper confidence bound on a binomial rate (1 where successes = trials)."""
    successes = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(1 - alpha, successes + 1, trials - successes)
    return np.where(successes < trials, bound, 1.0)


def _threshold_counts(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members and non-members with score ≥ t, for every distinct t (and +∞: nobody flagged)."""
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    members = np.sort(scores[is_member])
    non_members = np.sort(scores[~is_member])
    flagged_members = len(members) - np.searchsorted(members, thresholds, side="left")
    flagged_non_members = len(non_members) - np.searchsorted(non_members, thresholds, side="left")
    return thresholds, flagged_members, flagged_non_members


def empirical_epsilon(
    scores: np.ndarray, is_member: np.ndarray, *, delta: float, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, Any]:
    """The largest ε lower bound any threshold on ``scores`` demonstrates.

    Parameters
    ----------
    scores:
        One value per candidate; higher = more likely a member.
    is_member:
        Ground truth from the ledger.
    delta:
        The δ of the guarantee being audited.
    confidence:
        Joint confidence of the two Clopper–Pearson bounds at one threshold.

    Returns
    -------
    dict
        ``epsilon_lower_bound`` (≥ 0; 0 when no threshold shows anything), ``delta``,
        ``confidence``, and the operating point that gives it: ``threshold``, ``test``
        (which of the four symmetric tests), ``rate_lower`` and ``rate_upper`` (the
        bounded numerator and denominator rates). ``None`` bounds without both classes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    if scores.shape != is_member.shape:
        raise ValueError(f"scores {scores.shape} and is_member {is_member.shape} differ in shape")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    result: dict[str, Any] = {"delta": float(delta), "confidence": float(confidence)}
    positives, negatives = int(is_member.sum()), int((~is_member).sum())
    if positives == 0 or negatives == 0:
        return {**result, "epsilon_lower_bound": None}
    alpha = (1 - confidence) / 2  # Bonferroni over the two rates
    thresholds, tp, fp = _threshold_counts(scores, is_member)
    fn, tn = positives - tp, negatives - fp
    # DP is symmetric in the two neighbouring datasets and closed under complementing the test:
    # each (numerator, denominator) pair below is one bound TPR-like ≤ e^ε·FPR-like + δ.
    tests = {
        "members above threshold": (tp, positives, fp, negatives),
        "non-members below threshold": (tn, negatives, fn, positives),
        "non-members above threshold": (fp, negatives, tp, positives),
        "members below threshold": (fn, positives, tn, negatives),
    }
    best: dict[str, Any] = {"epsilon_lower_bound": 0.0, "threshold": None, "test": None, "rate_lower": None, "rate_upper": None}
    for test, (hits, hit_trials, misses, miss_trials) in tests.items():
        lower = clopper_pearson_lower(hits, hit_trials, alpha=alpha)
        upper = clopper_pearson_upper(misses, miss_trials, alpha=alpha)
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(lower > delta, np.log((lower - delta) / upper), -np.inf)
        i = int(np.argmax(bound))
        if bound[i] > best["epsilon_lower_bound"]:
            best = {
                "epsilon_lower_bound": float(bound[i]),
                "threshold": float(thresholds[i]),
                "test": test,
                "rate_lower": float(lower[i]),
                "rate_upper": float(upper[i]),
            }
    return {**result, **best}


def audit_against_accountant(privacy: dict[str, Any], *, accountant_epsilon: float, unit: str) -> dict[str, Any]:
    """The largest empirical ε of any attack, at the accountant's unit, beside the accountant's ε.

    ``unit`` 'patient': each candidate patient is one trial (its score the mean of its slices',
    ``privacy[attack]["empirical_epsilon"]``); 'slice': each candidate slice
    (``privacy[attack]["empirical_epsilon_slices"]``). Read on each attack's headline candidates. A
    lower bound above the accountant's ε (both at δ = 1e-5) means the DP implementation, or its
    accounting, is broken.
    """
    found = []
    for attack, result in privacy.items():
        if headline(result) is None:
            continue
        audit = result.get("empirical_epsilon") if unit == "patient" else result.get("empirical_epsilon_slices")
        if audit and audit.get("epsilon_lower_bound") is not None:
            found.append((audit["epsilon_lower_bound"], attack))
    largest, attack = max(found, default=(None, None))
    return {
        "unit": unit,
        "trial": "one candidate patient (mean of its slices' scores)" if unit == "patient" else "one candidate slice",
        "delta": 1e-5,
        "confidence": DEFAULT_CONFIDENCE,
        "accountant_epsilon": accountant_epsilon,
        "largest_empirical_epsilon": largest,
        "attack": attack,
        "empirical_below_accountant": None if largest is None else bool(largest <= accountant_epsilon),
    }
