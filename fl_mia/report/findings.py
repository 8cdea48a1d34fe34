"""The report's answer in words: Findings generated from the numbers, and one threat × defence matrix.

Every figure a sentence shows is read from the report data (``report.json``) and formatted
here, never computed here: a test checks that each number in Findings is one of the JSON's.
Per threat: its matched signal's targeted AUC and TPR at 1% FPR (seeds pooled, bootstrap by
patient), the paired Δ against its own baseline, and its Dice cost. Per defence (any cell
compared with a baseline that is not a threat): the Δ of the baseline's strongest attack,
every attack counted, and Δ Dice, or "nothing to defend here" when that attack is at chance.
"""

from __future__ import annotations

from typing import Any

from fl_mia.referee.statistics import non_members_needed
from fl_mia.report.collect import epsilon_label, epsilon_text

ONE_PERCENT_NEEDS = non_members_needed(0.01)


def _interval(value: float, ci: list[float] | None, *, signed: bool = False) -> str:
    number = f"{value:+.3f}" if signed else f"{value:.3f}"
    if ci is None:
        return number
    return f"{number} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if signed else f"{number} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _pooled_figures(entry: dict[str, Any]) -> str:
    """``AUC a [l, h] and TPR@1%FPR t [l, h]`` of an attack's seeds-pooled headline candidates."""
    pooled = entry["pooled"]
    ci = pooled.get("ci") or {}
    text = f"AUC {_interval(pooled['auc'], ci.get('auc'))}"
    if pooled["non_members"] >= ONE_PERCENT_NEEDS and pooled.get("tpr_at_1pct_fpr") is not None:
        text += f" and TPR@1%FPR {_interval(pooled['tpr_at_1pct_fpr'], ci.get('tpr_at_1pct_fpr'))}"
    else:
        text += f" (TPR@1%FPR unresolvable: {pooled['non_members']} non-members)"
    return text + f" on {pooled['members']} members / {pooled['non_members']} non-members"


def _delta(paired: dict[str, Any] | None, baseline: str) -> str:
    if paired is None:
        return f"no paired Δ against {baseline} (it lacks this attack, or the two were judged on different candidates)"
    return f"Δ AUC against {baseline} {_auc_difference(paired['auc'])}"


def _auc_difference(auc: dict[str, Any]) -> str:
    """``+0.131 [+0.07, +0.19] (interval excludes 0; half-width 0.057)`` of a paired result's AUC."""
    verdict = "excludes 0" if auc["significant"] else "contains 0"
    return f"{_interval(auc['difference'], auc['ci'], signed=True)} (interval {verdict}; half-width {auc['half_width']:.3f})"


def _against_best(paired: dict[str, Any] | None, lead: str) -> str:
    """``; <lead> <baseline attack> (AUC …), Δ AUC …``: a matched signal against the best its baseline had."""
    if paired is None:
        return ""
    return f"; {lead} {paired['baseline_attack']} (AUC {paired['baseline_auc']:.3f}), Δ AUC {_auc_difference(paired['auc'])}"


def _against_strongest(paired: dict[str, Any] | None, baseline: str) -> str:
    """The threat's matched signal against the best the honest server had on the same candidates."""
    return _against_best(paired, f"against {baseline}'s strongest attack on the same candidates,")


def _rounds(rounds: list[int]) -> str:
    """``round 10``, ``rounds 8–10`` or ``rounds 2, 5``."""
    if len(rounds) == 1:
        return f"round {rounds[0]}"
    if rounds == list(range(rounds[0], rounds[-1] + 1)):
        return f"rounds {rounds[0]}–{rounds[-1]}"
    return "rounds " + ", ".join(map(str, rounds))


def _in_attack_rounds(paired: dict[str, Any] | None, baseline: str) -> str:
    """The matched signal against the honest server's best over the same rounds: does poisoning sharpen them?"""
    if paired is None:
        return ""
    lead = f"over its attack {_rounds(paired['rounds'])} alone, against {baseline}'s strongest update signal summed over the same rounds,"
    return _against_best(paired, lead)


def _audit(summary: dict[str, Any]) -> str:
    """The DP audit: did any attack's empirical ε (a 95% lower bound) exceed the accountant's, in any seed?"""
    audit = summary.get("dp_audit")
    if not audit:
        return ""
    closest = audit["closest"]
    if closest is None:
        return f" DP audit: no attack gave an empirical ε per {audit['unit']}."
    where = (
        f"largest empirical ε per {audit['unit']} (one trial per {audit['unit']}, 95% lower bound, every attack) "
        f"{closest['largest_empirical_epsilon']:.3f} ({closest['attack']}, seed {closest['seed']}) against the accountant's "
        f"{closest['accountant_epsilon']:.3f}"
    )
    if audit["all_below"]:
        return f" DP audit: {where}; at or below the accountant's ε in all {len(audit['seeds'])} seeds."
    seeds = ", ".join(map(str, audit["seeds_above"]))
    return f" DP audit FAILED: {where}; above the accountant's ε in seed {seeds}: the DP implementation or its accounting is broken."


def _rate(part: dict[str, Any], rounds: str) -> str:
    return f"{part['flagged']} of {part['rounds']} {rounds} ({_interval(part['rate'], part['ci'])})"


def _detector(summary: dict[str, Any]) -> str:
    """Would the hospitals notice? Their detector's flags over attacked and honest rounds, seeds pooled."""
    detection = summary.get("detection")
    if not detection:
        return ""
    attacked, honest = detection["detection"], detection["false_alarms"]
    parts = [f"flagged {_rate(attacked, 'attacked rounds')}"] if attacked["rounds"] else []
    parts += [f"false alarms on {_rate(honest, 'honest rounds')}"] if honest["rounds"] else []
    return f" Hospitals' detector (seeds pooled): {'; '.join(parts)}." if parts else ""


def _integrity(summary: dict[str, Any]) -> str:
    """An integrity threat's own figure: how often the trigger forces its mask, beside the clean Dice."""
    integrity = summary.get("integrity")
    if not integrity:
        return ""
    sent, final = integrity["success_sent_model"], integrity["success_final_global"]
    if sent["mean"] is None or final["mean"] is None:
        return " As an integrity threat, its trigger's attack success rate was not measured."
    return (
        f" As an integrity threat, its trigger's attack success rate (triggered test scans whose output matches its mask at "
        f"Dice ≥ {integrity['obeys_at_dice']}) is {_interval(sent['mean'], sent['ci'])} on the model sent and "
        f"{_interval(final['mean'], final['ci'])} on the final global model."
    )


def _dice(summary: dict[str, Any]) -> str:
    dice = summary["dice"]
    text = f"Dice {_interval(dice['mean'], dice['ci'])}" if dice["mean"] is not None else "Dice not measured"
    difference = summary.get("dice_difference") or {}
    if difference.get("mean") is not None:
        text += f", Δ Dice {_interval(difference['mean'], difference['ci'], signed=True)}"
    ratio = summary.get("dice_pooled_ratio") or {}
    if ratio.get("mean") is not None:
        text += f", pooled Dice {_interval(ratio['mean'], ratio['ci'])}× the baseline's (seed by seed)"
    return text


def _privacy_budget(summary: dict[str, Any]) -> str:
    """`` At ε per patient (DP-SGD) 7.990.``: every ε the cell spent, each named by the unit it protects."""
    budgets = [(name, figure) for name, figure in sorted((summary.get("epsilon") or {}).items()) if figure.get("mean") is not None]
    if not budgets:
        return ""
    return " Privacy spent: " + "; ".join(f"{epsilon_label(name)} {epsilon_text(figure, _interval)}" for name, figure in budgets) + "."


def _at_chance(entry: dict[str, Any] | None) -> bool:
    ci = ((entry or {}).get("pooled") or {}).get("ci") or {}
    return bool(ci.get("auc")) and ci["auc"][0] <= 0.5 <= ci["auc"][1]


def threat_finding(summary: dict[str, Any]) -> str:
    threat = summary["threat"]
    targets = ", ".join(map(str, threat.get("targets") or []))
    signal = summary.get("matched_signal")
    head = f"{summary['label']} ({threat.get('poisoning')}, targets hospital {targets})"
    declared = threat.get("matched_signals") or []
    what = "its matched signal"
    if signal is None and not declared and summary.get("strongest_attack"):
        signal, what = summary["strongest_attack"], "it declares no matched signal; its strongest attack"
    if signal is None:
        return f"{head}: none of its matched signals ({', '.join(declared)}) was scored. {_dice(summary)}."
    entry = summary["attacks"][signal]
    if entry.get("pooled") is None:
        return f"{head}: {what} {signal} has no seeds-pooled score. {_dice(summary)}."
    text = f"{head}: {what} {signal}, on the targeted candidates, reaches {_pooled_figures(entry)}"
    covered = threat.get("candidates_covered")
    if covered is not None and covered < 1:
        text += f" (its detectors tested a share {covered:.3f} of the candidates; the untested tie at 0, which caps the AUC)"
    if summary.get("baseline"):
        same_signal = (summary.get("paired_vs_baseline") or {}).get(signal)
        strongest = summary.get("matched_vs_baseline_strongest")
        if same_signal is not None or strongest is None:  # an active attack's own signal has no honest twin
            text += "; " + _delta(same_signal, summary["baseline"])
        text += _against_strongest(strongest, summary["baseline"])
        text += _in_attack_rounds(summary.get("matched_in_attack_rounds"), summary["baseline"])
    else:
        text += "; no baseline cell to pair it with"
    return text + f". {_dice(summary)}.{_privacy_budget(summary)}{_integrity(summary)}{_audit(summary)}{_detector(summary)}"


def defence_finding(summary: dict[str, Any], baseline: dict[str, Any]) -> str:
    strongest = baseline.get("strongest_attack")
    if strongest is None:
        return f"{summary['label']} against {baseline['label']}: no attack scored on the baseline. {_dice(summary)}."
    base_entry = baseline["attacks"][strongest]
    text = f"{summary['label']} against {baseline['label']}: the baseline's strongest attack, {strongest} ({_pooled_figures(base_entry)})"
    if _at_chance(base_entry):
        text += ", is at chance there: nothing to defend here"
    else:
        text += "; " + _delta((summary.get("paired_vs_baseline") or {}).get(strongest), baseline["label"])
    mine = summary.get("strongest_attack")
    if mine is not None:
        text += f"; the strongest attack here is {mine}, {_pooled_figures(summary['attacks'][mine])}"
    return text + f". {_dice(summary)}.{_privacy_budget(summary)}{_integrity(summary)}{_audit(summary)}{_detector(summary)}"


def baseline_finding(summary: dict[str, Any]) -> str:
    strongest = summary.get("strongest_attack")
    if strongest is None:
        return f"{summary['label']} (a baseline): no attack has a seeds-pooled score. {_dice(summary)}."
    entry = summary["attacks"][strongest]
    chance = " (at chance)" if _at_chance(entry) else ""
    return f"{summary['label']} (a baseline): strongest attack {strongest}{chance}, {_pooled_figures(entry)}. {_dice(summary)}.{_audit(summary)}{_detector(summary)}"


def findings(data: dict[str, Any]) -> list[str]:
    """One sentence per cell: threats first, then defences and other cells, then baselines."""
    by_label = {g["label"]: g for g in data["groups"]}
    threats, defences, baselines = [], [], []
    for summary in data["groups"]:
        baseline = by_label.get(summary.get("baseline") or "")
        if summary.get("threat"):
            threats.append(threat_finding(summary))
        elif baseline is not None:
            defences.append(defence_finding(summary, baseline))
        else:
            baselines.append(baseline_finding(summary))
    legacy = []
    if data.get("legacy_scoring"):
        legacy = [
            "These results predate targeted scoring: every figure pools all hospitals' candidates, those of hospitals the "
            "server sent other models included, and each cell is compared with the first cell, not its own baseline. "
            "Rerun the suite for answers scored on the targeted hospitals (docs/statistics.md)."
        ]
    return legacy + threats + defences + baselines


def status_line(data: dict[str, Any]) -> str | None:
    """A suite with missing, failed or running cells says so first, naming them."""
    absent = data.get("failed_cells") or []
    if not absent:
        return None
    names = "; ".join(f"{c['name']} ({c.get('state') or 'failed'})" for c in absent)
    return f"Incomplete: {len(absent)} cell(s) have no result and are left out of every figure below: {names}."


def strongest_matrix(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows = the first axis, columns = the second (one column for a one-axis suite): each cell's strongest attack."""
    groups = data["groups"]
    axes = list(groups[0]["axes"]) if groups else []
    first = axes[0] if axes else None
    second = axes[1] if len(axes) > 1 else None
    rows_values = list(dict.fromkeys(g["axes"].get(first, g["label"]) for g in groups)) if first else [g["label"] for g in groups]
    columns = list(dict.fromkeys(g["axes"][second] for g in groups)) if second else ["strongest attack"]
    index = {(g["axes"].get(first, g["label"]) if first else g["label"], g["axes"][second] if second else "strongest attack"): g for g in groups}
    rows = []
    for r in rows_values:
        row = [r]
        for c in columns:
            group = index.get((r, c))
            name = (group or {}).get("strongest_attack")
            if name is None:
                row.append("")
                continue
            pooled = group["attacks"][name]["pooled"]
            row.append(f"{name}: {_interval(pooled['auc'], (pooled.get('ci') or {}).get('auc'))}")
        rows.append(row)
    corner = f"{first} \\ {second}" if second else (first or "cell")
    return [corner, *columns], rows
