"""What a report is made of: finished run folders, grouped into suite cells over seeds.

A *group* is one point of a suite's grid (a value per axis) across its seeds. For every
group it computes the mean over seeds with a t-interval (Dice, each attack's AUC and
TPR@1%FPR), and *pooled* metrics: the seeds' candidates concatenated (seeds draw
different hospitals, so this is a larger candidate set, resampled by (seed, patient)),
which is how ≥ 100 non-members make TPR at 1% FPR resolvable. Each group is compared
with the suite's baseline group on the same candidates by a paired bootstrap.
"""

from __future__ import annotations

import io
import json
import os
import platform
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from fl_mia.referee.metrics import membership_metrics
from fl_mia.referee.scopes import headline, scored_attacks
from fl_mia.referee.statistics import bootstrap_intervals, mean_interval
from fl_mia.report.pairing import (
    candidate_truth,
    paired_against,
    paired_against_strongest,
    paired_in_attack_rounds,
    rival_attacks,
    scores_on,
    utility_against,
)
from fl_mia.seeding import seed_sequence

__all__ = ["candidate_truth", "build_report_data", "to_json", "ReportError"]

PACKAGES = ("torch", "flwr", "segmentation-models-pytorch", "opacus", "numpy", "scikit-learn")
SUITE_JSON = "suite.json"  # fl_mia.app.suite writes it; the report only reads folders


class ReportError(ValueError):
    """A path that is neither a finished run folder nor a suite folder."""


@dataclass
class RunRecord:
    name: str
    axes: dict[str, str]
    seed: int
    run_dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    baseline: str | None = None

    @property
    def group(self) -> str:
        return " · ".join(f"{a}={v}" for a, v in self.axes.items()) or self.metrics.get("experiment", self.name)


@dataclass
class Group:
    label: str
    axes: dict[str, str]
    runs: list[RunRecord] = field(default_factory=list)


def _run_record(run_dir: Path, *, name: str, axes: dict[str, str], seed: int | None, baseline: str | None) -> RunRecord:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = tomllib.loads((run_dir / "config.toml").read_text()) if (run_dir / "config.toml").is_file() else {}
    return RunRecord(name, axes, metrics.get("seed", seed), run_dir, metrics, config, baseline)


def load_sources(paths: list[Path]) -> tuple[list[RunRecord], list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs of every suite folder and run folder given; the suites' summaries; failed cells."""
    runs: list[RunRecord] = []
    suites: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if (path / SUITE_JSON).is_file():
            summary = json.loads((path / SUITE_JSON).read_text())
            suites.append(summary)
            for cell in summary["cells"]:
                run_dir = Path(cell["run_dir"])
                if not run_dir.is_absolute() and not run_dir.exists():
                    run_dir = path / "cells" / cell["name"]
                if cell["state"] != "complete" or not (run_dir / "metrics.json").is_file():
                    failed.append(cell)
                    continue
                runs.append(_run_record(run_dir, name=cell["name"], axes=cell["axes"], seed=cell["seed"], baseline=cell.get("baseline")))
        elif (path / "metrics.json").is_file():
            runs.append(_run_record(path, name=path.name, axes={}, seed=None, baseline=None))
        elif not path.exists():
            raise ReportError(f"{path}: does not exist; give a suite folder (fl-mia suite --out DIR) or a run folder")
        elif (path / "status.json").is_file():
            raise ReportError(
                f"{path}: a run folder without metrics.json (the run has not finished); "
                f"continue it with: fl-mia run --resume {path}"
            )
        else:
            raise ReportError(
                f"{path}: neither a suite folder (suite.json) nor a finished run folder (metrics.json); "
                "a suite writes suite.json into its --out folder"
            )
    if not runs:
        raise ReportError("no finished run among " + ", ".join(map(str, paths)))
    return runs, suites, failed


def group_runs(runs: list[RunRecord]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(run.group, Group(run.group, run.axes)).runs.append(run)
    return list(groups.values())


def attack_names(runs: list[RunRecord]) -> list[str]:
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(scored_attacks(run.metrics.get("privacy"))))
    return list(names)


def _pooled(group: Group, attack: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The seeds' headline candidates concatenated (targeted hospitals where the models differed)."""
    scores, members, units = [], [], []
    for run in group.runs:
        shown = headline((run.metrics.get("privacy") or {}).get(attack))
        found = scores_on(run, attack, shown.get("hospitals") if shown is not None else None)
        if found is None:
            return None
        values, is_member, patient = found
        scores.append(values)
        members.append(is_member)
        units.append(np.array([f"{run.seed}:{p}" for p in patient]))
    return np.concatenate(scores), np.concatenate(members), np.concatenate(units)


def dice_of(run: RunRecord) -> float | None:
    return (run.metrics.get("utility") or {}).get("dice")


def pooled_dice_of(run: RunRecord) -> float | None:
    return (run.metrics.get("utility") or {}).get("dice_pooled")


def epsilon_label(kind: str) -> str:
    """An ``epsilon_of`` key as shown; reports written before ε named its unit say only "DP-SGD" (slice-level then)."""
    return kind if "ε per" in kind else f"{kind} (ε per slice: recorded before ε named its unit)"


def epsilon_text(figure: dict, interval) -> str:
    """An ε's seed mean with its interval, or "∞" for clipping without noise (no interval to give)."""
    if figure["mean"] == float("inf"):
        return "∞ (no noise: no guarantee)"
    return interval(figure["mean"], figure["ci"])


def epsilon_of(run: RunRecord) -> dict[str, float]:
    report = run.metrics.get("defence_report") or {}
    found = {}
    # Each ε is labelled with its unit (what one neighbouring record is): patient, slice or hospital.
    dp_sgd, central = report.get("dp_sgd") or {}, report.get("central_dp") or {}
    if dp_sgd.get("epsilon_max") is not None:
        found[f"DP-SGD (ε per {(dp_sgd.get('epsilon') or {}).get('unit', 'slice')})"] = dp_sgd["epsilon_max"]
    group = dp_sgd.get("patient_by_group_privacy") or {}
    if isinstance(group.get("epsilon"), (int, float)):  # its δ (often vacuous) is in metrics.json
        found["DP-SGD (ε per patient by group privacy over slices)"] = group["epsilon"]
    epsilon = central.get("epsilon")
    if isinstance(epsilon, dict) and isinstance(epsilon.get("value"), (int, float)):
        found[f"{'distributed' if central.get('mode') == 'distributed' else 'central'} DP (ε per hospital)"] = epsilon["value"]
    elif isinstance(epsilon, (int, float)):  # metrics.json written before ε named its unit
        found["central DP (ε per hospital)"] = epsilon
    return found


def _candidate_set(run: RunRecord) -> dict[str, Any]:
    return (run.metrics.get("privacy") or {}).get("candidate_set") or {}


def _threat(run: RunRecord) -> dict[str, Any] | None:
    """The poisoner's declaration (targets, attack rounds, matched signals), or None on an honest server."""
    threat = run.metrics.get("threat") or {}
    if not threat.get("declaration"):
        return None
    summary = {"poisoning": threat.get("poisoning"), **threat["declaration"]}
    covered = (threat.get("trap") or {}).get("candidates_covered")
    if covered is not None:  # a trap tests one candidate per detector: the rest are never tested
        summary["candidates_covered"] = covered
    return summary


def _dp_audit(group: Group) -> dict[str, Any] | None:
    """Each seed's DP audit (``metrics.json`` ``privacy.dp_audit``) and the seed where the attacks came
    closest to the accountant: the largest empirical ε of any attack minus the accountant's ε."""
    seeds = [{"seed": r.seed, **audit} for r in group.runs if (audit := (r.metrics.get("privacy") or {}).get("dp_audit"))]
    if not seeds:
        return None
    measured = [s for s in seeds if s.get("largest_empirical_epsilon") is not None]
    closest = max(measured, key=lambda s: s["largest_empirical_epsilon"] - s["accountant_epsilon"], default=None)
    above = [s["seed"] for s in measured if not s["empirical_below_accountant"]]
    return {
        "seeds": seeds, "unit": seeds[0]["unit"], "trial": seeds[0].get("trial"), "closest": closest,
        "all_below": None if not measured else not above, "seeds_above": above,
    }  # fmt: skip


def _detection(group: Group) -> dict[str, Any] | None:
    """The hospitals' detector over the group's seeds (``metrics.json`` ``threat.detection``): flagged
    attacked and honest (round, hospital) pairs summed over seeds, with Wilson intervals."""
    from fl_mia.defences.detector import flag_rate

    seeds = [d for r in group.runs if (d := (r.metrics.get("threat") or {}).get("detection"))]
    if not seeds:
        return None

    def pooled(kind: str) -> dict[str, Any]:
        return flag_rate(sum(d[kind]["flagged"] for d in seeds), sum(d[kind]["rounds"] for d in seeds))

    checks: dict[str, int] = {}
    for d in seeds:
        for check, times in (d.get("checks_fired_in_attack_rounds") or {}).items():
            checks[check] = checks.get(check, 0) + times
    return {"seeds": len(seeds), "detection": pooled("detection"), "false_alarms": pooled("false_alarms"), "checks_fired_in_attack_rounds": checks}


def _integrity(group: Group) -> dict[str, Any] | None:
    """An integrity threat's own metric (``metrics.json`` ``threat.integrity``): the trigger's attack
    success rate on the model the server sent and on the final global model, seed means."""
    seeds = [i for r in group.runs if (i := (r.metrics.get("threat") or {}).get("integrity"))]
    if not seeds:
        return None
    return {
        "seeds": len(seeds), "obeys_at_dice": seeds[0].get("obeys_at_dice"),
        **{f"success_{model}": mean_interval([i.get(f"attack_success_rate_{model}") for i in seeds]) for model in ("sent_model", "final_global")},
    }  # fmt: skip


def summarise_group(group: Group, attacks: list[str], *, seed: int = 0) -> dict[str, Any]:
    """Seed means with t-intervals, and pooled metrics with bootstrap intervals, per attack."""
    result: dict[str, Any] = {
        "label": group.label, "axes": group.axes, "seeds": sorted(r.seed for r in group.runs),
        "dice": mean_interval([dice_of(r) for r in group.runs]),
        "dice_pooled": mean_interval([pooled_dice_of(r) for r in group.runs]),
        "epsilon": {k: mean_interval([epsilon_of(r).get(k) for r in group.runs], bounds=(0.0, float("inf"))) for k in {k for r in group.runs for k in epsilon_of(r)}},
        "lesion_area_auc": mean_interval([_candidate_set(r).get("lesion_area_auc") for r in group.runs]),
        # Per seed: does the mask-only AUC's patient-bootstrap interval contain 0.5 (no lesion confound)?
        "lesion_area_auc_ci": [_candidate_set(r).get("lesion_area_auc_ci") for r in group.runs],
        "matched_lesion_area": sorted({bool(_candidate_set(r).get("matched_lesion_area")) for r in group.runs}),
        "threat": _threat(group.runs[0]),
        "dp_audit": _dp_audit(group),
        "detection": _detection(group),
        "integrity": _integrity(group),
        "attacks": {},
    }  # fmt: skip
    for attack in attacks:
        per_seed = [headline((r.metrics.get("privacy") or {}).get(attack)) for r in group.runs]
        results = [(r.metrics.get("privacy") or {}).get(attack) or {} for r in group.runs]
        if not any(per_seed):
            continue
        entry: dict[str, Any] = {
            key: mean_interval([p.get(key) for p in per_seed if p])
            for key in ("auc", "tpr_at_1pct_fpr", "balanced_accuracy", "balanced_accuracy_oracle")
        }
        entry["scope"] = sorted({p.get("headline") or "overall" for p in results})
        entry["patient_auc"] = mean_interval([(headline(p.get("patient")) or {}).get("auc") for p in results])
        entry["empirical_epsilon"] = mean_interval(
            [(p.get("empirical_epsilon") or {}).get("epsilon_lower_bound") for p in results], bounds=(0.0, float("inf"))
        )
        entry["empirical_epsilon_unit"] = next(((p.get("empirical_epsilon") or {}).get("unit", "slice") for p in results), "slice")
        pooled = _pooled(group, attack)
        if pooled is not None:
            scores, is_member, units = pooled
            metrics = membership_metrics(scores, is_member)
            metrics["ci"] = bootstrap_intervals(scores, is_member, groups=units, seed=seed_sequence(seed, "report", attack))
            entry["pooled"] = metrics
        result["attacks"][attack] = entry
    return result


def strongest_attack(summary: dict[str, Any]) -> str | None:
    """The cell's strongest attack by its seeds-pooled headline AUC, every attack counted (update and accumulated too)."""
    pooled = [(entry["pooled"]["auc"], name) for name, entry in summary["attacks"].items() if (entry.get("pooled") or {}).get("auc") is not None]
    return max(pooled)[1] if pooled else None


def missing_cells(suites: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells of a suite's grid (axes × seeds) that its suite.json does not list at all (a suite stopped early)."""
    missing = []
    for suite in suites:
        axes, listed = suite.get("axes") or {}, {c["name"] for c in suite.get("cells", [])}
        combos: list[list[str]] = [[]]
        for axis, values in axes.items():
            combos = [c + [f"{axis}={v}"] for c in combos for v in values]
        for combo in combos:
            for seed in suite.get("seeds") or []:
                name = "__".join([*combo, f"seed={seed}"])
                if name not in listed:
                    missing.append({"name": name, "state": "missing", "error": None})
    return missing


def config_difference(config: dict[str, Any], base: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: base → value`` for every leaf that differs (seed and name left out)."""
    changes = []
    for key in sorted(set(config) | set(base)):
        path = f"{prefix}{key}"
        mine, theirs = config.get(key), base.get(key)
        if isinstance(mine, dict) or isinstance(theirs, dict):
            changes += config_difference(mine or {}, theirs or {}, f"{path}.")
        elif mine != theirs and path not in ("seed", "name"):
            changes.append(f"{path}: {theirs!r} → {mine!r}")
    return changes


def environment() -> list[list[str]]:
    rows = [["python", platform.python_version()], ["machine", f"{platform.machine()} · {platform.system()} {platform.release()}"]]
    rows.append(["CPU cores", str(os.cpu_count())])
    for package in PACKAGES:
        try:
            rows.append([package, metadata.version(package)])
        except metadata.PackageNotFoundError:
            continue
    return rows


def build_report_data(paths: list[Path]) -> dict[str, Any]:
    """Everything the HTML and markdown renderers show, as plain data (also saved as report.json)."""
    runs, suites, failed = load_sources(paths)
    groups = group_runs(runs)
    attacks = attack_names(runs)
    first_group = groups[0]
    group_of_run = {r.name: g for g in groups for r in g.runs}
    summaries = [summarise_group(g, attacks) for g in groups]
    for group, summary in zip(groups, summaries):
        first = group.runs[0]
        # The cell's own baseline (suite.json names it), else the first cell's group.
        baseline = group_of_run.get(first.baseline) if first.baseline else first_group
        summary["baseline"] = baseline.label if baseline is not None and baseline is not group else None
        summary["paired_vs_baseline"] = {
            attack: paired_against(group, baseline, attack) for attack in attacks
        } if summary["baseline"] else {}
        summary["utility_vs_baseline"] = utility_against(group, baseline, dice_of, pooled_dice_of) if summary["baseline"] else []
        summary["rival_attacks"] = rival_attacks(group, attacks)
        base = baseline.runs[0] if baseline is not None else first_group.runs[0]
        summary["config_difference"] = config_difference(first.config, base.config)
        summary["strongest_attack"] = strongest_attack(summary)
        summary["matched_signal"] = next((a for a in (summary["threat"] or {}).get("matched_signals", []) if a in summary["attacks"]), None)
        summary["matched_vs_baseline_strongest"] = summary["matched_in_attack_rounds"] = None
        if summary["baseline"] and summary["matched_signal"]:
            baseline_attacks = attack_names(baseline.runs)
            summary["matched_vs_baseline_strongest"] = paired_against_strongest(group, baseline, summary["matched_signal"], baseline_attacks)
            attack_rounds = summary["threat"].get("attack_rounds")  # a list, or "all" (every round: nothing to sum apart)
            summary["matched_in_attack_rounds"] = paired_in_attack_rounds(
                group, baseline, summary["matched_signal"], baseline_attacks, attack_rounds if isinstance(attack_rounds, list) else []
            )
        summary["dice_difference"] = mean_interval(
            [r["dice"] - r["baseline_dice"] for r in summary["utility_vs_baseline"] if r["dice"] is not None and r["baseline_dice"] is not None],
            bounds=(-1.0, 1.0),
        )
        # The cost the DP frontier is judged on: pooled Dice as a share of the baseline's, seed by seed.
        summary["dice_pooled_ratio"] = mean_interval(
            [r["ratio_pooled"] for r in summary["utility_vs_baseline"]], bounds=(0.0, float("inf"))
        )
    return {
        "sources": [str(p) for p in paths],
        "environment": environment(),
        "suites": [{k: s.get(k) for k in ("suite", "description", "axes", "seeds", "wall_time_s", "overhead")} for s in suites],
        "attacks": attacks,
        "baseline": first_group.label,
        "groups": summaries,
        "failed_cells": [{"name": c["name"], "state": c.get("state"), "error": c.get("error")} for c in failed] + missing_cells(suites),
        "expected_cells": sum(len(s.get("cells", [])) for s in suites) + len(missing_cells(suites)),
        "runs": [
            {"name": r.name, "group": r.group, "seed": r.seed, "run_dir": str(r.run_dir), "dice": dice_of(r),
             "wall_time_s": r.metrics.get("wall_time_s"), "threat_model": r.metrics.get("threat_model")}
            for r in runs
        ],  # fmt: skip
        "_runs": runs,
        "_groups": groups,
    }


def to_json(data: dict[str, Any]) -> str:
    public = {k: v for k, v in data.items() if not k.startswith("_")}
    buffer = io.StringIO()
    json.dump(public, buffer, indent=1, sort_keys=True, default=str)
    return buffer.getvalue()
