"""Membership inference metrics from raw scores: AUC, balanced accuracy, TPR at low FPR.

Everything is read off scikit-learn's ``roc_curve`` so that a saved ``scores.npz`` plus
``keep.npy`` re-scores to exactly the numbers in ``metrics.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

LOW_FPRS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, *, target_fpr: float) -> float:
    """TPR of the best operating point whose FPR does not exceed ``target_fpr``.

    Points of the ROC between two thresholds are not attainable by a threshold rule, so this
    takes the largest FPR ≤ target (no interpolation upwards). ``roc_curve`` always starts at
    (0, 0), so the answer exists.
    """
    allowed = fpr <= target_fpr
    return float(tpr[allowed].max())


def membership_metrics(
    scores: np.ndarray, is_member: np.ndarray, *, decision_threshold: float | None = None
) -> dict[str, Any]:
    """AUC, balanced accuracy and TPR at 1% / 0.1% FPR of one attack's scores.

    Parameters
    ----------
    scores:
        One value per candidate; higher = more likely a member.
    is_member:
        Ground truth from the ledger (evaluation only).
    decision_threshold:
        The attack's own hard-decision threshold (member when score ≥ it), if it has one.

    Returns
    -------
    dict
        ``auc``; ``balanced_accuracy`` at the attacker's own threshold (``None`` without one:
        a figure at a threshold read off the ledger is not the attacker's);
        ``balanced_accuracy_oracle`` at the best threshold on the ROC (chosen with the ledger,
        an upper bound, labelled as such); the two TPRs; ``members``, ``non_members``; and ``resolution_note``
        when there are too few non-members for an FPR of 1% or 0.1% to mean anything (TPR
        at such an FPR is then TPR at zero false positives).
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    if scores.shape != is_member.shape:
        raise ValueError(f"scores {scores.shape} and is_member {is_member.shape} differ in shape")
    members, non_members = int(is_member.sum()), int((~is_member).sum())
    result: dict[str, Any] = {"members": members, "non_members": non_members}
    if members == 0 or non_members == 0:
        result.update({"auc": None, "balanced_accuracy": None, "balanced_accuracy_oracle": None, **{key: None for key in LOW_FPRS}})
        result["resolution_note"] = "needs both members and non-members"
        return result
    if not np.all(np.isfinite(scores)):
        raise ValueError("attack scores contain NaN or infinity")
    fpr, tpr, _ = roc_curve(is_member, scores)
    result["auc"] = float(roc_auc_score(is_member, scores))
    result["balanced_accuracy_oracle"] = float(np.max((tpr + 1 - fpr) / 2))
    result["balanced_accuracy"] = None
    for key, target in LOW_FPRS.items():
        result[key] = tpr_at_fpr(fpr, tpr, target_fpr=target)
    if decision_threshold is not None:
        predicted = scores >= decision_threshold
        tpr_at = predicted[is_member].mean()
        tnr_at = (~predicted[~is_member]).mean()
        result["balanced_accuracy"] = float((tpr_at + tnr_at) / 2)
    unresolved = [label for label, needed in (("1%", 100), ("0.1%", 1000)) if non_members < needed]
    if unresolved:
        result["resolution_note"] = (
            f"{non_members} non-members: FPR {' and '.join(unresolved)} unresolvable "
            "(TPR there is TPR at zero false positives)"
        )
    return result


def roc_points(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR of scikit-learn's ROC (for plots)."""
    fpr, tpr, _ = roc_curve(np.asarray(is_member, dtype=bool), np.asarray(scores, dtype=np.float64))
    return fpr, tpr
