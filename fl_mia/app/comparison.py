"""Side-by-side comparison of finished runs on the same candidates (threat models, defences).

Reads only what runs saved (``metrics.json``, ``scores.npz``, ``keep.npy``,
``candidates.csv``), so any set of runs can be compared later without retraining.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl_mia.referee.scopes import headline, resolvable_tpr
from fl_mia.run_folder import write_csv

DEFAULT_ATTACKS = (
    "loss",
    "update.returned_loss",
    "update.loss_log_ratio.accumulated",
    "update.gradient_alignment.accumulated",
    "update.trap_trace",  # only runs of the trap-weights strategy have it
)


# TPR at 1% FPR means something only when one false positive is at most 1% of the non-members.
RESOLVES_ONE_PERCENT = 100


class ComparisonError(ValueError):
    """Runs cannot be compared; the message names the run and what to do."""


@dataclass
class SavedRun:
    path: Path
    metrics: dict[str, Any]
    scores: dict[str, np.ndarray]
    is_member: np.ndarray
    candidates_text: str

    @classmethod
    def load(cls, path: Path) -> "SavedRun":
        path = Path(path)
        needed = ["metrics.json", "scores.npz", "keep.npy", "candidates.csv"]
        missing = [name for name in needed if not (path / name).is_file()]
        if missing:
            raise ComparisonError(f"{path}: no {missing[0]}; compare finished runs with the privacy step on")
        keep = np.load(path / "keep.npy")
        text = (path / "candidates.csv").read_text()
        drawn_for = np.array([int(line.split(",")[1]) for line in text.strip().splitlines()[1:]], dtype=np.int64)
        with np.load(path / "scores.npz") as archive:
            scores = {name: archive[name] for name in archive.files}
        return cls(path, json.loads((path / "metrics.json").read_text()), scores, keep[np.arange(len(keep)), drawn_for], text)

    @property
    def label(self) -> str:
        defences = self.metrics.get("defences") or []
        suffix = f" + {', '.join(defences)}" if defences else ""
        return f"{self.metrics['experiment']} ({self.metrics['threat_model']}{suffix})"


def load_runs(paths: list[Path]) -> list[SavedRun]:
    runs = [SavedRun.load(p) for p in paths]
    reference = runs[0]
    for run in runs[1:]:
        if run.candidates_text != reference.candidates_text:
            raise ComparisonError(
                f"{run.path}: its candidate set differs from {reference.path}'s; compare runs of the same data, "
                "hospitals and seed (e.g. configs/threats/*.toml, which extend one base)"
            )
    return runs


def run_labels(runs: list[SavedRun]) -> list[str]:
    """One distinct label per run: its experiment's name, with its folder where two runs share a name."""
    names = [run.metrics["experiment"] for run in runs]
    labels = [name if names.count(name) == 1 else f"{name} [{run.path.name}]" for name, run in zip(names, runs)]
    if len(set(labels)) < len(labels):  # the same folder name twice: fall back to the whole path
        labels = [f"{name} [{run.path}]" if names.count(name) > 1 else name for name, run in zip(names, runs)]
    return labels


def check_new_comparison_folder(out: Path, *, overwrite: bool) -> None:
    """An earlier comparison is never replaced without being asked to."""
    if not overwrite and (Path(out) / "comparison.csv").exists():
        raise ComparisonError(f"{out}: already holds a comparison; choose another --out, or add --overwrite to replace it")


def comparison_rows(runs: list[SavedRun], attacks: list[str], *, hospital: str | None) -> list[dict[str, Any]]:
    """One row per run; TPR at 1% FPR is ``None`` where the candidates cannot resolve it."""
    rows = []
    for run, label in zip(runs, run_labels(runs)):
        privacy = run.metrics.get("privacy", {})
        row: dict[str, Any] = {
            "run": label,
            "threat_model": run.metrics["threat_model"],
            "defences": "+".join(run.metrics.get("defences") or []) or "none",
            "dice": run.metrics["utility"]["dice"],
            "path": str(run.path),
        }
        for attack in attacks:
            result = privacy.get(attack)
            # One hospital when asked; else the headline (targeted where the models differed).
            scope = None if result is None else (result["per_hospital"].get(hospital) if hospital else headline(result))
            row[f"{attack}:auc"] = None if scope is None else scope["auc"]
            row[f"{attack}:tpr@1%"] = resolvable_tpr(scope)
        rows.append(row)
    return rows


def write_comparison(runs: list[SavedRun], attacks: list[str], out: Path, *, hospital: str | None) -> list[dict]:
    """``comparison.csv`` and ``comparison_roc.png`` (log-log, one curve per run and attack)."""
    from fl_mia.referee.plots import plot_roc_loglog

    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(runs, attacks, hospital=hospital)
    columns = ["run", "threat_model", "defences", "dice"] + [f"{a}:{m}" for a in attacks for m in ("auc", "tpr@1%")] + ["path"]
    write_csv(out / "comparison.csv", rows, columns)
    curves = {}
    for run, label in zip(runs, run_labels(runs)):
        drawn_for = np.array([int(line.split(",")[1]) for line in run.candidates_text.strip().splitlines()[1:]])
        for attack in attacks:
            shown = headline(run.metrics.get("privacy", {}).get(attack))
            # Never one ROC over hospitals that were sent different models: the headline's hospitals.
            hospitals = [int(hospital)] if hospital is not None else (shown or {}).get("hospitals", sorted(set(drawn_for)))
            chosen = np.isin(drawn_for, hospitals)
            if attack in run.scores:
                curves[f"{label} · {attack}"] = (run.scores[attack][chosen], run.is_member[chosen])
    scope = f"hospital {hospital}" if hospital is not None else "headline hospitals of each run"
    plot_roc_loglog(out / "comparison_roc.png", curves, title=f"{len(runs)} runs · {scope}")
    return rows
