"""What a report is made of: finished run folders, grouped into suite cells over seeds.

A *group* is one point of a suite's grid (a value per axis) across its seeds. For every
group it computes the mean over seeds with a t-interval (Dice, each attack's AUC and
TPR@1%FPR), and *pooled* metrics: the seeds' candidates concatenated (seeds draw
different hospitals, so this is a larger candidate set, resampled by (seed, patient)),
which is how ≥ 100 non-members make TPR at 1% FPR resolvable. Each group is compared
with the suite's baseline group on the same candidates by a paired bootstrap.
"""

from __future__ import annotations

import csv
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
from fl_mia.referee.statistics import bootstrap_intervals, mean_interval, paired_difference
from fl_mia.seeding import seed_sequence

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
        for name, result in (run.metrics.get("privacy") or {}).items():
            if isinstance(result, dict) and "overall" in result:
                names[name] = None
    return list(names)


def candidate_truth(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Membership (from keep.npy and candidates.csv) and a patient key per candidate."""
    keep = np.load(run_dir / "keep.npy")
    with open(run_dir / "candidates.csv") as handle:
        rows = list(csv.DictReader(handle))
    hospital = np.array([int(r["hospital"]) for r in rows])
    names = [r["patient"] for r in rows]
    try:
        patient = np.array([int(name) for name in names])
    except ValueError:  # a dataset's own ids (case_023): numbered in sorted order, only a key here
        patient = np.unique(names, return_inverse=True)[1].reshape(-1)
    return keep[np.arange(len(keep)), hospital], hospital * 1_000_003 + patient


def _pooled(group: Group, attack: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    scores, members, units = [], [], []
    for run in group.runs:
        path = run.run_dir / "scores.npz"
        if not path.is_file():
            return None
        with np.load(path) as archive:
            if attack not in archive.files:
                return None
            scores.append(archive[attack])
        is_member, patient = candidate_truth(run.run_dir)
        members.append(is_member)
        units.append(np.array([f"{run.seed}:{p}" for p in patient]))
    return np.concatenate(scores), np.concatenate(members), np.concatenate(units)


def dice_of(run: RunRecord) -> float | None:
    return (run.metrics.get("utility") or {}).get("dice")


def _seed_pairs(group: Group, baseline: Group) -> list[tuple[RunRecord, RunRecord]]:
    """Each run of ``group`` with the baseline's run of the same seed, by seed; none for the baseline itself."""
    if group is baseline:
        return []
    theirs = {r.seed: r for r in baseline.runs}
    return sorted(((r, theirs[r.seed]) for r in group.runs if r.seed in theirs), key=lambda pair: pair[0].seed)


def pooled_dice_of(run: RunRecord) -> float | None:
    return (run.metrics.get("utility") or {}).get("dice_pooled")


def utility_against(group: Group, baseline: Group) -> list[dict[str, Any]]:
    """Seed by seed, the cell's Dice beside the baseline's on the same seed, and their ratio.

    A defence's utility cost is a per-seed comparison (the same data, split and initial model),
    which seed means with intervals over two seeds would blur.
    """
    rows = []
    for run, other in _seed_pairs(group, baseline):
        mine_pooled, their_pooled = pooled_dice_of(run), pooled_dice_of(other)
        rows.append({
            "seed": run.seed, "dice_pooled": mine_pooled, "baseline_dice_pooled": their_pooled,
            "ratio_pooled": mine_pooled / their_pooled if mine_pooled is not None and their_pooled else None,
            "dice": dice_of(run), "baseline_dice": dice_of(other),
        })  # fmt: skip
    return rows


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


def summarise_group(group: Group, attacks: list[str], *, seed: int = 0) -> dict[str, Any]:
    """Seed means with t-intervals, and pooled metrics with bootstrap intervals, per attack."""
    result: dict[str, Any] = {
        "label": group.label, "axes": group.axes, "seeds": sorted(r.seed for r in group.runs),
        "dice": mean_interval([dice_of(r) for r in group.runs]),
        "epsilon": {k: mean_interval([epsilon_of(r).get(k) for r in group.runs], bounds=(0.0, float("inf"))) for k in {k for r in group.runs for k in epsilon_of(r)}},
        "lesion_area_auc": mean_interval([((r.metrics.get("privacy") or {}).get("candidate_set") or {}).get("lesion_area_auc") for r in group.runs]),
        "attacks": {},
    }  # fmt: skip
    for attack in attacks:
        per_seed = [(r.metrics.get("privacy") or {}).get(attack) for r in group.runs]
        if not any(per_seed):
            continue
        entry: dict[str, Any] = {
            key: mean_interval([p["overall"][key] for p in per_seed if p]) for key in ("auc", "tpr_at_1pct_fpr", "balanced_accuracy")
        }
        entry["accuracy_at_threshold"] = mean_interval(
            [p["overall"].get("balanced_accuracy_at_attack_threshold") for p in per_seed if p]
        )
        entry["patient_auc"] = mean_interval([(p.get("patient") or {}).get("overall", {}).get("auc") for p in per_seed if p])
        entry["empirical_epsilon"] = mean_interval(
            [(p.get("empirical_epsilon") or {}).get("epsilon_lower_bound") for p in per_seed if p], bounds=(0.0, float("inf"))
        )
        entry["patient_empirical_epsilon"] = mean_interval(  # one trial per patient: beside a per-patient ε
            [((p.get("patient") or {}).get("empirical_epsilon") or {}).get("epsilon_lower_bound") for p in per_seed if p],
            bounds=(0.0, float("inf")),
        )
        pooled = _pooled(group, attack, seed)
        if pooled is not None:
            scores, is_member, units = pooled
            metrics = membership_metrics(scores, is_member)
            metrics["ci"] = bootstrap_intervals(scores, is_member, groups=units, seed=seed_sequence(seed, "report", attack))
            entry["pooled"] = metrics
        result["attacks"][attack] = entry
    return result


# Attacks that claim to beat another on the same evidence (the newer first): the report puts
# each pair side by side on the same candidates and bootstrap resamples, cell by cell.
RIVAL_ATTACKS = (
    ("rmia", "lira_offline"),
    ("rmia", "lira_online"),
    ("lira_online", "lira_offline"),
    ("lira_offline", "loss"),
    ("rmia", "loss"),
)


def _paired(pairs: list[tuple[RunRecord, RunRecord]], attack_a: str, attack_b: str, *, stream: np.random.SeedSequence) -> dict[str, Any] | None:
    """``attack_a`` on each pair's first run minus ``attack_b`` on its second, pooled over the pairs.

    None when a pair's runs were judged on different candidates or lack a score.
    """
    a, b, members, units = [], [], [], []
    for mine, theirs in pairs:
        truth, patient = candidate_truth(mine.run_dir)
        if theirs is not mine:
            truth_b, patient_b = candidate_truth(theirs.run_dir)
            if not (np.array_equal(truth, truth_b) and np.array_equal(patient, patient_b)):
                return None  # different candidates: no paired comparison
        with np.load(mine.run_dir / "scores.npz") as x, np.load(theirs.run_dir / "scores.npz") as y:
            if attack_a not in x.files or attack_b not in y.files:
                return None
            a.append(x[attack_a])
            b.append(y[attack_b])
        members.append(truth)
        units.append(np.array([f"{mine.seed}:{p}" for p in patient]))
    if not pairs:
        return None
    result = paired_difference(
        np.concatenate(a), np.concatenate(b), np.concatenate(members), groups=np.concatenate(units), seed=stream
    )
    result["seeds"] = [mine.seed for mine, _ in pairs]
    return result


def paired_against(group: Group, baseline: Group, attack: str, *, seed: int = 0) -> dict[str, Any] | None:
    """Group minus baseline on the same candidates (pooled over the seeds both have)."""
    if group is baseline:
        return None
    return _paired(_seed_pairs(group, baseline), attack, attack, stream=seed_sequence(seed, "report-paired", attack))


def rival_attacks(group: Group, attacks: list[str], *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each pair of ``RIVAL_ATTACKS`` both run in ``group``: first minus second on the group's own candidates."""
    pairs = [(r, r) for r in sorted(group.runs, key=lambda r: r.seed)]
    result = {}
    for first, second in RIVAL_ATTACKS:
        if first in attacks and second in attacks:
            difference = _paired(pairs, first, second, stream=seed_sequence(seed, "report-rivals", first, second))
            if difference is not None:
                result[f"{first} − {second}"] = difference
    return result


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
    baseline_group = groups[0]
    by_name = {r.name: r for r in runs}
    summaries = [summarise_group(g, attacks) for g in groups]
    for group, summary in zip(groups, summaries):
        summary["paired_vs_baseline"] = {
            attack: paired_against(group, baseline_group, attack) for attack in attacks
        } if group is not baseline_group else {}
        summary["utility_vs_baseline"] = utility_against(group, baseline_group)
        summary["rival_attacks"] = rival_attacks(group, attacks)
        first = group.runs[0]
        base = by_name.get(first.baseline) if first.baseline else baseline_group.runs[0]
        summary["config_difference"] = config_difference(first.config, base.config) if base is not None else []
    return {
        "sources": [str(p) for p in paths],
        "environment": environment(),
        "suites": [{k: s.get(k) for k in ("suite", "description", "axes", "seeds", "wall_time_s", "overhead")} for s in suites],
        "attacks": attacks,
        "baseline": baseline_group.label,
        "groups": summaries,
        "failed_cells": [{"name": c["name"], "error": c.get("error")} for c in failed],
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
