"""The report's tables as rows of text: every figure with its interval, blanks explained once in a caption.

Shared by the HTML report and its markdown twin (:mod:`fl_mia.report.render`).
"""

from __future__ import annotations

import copy
from typing import Any

from fl_mia.referee.statistics import format_with_interval, non_members_needed
from fl_mia.referee.verdict import AUC_BAR
from fl_mia.report.collect import epsilon_label, epsilon_text, strongest_attack


def _cell(value: float | None, ci: list[float] | None) -> str:
    """A figure with its interval; blank where the run has none (the table's caption says why, once)."""
    return "" if value is None else format_with_interval(value, ci)


def _pooled_cell(entry: dict[str, Any], key: str) -> str:
    """A seeds-pooled figure with its interval; blank where there is none or the non-members cannot resolve it."""
    pooled = entry.get("pooled")
    if pooled is None or pooled.get(key) is None:
        return ""
    ci = pooled.get("ci") or {}
    resolved = (ci.get("resolvability") or {}).get(key)
    if key != "auc" and resolved is not None and not resolved["resolvable"]:
        return ""  # one caption says why, not every row
    return _cell(pooled.get(key), ci.get(key))


def seeds_text(seeds: list[int]) -> str:
    return f"{len(seeds)} ({', '.join(map(str, seeds))})"


def unresolved_caption(data: dict[str, Any]) -> str | None:
    """Said once: which blank TPR cells the non-members cannot resolve."""
    short = sorted({
        e["pooled"]["non_members"] for g in data["groups"] for e in g["attacks"].values()
        if e.get("pooled") and e["pooled"]["non_members"] < non_members_needed(0.01)
    })  # fmt: skip
    if not short:
        return None
    return (
        f"Blank TPR@1%FPR: fewer than {non_members_needed(0.01)} non-members ({', '.join(map(str, short))} pooled) "
        "cannot resolve an FPR of 1% (one false positive is already more); TPR@0.1%FPR needs "
        f"{non_members_needed(0.001)}."
    )


def _attack_entries(data: dict[str, Any]):
    """``(attack, group, entry)`` for each cell group that scored the attack, attack by attack."""
    for attack in data["attacks"]:
        for group in data["groups"]:
            entry = group["attacks"].get(attack)
            if entry is not None:
                yield attack, group, entry


def summary_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per attack and cell (long format: suites have many attacks)."""
    header = ["attack", "cell", "scored on", "seeds", "Dice (seed mean)", "AUC (seed mean)", "AUC (pooled)", "TPR@1%FPR (pooled)", "patient AUC (seed mean)"]
    rows = []
    for attack, group, entry in _attack_entries(data):
        rows.append([
            attack, group["label"], "/".join(entry.get("scope") or ["overall"]), seeds_text(group["seeds"]),
            _cell(group["dice"]["mean"], group["dice"]["ci"]),
            _cell(entry["auc"]["mean"], entry["auc"]["ci"]), _pooled_cell(entry, "auc"), _pooled_cell(entry, "tpr_at_1pct_fpr"),
            _cell(entry["patient_auc"]["mean"], entry["patient_auc"]["ci"]),
        ])  # fmt: skip
    return header, rows


def count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _difference_cells(result: dict[str, Any]) -> list[tuple[str, bool]]:
    """Δ AUC and Δ TPR@1%FPR of a paired comparison, each with its interval (bold when significant)."""
    cells = []
    for key in ("auc", "tpr_at_1pct_fpr"):
        item = result.get(key) or {}
        if item.get("difference") is None:
            cells.append(("", False))  # unresolvable: the caption says so once
        else:
            cells.append((f"{item['difference']:+.3f} [{item['ci'][0]:+.2f}, {item['ci'][1]:+.2f}]", item["significant"]))
    return cells


def paired_rows(data: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    header = ["attack", "cell", "against", "scored on", "seeds", "Δ AUC", "Δ TPR@1%FPR"]
    rows = []
    for attack in data["attacks"]:
        for group in data["groups"]:
            result = (group.get("paired_vs_baseline") or {}).get(attack)
            if result is None:
                continue
            scope = result.get("scope", "overall") + (f" {result['hospitals']}" if result.get("hospitals") else "")
            rows.append([(attack, False), (group["label"], False), (group.get("baseline") or "", False), (scope, False),
                         (seeds_text(result["seeds"]), False), *_difference_cells(result)])  # fmt: skip
    return header, rows


def rival_rows(data: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Attack against attack within each cell (``RIVAL_ATTACKS``), on the cell's own candidates."""
    header = ["first − second", "cell", "seeds", "Δ AUC", "Δ TPR@1%FPR"]
    rows = []
    for group in data["groups"]:
        for pair, result in sorted((group.get("rival_attacks") or {}).items()):  # JSON keeps keys sorted
            rows.append([(pair, False), (group["label"], False), (seeds_text(result["seeds"]), False), *_difference_cells(result)])
    return header, rows


def significance_note(data: dict[str, Any]) -> str:
    """The closing note: which cells differ from the baseline beyond their 95% paired interval."""
    significant, total = [], 0
    for group in data["groups"]:
        for attack, result in sorted((group.get("paired_vs_baseline") or {}).items()):  # JSON keeps keys sorted
            if result is None:
                continue
            for key, label in (("auc", "AUC"), ("tpr_at_1pct_fpr", "TPR@1%FPR")):
                item = result.get(key) or {}
                if item.get("difference") is None:
                    continue
                total += 1
                if item["significant"]:
                    direction = "higher" if item["difference"] > 0 else "lower"
                    significant.append(f"{group['label']}: {attack} {label} {direction} by {abs(item['difference']):.3f}")
    if total == 0:
        return "No paired difference in this report (one cell, or no cell pairs with its baseline on the same candidates)."
    if not significant:
        return f"None of the {total} paired differences from the cells' baselines is significant at 95%."
    return (
        f"{len(significant)} of {total} paired differences from the cells' baselines are significant at 95% "
        f"(interval excludes 0; no correction for multiple comparisons): " + "; ".join(significant) + "."
    )


def utility_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each cell's pooled and per-image Dice beside the baseline's, seed by seed, with the pooled ratio."""
    header = ["cell", "against", "seed", "pooled Dice", "baseline's pooled Dice", "ratio", "per-image Dice", "baseline's per-image Dice"]
    rows = []
    for group in data["groups"]:
        for row in group.get("utility_vs_baseline") or []:
            rows.append([group["label"], group.get("baseline") or "", str(row["seed"]), _cell(row["dice_pooled"], None),
                         _cell(row["baseline_dice_pooled"], None), "" if row["ratio_pooled"] is None else f"{row['ratio_pooled']:.2f}×",
                         _cell(row["dice"], None), _cell(row["baseline_dice"], None)])  # fmt: skip
    return header, rows


FRONTIER_HEADER = ["cell", "ε spent (mechanism, unit: seed mean)", "pooled Dice (seed mean)", "pooled Dice ÷ baseline's",
                   "strongest attack", "its AUC (pooled)"]  # fmt: skip


def frontier_rows(data: dict[str, Any]) -> list[list[str]]:
    """The privacy–utility curve as a table, cells in the suite's order: what each spent, kept and leaked.

    Only for reports where some cell spent an ε (a DP frontier); its baselines are listed too, as "none"."""
    if not any(group["epsilon"] for group in data["groups"]):
        return []
    rows = []
    for group in data["groups"]:
        spent = "; ".join(f"{epsilon_label(kind)} {epsilon_text(value, _cell)}" for kind, value in sorted(group["epsilon"].items()))
        dice, ratio = group.get("dice_pooled") or {}, group.get("dice_pooled_ratio") or {}
        strongest = group.get("strongest_attack")
        rows.append([
            group["label"], spent or "none", _cell(dice.get("mean"), dice.get("ci")), _cell(ratio.get("mean"), ratio.get("ci")),
            strongest or "", _pooled_cell(group["attacks"][strongest], "auc") if strongest else "",
        ])  # fmt: skip
    return rows


def audit_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every attack of every cell against the AUC bar, with its empirical ε lower bound (a DP audit)."""
    header = ["attack", "cell", "AUC (pooled)", f"AUC ≤ {AUC_BAR}?", "empirical ε (seed mean)"]
    rows = []
    for attack, group, entry in _attack_entries(data):
        pooled = entry.get("pooled") or {}
        auc, ci = pooled.get("auc"), (pooled.get("ci") or {}).get("auc")
        if auc is None:
            verdict = ""
        elif ci and ci[0] > AUC_BAR:
            verdict = "no: interval above"
        elif ci and ci[1] <= AUC_BAR:
            verdict = "yes: interval below"
        else:
            verdict = ("yes" if auc <= AUC_BAR else "no") + f" (interval spans {AUC_BAR})"
        audit = entry.get("empirical_epsilon") or {}
        rows.append([attack, group["label"], _pooled_cell(entry, "auc"), verdict,
                     "" if audit.get("mean") is None else _cell(audit["mean"], audit["ci"]) + f" per {entry.get('empirical_epsilon_unit', 'slice')}"])  # fmt: skip
    return header, rows


def confound_rows(data: dict[str, Any]) -> list[list[str]]:
    """Each cell's mask-only AUC (seed mean), whether its draw was lesion-matched, and in how many seeds 0.5 is inside its interval."""
    rows = []
    for g in data["groups"]:
        intervals = [ci for ci in g.get("lesion_area_auc_ci") or [] if ci]
        inside = sum(ci[0] <= 0.5 <= ci[1] for ci in intervals)
        matched = "/".join("yes" if m else "no" for m in g.get("matched_lesion_area") or [])
        rows.append([g["label"], _cell(g["lesion_area_auc"]["mean"], g["lesion_area_auc"]["ci"]), matched,
                     f"{inside} of {len(intervals)}" if intervals else ""])  # fmt: skip
    return rows


DETECTION_HEADER = ["cell", "seeds", "attacked rounds flagged", "detection rate", "honest rounds flagged", "false-alarm rate", "checks fired in attack rounds"]


def detection_rows(data: dict[str, Any]) -> list[list[str]]:
    """The hospitals' detector per cell, seeds pooled: (round, hospital) pairs flagged, Wilson intervals."""
    rows = []
    for g in data["groups"]:
        detection = g.get("detection")
        if not detection:
            continue
        cells = []
        for part in (detection["detection"], detection["false_alarms"]):
            cells += [f"{part['flagged']} of {part['rounds']}" if part["rounds"] else "", _cell(part["rate"], part["ci"])]
        checks = ", ".join(f"{name} {times}" for name, times in sorted(detection["checks_fired_in_attack_rounds"].items()))
        rows.append([g["label"], str(detection["seeds"]), *cells, checks])
    return rows


CONFOUND_HEADER = ["cell", "lesion-area AUC (seed mean)", "lesion-matched", "seeds whose interval holds 0.5"]


def accuracy_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Balanced attack accuracy (the seed paper's figure) at the attack's own threshold and at the best one."""
    header = ["attack", "cell", "accuracy (attacker's threshold)", "oracle accuracy (threshold read off the ledger)"]
    rows = []
    for attack, group, entry in _attack_entries(data):
        cells = [entry.get(key) for key in ("balanced_accuracy", "balanced_accuracy_oracle")]
        rows.append([attack, group["label"], *("" if not c or c["mean"] is None else _cell(c["mean"], c["ci"]) for c in cells)])
    return header, rows


def normalised(data: dict[str, Any]) -> dict[str, Any]:
    """Report data as this version renders it.

    Data written before targeted scoring (a results page's JSON) has no per-cell baseline,
    threat or scope: it is marked ``legacy_scoring`` (Findings say its figures pool every
    hospital) and its keys are mapped (its ``balanced_accuracy`` was the oracle's).
    """
    if all("threat" in group for group in data["groups"]):
        return data
    data = copy.deepcopy({k: v for k, v in data.items() if not k.startswith("_")}) | {k: v for k, v in data.items() if k.startswith("_")}
    data["legacy_scoring"] = True
    for group in data["groups"]:
        group.setdefault("baseline", data["baseline"] if group["label"] != data["baseline"] else None)
        group.setdefault("threat", None)
        group.setdefault("utility_vs_baseline", [])
        group.setdefault("dice_difference", None)
        group.setdefault("dice_pooled_ratio", None)
        group.setdefault("dice_pooled", None)
        group.setdefault("strongest_attack", strongest_attack(group))
        for entry in group["attacks"].values():
            if "balanced_accuracy_oracle" not in entry:
                entry["balanced_accuracy_oracle"], entry["balanced_accuracy"] = entry.get("balanced_accuracy"), entry.get("accuracy_at_threshold")
        for paired in (group.get("paired_vs_baseline") or {}).values():
            if paired and paired["auc"].get("ci") and "half_width" not in paired["auc"]:
                paired["auc"]["half_width"] = (paired["auc"]["ci"][1] - paired["auc"]["ci"][0]) / 2
    for cell in data["failed_cells"]:
        cell.setdefault("state", "failed")
    return data
