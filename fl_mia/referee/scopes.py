"""Which candidates a membership figure is computed on: per hospital, targeted, untargeted, overall; and the headline.

A dishonest server that sends hospitals different models puts their candidates' scores on
different scales (a gradient-ascent target's non-members can drop further in loss than the
other hospitals' members), so one ROC over all of them measures the mixture, not the attack.
Every attack is therefore scored per hospital; on the hospitals the threat targets
(``targeted``); on the rest (``untargeted``); and as the mean of the per-hospital AUCs
(``mean_per_hospital``). ``overall`` (every candidate in one ROC) is reported only where every
hospital received the same model; elsewhere ``overall_note`` says why it is absent.

:func:`headline` is the one figure every summary (verdict, console, compare, sweep, report)
reads: ``targeted`` when the threat sent hospitals different models, ``overall`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fl_mia.referee.metrics import LOW_FPRS, membership_metrics
from fl_mia.referee.statistics import bootstrap_intervals, mean_auc_interval, non_members_needed

SCOPES = ("targeted", "untargeted", "overall")


@dataclass(frozen=True)
class ScoringScope:
    """What the composition root tells the referee about the threat (never the ledger's business).

    ``targets``: the hospitals the threat targets (the poisoner's declaration, or
    ``threat.target_hospitals`` on an honest server); ``models_differed``: why hospitals were
    sent different models (``None``: every hospital received the same model every round).
    """

    targets: tuple[int, ...]
    models_differed: str | None = None

    @property
    def uniform_models(self) -> bool:
        return self.models_differed is None


def _scored(scores, is_member, groups, *, seed, threshold) -> dict[str, Any]:
    metrics = membership_metrics(scores, is_member, decision_threshold=threshold)
    metrics["ci"] = bootstrap_intervals(scores, is_member, groups=groups, seed=seed) if metrics["auc"] is not None else None
    return metrics


def scoped_metrics(
    scores: np.ndarray,
    is_member: np.ndarray,
    hospital: np.ndarray,
    *,
    scope: ScoringScope,
    groups: np.ndarray | None,
    seed: np.random.SeedSequence,
    threshold: float | None,
) -> dict[str, Any]:
    """Per-hospital, targeted, untargeted, mean-per-hospital and (uniform models only) overall metrics.

    ``groups`` is each score's resampling unit (its patient) for the bootstrap intervals; every
    scope is resampled from the same ``seed``, so two attacks' intervals share their resamples.
    """
    scores = np.asarray(scores, dtype=np.float64)
    hospital = np.asarray(hospital)

    def on(inside: np.ndarray) -> dict[str, Any] | None:
        if not inside.any():
            return None
        part = _scored(scores[inside], is_member[inside], None if groups is None else groups[inside], seed=seed, threshold=threshold)
        part["hospitals"] = sorted(int(k) for k in np.unique(hospital[inside]))
        return part

    targeted = np.isin(hospital, scope.targets)
    result: dict[str, Any] = {
        "per_hospital": {str(k): on(hospital == k) for k in np.unique(hospital)},
        "targeted": on(targeted),
        "untargeted": on(~targeted),
        "mean_per_hospital": mean_auc_interval(scores, is_member, hospital, groups=groups, seed=seed),
        "headline": "overall" if scope.uniform_models else "targeted",
    }
    if scope.uniform_models:
        result["overall"] = on(np.ones(len(scores), dtype=bool))
    else:
        result["overall_note"] = (
            f"no pooled figure: {scope.models_differed}, so the hospitals' scores are on different scales; "
            "read targeted (the hospitals the threat targets) or per_hospital"
        )
    return result


def headline_scope(result: dict[str, Any]) -> str:
    """The scope an attack's headline figure is read from (``overall`` in metrics.json files written before scopes)."""
    return result.get("headline") or "overall"


def headline(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """An attack's headline metrics: targeted when the threat sent hospitals different models, else overall.

    ``None`` for anything that is not a scored attack (the candidate set, the verdict, an
    attack without both classes in its headline scope).
    """
    if not isinstance(result, dict):
        return None
    scoped = result.get(headline_scope(result))
    if not isinstance(scoped, dict) or scoped.get("auc") is None:
        return None
    return scoped


def scored_attacks(privacy: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Attack name → its result, for every entry of a privacy section that has a headline figure."""
    return {name: result for name, result in (privacy or {}).items() if headline(result) is not None}


def resolvable_tpr(scoped: dict[str, Any] | None, key: str = "tpr_at_1pct_fpr") -> float | None:
    """A TPR at low FPR only where the scope's non-members resolve that FPR; ``None`` otherwise.

    Below ``1 / FPR`` non-members the figure is a TPR at zero false positives: tables leave it
    blank (said once in a caption) and figures leave it out.
    """
    if not scoped or scoped.get(key) is None:
        return None
    return scoped[key] if (scoped.get("non_members") or 0) >= non_members_needed(LOW_FPRS[key]) else None
