"""A finished run's summary on the terminal: the utility table, the membership table, the verdict."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table

from fl_mia.referee.scopes import headline, headline_scope, scored_attacks
from fl_mia.referee.statistics import format_with_interval
from fl_mia.referee.verdict import verdict_line

TABLE_KEYS = ("dice", "iou", "dice_pooled", "dice_lesion_images", "loss")


def summary_table(metrics: dict[str, Any]) -> Table:
    utility = metrics["utility"]
    table = Table(title=f"{metrics['experiment']} · seed {metrics['seed']} · {metrics['rounds_completed']} rounds")
    for column in ("", "Dice", "IoU", "pooled Dice", "lesion-image Dice", "test loss"):
        table.add_column(column, justify="right" if column else "left")

    def add(label: str, values: dict[str, float] | None) -> None:
        if values:
            table.add_row(label, *(f"{values[key]:.3f}" for key in TABLE_KEYS))

    add("untrained model", utility.get("initial"))
    for hospital, values in utility["per_hospital"].items():
        add(f"hospital {hospital}", values)
    add("global model (all)", utility)
    table.caption = f"wall time {metrics['wall_time_s']:.1f} s · {metrics['cost']['model_parameters']:,} parameters"
    failures = metrics.get("failures") or {}
    if failures.get("events"):
        lost = ", ".join(f"round {e['round']} hospital {e['hospital']} {e['status'].replace('_', ' ')}" for e in failures["events"])
        table.caption += f"\nupdates lost: {lost}"
    return table


PRIVACY_KEYS = ("auc", "balanced_accuracy", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
TPR_LABELS = {"tpr_at_1pct_fpr": "1%", "tpr_at_0.1pct_fpr": "0.1%"}


def _privacy_cell(scoped: dict[str, Any], key: str) -> str:
    """A figure with its 95% interval; blank for a TPR the non-members cannot resolve (said once, in the caption)."""
    ci = scoped.get("ci") or {}
    resolved = (ci.get("resolvability") or {}).get(key)
    if scoped.get(key) is None or (resolved is not None and not resolved["resolvable"]):
        return ""
    return format_with_interval(scoped[key], ci.get(key) if key != "balanced_accuracy" else None)


def _resolution_caption(level: str, scoped: dict[str, Any]) -> str | None:
    resolvability = (scoped.get("ci") or {}).get("resolvability") or {}
    needs = [
        f"TPR@{TPR_LABELS[key]}FPR needs ≥{value['non_members_needed']} non-members"
        for key, value in sorted(resolvability.items(), key=lambda item: item[1]["non_members_needed"])
        if not value["resolvable"]
    ]
    if not needs:
        return None
    return f"{level}: {scoped['non_members']} non-members, so left blank: " + ", ".join(needs)


def privacy_table(metrics: dict[str, Any]) -> Table | None:
    """Each attack's headline AUC, balanced accuracy and TPR at low FPR on the final global model.

    The headline (:func:`fl_mia.referee.scopes.headline`) is every candidate where all hospitals
    received the same model, the targeted hospitals' candidates otherwise. Every figure carries
    its 95% bootstrap interval; each attack has a slice-level row and a patient-level row (a
    patient's score is the mean of its slices').
    """
    privacy = metrics.get("privacy")
    attacks = scored_attacks(privacy)
    if not attacks:
        return None
    first = next(iter(attacks.values()))
    scope = headline_scope(first)
    where = "all hospitals" if scope == "overall" else f"targeted hospitals {headline(first).get('hospitals')}"
    table = Table(title=f"membership inference · final global model · {where} · 95% intervals (bootstrap by patient)")
    for column in ("attack", "AUC", "bal. acc.", "TPR@1%FPR", "TPR@0.1%FPR"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for name, result in attacks.items():
        table.add_row(name, *(_privacy_cell(headline(result), key) for key in PRIVACY_KEYS))
        patient = headline(result.get("patient"))
        if patient is not None:
            table.add_row("  └ patients", *(_privacy_cell(patient, key) for key in PRIVACY_KEYS))
    shown = headline(first)
    caption = f"{shown['members']} members / {shown['non_members']} non-members; bal. acc. at the attacker's own threshold"
    if first.get("overall_note"):
        caption += f"\n{first['overall_note']}"
    notes = [_resolution_caption("slices", shown)]
    if headline(first.get("patient")):
        notes.append(_resolution_caption("patients", headline(first["patient"])))
    if not any(notes) and shown.get("resolution_note"):
        notes.append(shown["resolution_note"])
    caption += "".join(f"\n{note}" for note in notes if note)
    confound = (privacy.get("candidate_set") or {}).get("lesion_area_auc")
    if confound is not None:
        # What the masks alone give: an attack near this figure may be reading lesions, not membership.
        caption += f"\nmask-only score (lesion area, no model): AUC {confound:.3f}"
    table.caption = caption
    return table


def privacy_budget_lines(metrics: dict[str, Any]) -> list[str]:
    """Each DP mechanism's ε with its unit and δ: "ε per patient" is not "ε per slice"."""
    report = metrics.get("defence_report") or {}
    lines = []
    for name, label in (("dp_sgd", "DP-SGD"), ("central_dp", "hospital-level DP")):
        epsilon = (report.get(name) or {}).get("epsilon")
        if not isinstance(epsilon, dict) or epsilon.get("value") is None:
            continue
        mode = (report[name].get("mode") or "").replace("_", " ")
        line = f"{label}{f' ({mode})' if mode else ''}: ε = {_number(epsilon['value'])} per {epsilon['unit']} at δ = {epsilon['delta']:.2g}"
        if epsilon.get("value_at_reference_delta") is not None and epsilon["delta"] != epsilon["reference_delta"]:
            line += f" ({_number(epsilon['value_at_reference_delta'])} at δ = {epsilon['reference_delta']:g})"
        lines.append(line)
        group = report[name].get("patient_by_group_privacy")
        if group:
            lines.append(
                f"  a patient ({group['max_slices_per_patient']} slices) by group privacy: ε ≤ {_number(group['epsilon'])} "
                f"at δ = {group['delta']:.2g}" + (" — no guarantee" if group["delta"] >= 1 else "")
            )
    audit = (metrics.get("privacy") or {}).get("dp_audit")
    if audit and audit.get("largest_empirical_epsilon") is not None:
        lines.append(
            f"DP audit ({audit['unit']} as trial): largest empirical ε {audit['largest_empirical_epsilon']:.2f} "
            f"({audit['attack']}, 95% lower bound) vs accountant's {_number(audit['accountant_epsilon'])}"
            + ("" if audit["empirical_below_accountant"] else " — ABOVE the accountant: DP broken?")
        )
    return lines


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


def render_summary(metrics: dict[str, Any]) -> str:
    console = Console(width=110, record=True, file=io.StringIO())
    console.print(summary_table(metrics))
    privacy = privacy_table(metrics)
    if privacy is not None:
        console.print(privacy)
    for line in privacy_budget_lines(metrics):
        console.print(line, highlight=False)
    verdict = verdict_line((metrics.get("privacy") or {}).get("verdict"))
    if verdict is not None:
        console.print(verdict)
    return console.export_text()
