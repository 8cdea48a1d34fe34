"""Uncertainty of membership metrics: bootstrap intervals, paired differences, seeds, resolvability.

One run's AUC on a few hundred candidates has a standard error of several hundredths, and a
TPR at 1% FPR read off fewer than 100 non-members is a TPR at zero false positives. This
module puts a 95% interval on every figure the referee reports and says when a figure
cannot be resolved at all.

Bootstrap (percentile intervals). Members and non-members are resampled separately, so
every resample keeps both sides; where candidates carry patient ids, whole patients are
resampled (their slices are not independent: two slices of one patient leak together).
Paired comparisons resample the same units for both score arrays, so the interval is that
of the difference on the same candidates. Everything is vectorised over resamples: a
thousand resamples of a few hundred candidates take milliseconds.

Resolvability: an FPR of ``f`` needs at least ``ceil(1 / f)`` non-members (one false
positive is then at most ``f``). Below that, TPR "at f" is TPR at zero false positives,
and is reported as unresolvable (shown "—") with the number of non-members needed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from fl_mia.referee.metrics import LOW_FPRS

CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000


def non_members_needed(target_fpr: float) -> int:
    """Fewest non-members for which one false positive is an FPR of at most ``target_fpr``."""
    return math.ceil(1.0 / target_fpr - 1e-9)


def resolvability(non_members: int) -> dict[str, dict[str, Any]]:
    """Per TPR key: whether ``non_members`` resolve its FPR, and how many it needs."""
    return {
        key: {"resolvable": non_members >= non_members_needed(target), "non_members_needed": non_members_needed(target)}
        for key, target in LOW_FPRS.items()
    }


def _group_weights(groups: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """``[resamples, n]`` multiplicity of each item when its groups are drawn with replacement."""
    unique, group_of_item = np.unique(groups, return_inverse=True)
    drawn = rng.integers(0, len(unique), size=(resamples, len(unique)))
    flat = (drawn + len(unique) * np.arange(resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=resamples * len(unique)).reshape(resamples, len(unique)).astype(np.float64)
    return counts[:, group_of_item]


def _weighted_auc(member_scores: np.ndarray, non_member_scores: np.ndarray, wm: np.ndarray, wn: np.ndarray) -> np.ndarray:
    """AUC (ties count one half) of every resample, given per-item multiplicities ``wm``, ``wn``."""
    order = np.argsort(non_member_scores, kind="stable")
    sorted_scores = non_member_scores[order]
    cumulative = np.concatenate([np.zeros((len(wn), 1)), np.cumsum(wn[:, order], axis=1)], axis=1)
    below = cumulative[:, np.searchsorted(sorted_scores, member_scores, side="left")]
    up_to = cumulative[:, np.searchsorted(sorted_scores, member_scores, side="right")]
    wins = (wm * (below + 0.5 * (up_to - below))).sum(axis=1)
    return wins / (wm.sum(axis=1) * wn.sum(axis=1))


def _weighted_tpr_at_fpr(
    member_scores: np.ndarray, non_member_scores: np.ndarray, wm: np.ndarray, wn: np.ndarray, *, target_fpr: float
) -> np.ndarray:
    """TPR of the lowest threshold rule (member when score > v) whose FPR stays ≤ ``target_fpr``.

    The same operating point :func:`fl_mia.referee.metrics.tpr_at_fpr` reads off the ROC.
    """
    values, inverse = np.unique(non_member_scores, return_inverse=True)
    one_hot = np.zeros((len(non_member_scores), len(values)))
    one_hot[np.arange(len(non_member_scores)), inverse] = 1.0
    per_value = wn @ one_hot  # [resamples, distinct values]: weight of the non-members at each value
    # False positives when the threshold sits just below each value, from the highest value down.
    false_positives = np.cumsum(per_value[:, ::-1], axis=1)[:, ::-1]
    budget = target_fpr * wn.sum(axis=1, keepdims=True)
    over_budget = false_positives > budget + 1e-9
    # The highest non-member value whose inclusion breaks the budget: the threshold must exceed it.
    has_cut = over_budget.any(axis=1)
    last = np.where(has_cut, len(values) - 1 - np.argmax(over_budget[:, ::-1], axis=1), 0)
    cut = np.where(has_cut, values[last], -np.inf)
    caught = (wm * (member_scores[None, :] > cut[:, None])).sum(axis=1)
    return caught / wm.sum(axis=1)


def _interval(samples: np.ndarray, level: float) -> list[float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return [float(low), float(high)]


def _resample_weights(
    is_member: np.ndarray, groups: np.ndarray | None, *, seed: np.random.SeedSequence | int, resamples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicities of members and of non-members, each side resampled on its own."""
    rng = np.random.default_rng(seed)
    groups = np.arange(len(is_member)) if groups is None else np.asarray(groups)
    return (
        _group_weights(groups[is_member], rng, resamples),
        _group_weights(groups[~is_member], rng, resamples),
    )


def _statistics(scores: np.ndarray, is_member: np.ndarray, wm: np.ndarray, wn: np.ndarray) -> dict[str, np.ndarray]:
    member_scores, non_member_scores = scores[is_member], scores[~is_member]
    result = {"auc": _weighted_auc(member_scores, non_member_scores, wm, wn)}
    for key, target in LOW_FPRS.items():
        result[key] = _weighted_tpr_at_fpr(member_scores, non_member_scores, wm, wn, target_fpr=target)
    return result


def _check(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    if scores.shape != is_member.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and is_member {is_member.shape} must be matching 1-D arrays")
    if not np.all(np.isfinite(scores)):
        raise ValueError("attack scores contain NaN or infinity")
    return scores, is_member


def auc_interval(
    scores: np.ndarray,
    is_member: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    seed: np.random.SeedSequence | int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE_LEVEL,
) -> list[float]:
    """The AUC's percentile interval alone (same resamples as :func:`bootstrap_intervals`)."""
    scores, is_member = _check(scores, is_member)
    wm, wn = _resample_weights(is_member, groups, seed=seed, resamples=resamples)
    return _interval(_weighted_auc(scores[is_member], scores[~is_member], wm, wn), level)


def mean_auc_interval(
    scores: np.ndarray,
    is_member: np.ndarray,
    strata: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    seed: np.random.SeedSequence | int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE_LEVEL,
) -> dict[str, Any] | None:
    """Mean of the per-stratum AUCs (e.g. per hospital) with a stratified bootstrap interval.

    Each stratum is resampled on its own (members and non-members apart, by ``groups``), so no
    ROC ever mixes two strata's scores; strata without both classes are left out.
    """
    scores, is_member = _check(scores, is_member)
    strata = np.asarray(strata)
    unit = "candidate" if groups is None else "patient"
    groups = np.arange(len(scores)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    points, samples, counted = [], [], []
    for stratum in np.unique(strata):
        inside = strata == stratum
        m, n = is_member & inside, ~is_member & inside
        if not m.any() or not n.any():
            continue
        wm, wn = _group_weights(groups[m], rng, resamples), _group_weights(groups[n], rng, resamples)
        samples.append(_weighted_auc(scores[m], scores[n], wm, wn))
        points.append(_weighted_auc(scores[m], scores[n], np.ones((1, m.sum())), np.ones((1, n.sum())))[0])
        counted.append(stratum.item() if hasattr(stratum, "item") else stratum)
    if not points:
        return None
    return {
        "auc": float(np.mean(points)),
        "ci": _interval(np.mean(samples, axis=0), level),
        "strata": counted,
        "level": level,
        "unit": unit,
    }


def bootstrap_intervals(
    scores: np.ndarray,
    is_member: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    seed: np.random.SeedSequence | int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE_LEVEL,
) -> dict[str, Any] | None:
    """Percentile bootstrap intervals of AUC and of TPR at each low FPR.

    Parameters
    ----------
    scores, is_member:
        One score per candidate (higher = more likely a member) and the ledger's truth.
    groups:
        Resampling unit of each candidate (e.g. its patient); ``None`` resamples candidates.
    seed:
        Seeds the resampling: the same seed gives the same interval.

    Returns
    -------
    dict or None
        ``{"auc": [low, high], "tpr_at_1pct_fpr": [low, high] | None, ...}`` plus
        ``level``, ``resamples``, ``unit`` and ``resolvability``; a TPR whose FPR the
        non-members cannot resolve has no interval (``None``). ``None`` when one side is empty.
    """
    scores, is_member = _check(scores, is_member)
    members, non_members = int(is_member.sum()), int((~is_member).sum())
    if members == 0 or non_members == 0:
        return None
    wm, wn = _resample_weights(is_member, groups, seed=seed, resamples=resamples)
    samples = _statistics(scores, is_member, wm, wn)
    resolved = resolvability(non_members)
    result: dict[str, Any] = {"auc": _interval(samples["auc"], level)}
    for key in LOW_FPRS:
        result[key] = _interval(samples[key], level) if resolved[key]["resolvable"] else None
    result.update({"level": level, "resamples": resamples, "unit": "candidate" if groups is None else "patient"})
    result["resolvability"] = resolved
    return result


def paired_difference(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    is_member: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    seed: np.random.SeedSequence | int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE_LEVEL,
) -> dict[str, Any]:
    """Difference ``a − b`` of AUC and TPRs on the same candidates, with a paired bootstrap interval.

    Both arrays are scored on every resample of the same units, so what the candidates have
    in common cancels. ``significant`` is True where the interval excludes zero.
    """
    scores_a, is_member = _check(scores_a, is_member)
    scores_b, _ = _check(scores_b, is_member)
    wm, wn = _resample_weights(is_member, groups, seed=seed, resamples=resamples)
    samples_a = _statistics(scores_a, is_member, wm, wn)
    samples_b = _statistics(scores_b, is_member, wm, wn)
    ones_m, ones_n = np.ones((1, int(is_member.sum()))), np.ones((1, int((~is_member).sum())))
    point_a, point_b = _statistics(scores_a, is_member, ones_m, ones_n), _statistics(scores_b, is_member, ones_m, ones_n)
    resolved = resolvability(int((~is_member).sum()))
    result: dict[str, Any] = {"level": level, "resamples": resamples, "unit": "candidate" if groups is None else "patient"}
    for key in samples_a:
        if key != "auc" and not resolved[key]["resolvable"]:
            result[key] = {"difference": None, "ci": None, "significant": None, **resolved[key]}
            continue
        low, high = _interval(samples_a[key] - samples_b[key], level)
        result[key] = {
            "difference": float(point_a[key][0] - point_b[key][0]),
            "ci": [low, high],
            "significant": bool(low > 0 or high < 0),
        }
    return result


def mean_interval(
    values: list[float] | np.ndarray, *, level: float = CONFIDENCE_LEVEL, bounds: tuple[float, float] | None = (0.0, 1.0)
) -> dict[str, Any]:
    """Mean across seeds with a Student-t interval (none from a single seed).

    ``bounds`` clips the interval to the metric's range (AUC, TPR and Dice live in [0, 1]; a
    t-interval over three seeds can reach past it); ``None`` for unbounded figures such as ε.
    """
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = len(values)
    if n == 0:
        return {"mean": None, "ci": None, "n": 0}
    mean = float(values.mean())
    if n == 1:
        return {"mean": mean, "ci": None, "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2.0, df=n - 1) * values.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "ci": [low, high], "n": n}


def format_with_interval(value: float | None, ci: list[float] | None, *, digits: int = 3) -> str:
    """``0.712 [0.65, 0.77]``; ``—`` when there is no value."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    if ci is not None:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text
