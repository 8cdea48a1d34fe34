"""A defence's verdict: judged on every attack of the run, never on prediction attacks alone.

Under DP-SGD the prediction attacks may stay near chance while the update attacks — the
server's white-box view of each hospital's returned model, accumulated over rounds — do
not. The verdict therefore ranks every scored attack in the privacy section: prediction
attacks, update attacks at the last round and accumulated ones alike.
"""

from __future__ import annotations

from typing import Any

from fl_mia.referee.scopes import headline, headline_scope, scored_attacks
from fl_mia.referee.statistics import non_members_needed

# The bar defences are judged against: an attack above it is a leak worth
# reporting, whatever the mask-only confound of the candidate set.
AUC_BAR = 0.6


def _summary(name: str, result: dict[str, Any]) -> dict[str, Any]:
    shown = headline(result)
    audit = result.get("empirical_epsilon") or {}
    return {
        "attack": name,
        "kind": "update" if name.startswith("update.") else "prediction",
        "scope": headline_scope(result),
        "auc": shown["auc"],
        "tpr_at_1pct_fpr": shown.get("tpr_at_1pct_fpr"),
        "non_members": shown.get("non_members"),
        "empirical_epsilon": audit.get("epsilon_lower_bound"),
        "empirical_epsilon_unit": audit.get("unit", "slice"),
    }


def defence_verdict(privacy: dict[str, Any]) -> dict[str, Any] | None:
    """The strongest attack by AUC, by TPR at 1% FPR and by empirical ε, over every attack.

    ``privacy`` is metrics.json's privacy section (attack name → metrics). Returns None when
    no attack was scored.
    """
    attacks = {name: _summary(name, result) for name, result in scored_attacks(privacy).items()}
    if not attacks:
        return None
    by_auc = max(attacks.values(), key=lambda a: a["auc"])
    # The headline scope's non-members (targeted hospitals only, when the models differed).
    non_members = by_auc["non_members"]
    # TPR at 1% FPR is a number only where the non-members can resolve it; else no attack "wins" there.
    tpr_resolvable = non_members is None or non_members >= non_members_needed(0.01)
    by_tpr = (
        max(attacks.values(), key=lambda a: a["tpr_at_1pct_fpr"] if a["tpr_at_1pct_fpr"] is not None else -1.0)
        if tpr_resolvable
        else None
    )
    audited = [a for a in attacks.values() if a["empirical_epsilon"] is not None]
    return {
        "attacks_counted": sorted(attacks),
        "update_attacks_counted": sum(a["kind"] == "update" for a in attacks.values()),
        "strongest_by_auc": by_auc,
        "strongest_at_low_fpr": by_tpr,
        "non_members_needed_at_1pct_fpr": None if tpr_resolvable else non_members_needed(0.01),
        "largest_empirical_epsilon": max(audited, key=lambda a: a["empirical_epsilon"]) if audited else None,
        "auc_bar": AUC_BAR,
        "attacks_above_bar": sorted(name for name, a in attacks.items() if a["auc"] > AUC_BAR),
    }


def verdict_line(verdict: dict[str, Any] | None) -> str | None:
    """One sentence for the console: the strongest attack under this run's defences."""
    if not verdict:
        return None
    best = verdict["strongest_by_auc"]
    counted = len(verdict["attacks_counted"])
    scope = "" if best.get("scope", "overall") == "overall" else f" on the {best['scope']} hospitals"
    line = (
        f"strongest attack under this defence{scope}: {best['attack']}, AUC {best['auc']:.3f}"
        f" (of {counted} attacks counted, {verdict['update_attacks_counted']} on updates)"
    )
    low = verdict["strongest_at_low_fpr"]
    if low is None:
        line += f"; TPR@1%FPR — (needs ≥{verdict['non_members_needed_at_1pct_fpr']} non-members)"
    elif low["tpr_at_1pct_fpr"] is not None:
        line += f"; best TPR@1%FPR {low['tpr_at_1pct_fpr']:.3f} ({low['attack']})"
    audited = verdict["largest_empirical_epsilon"]
    if audited is not None:
        line += f"; largest empirical ε {audited['empirical_epsilon']:.2f} per {audited.get('empirical_epsilon_unit', 'slice')} ({audited['attack']})"
    above = verdict["attacks_above_bar"]
    line += f"; above AUC {verdict['auc_bar']}: {', '.join(above)}" if above else f"; every attack at AUC ≤ {verdict['auc_bar']}"
    return line
