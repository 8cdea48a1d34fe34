"""The report's figures, drawn with matplotlib and returned as PNG bytes (embedded as base64)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from fl_mia.referee.metrics import roc_points
from fl_mia.report.collect import Group, RunRecord, candidate_truth

FRONTIER_KEYS = (("auc", "attack AUC", 0.5), ("tpr_at_1pct_fpr", "attack TPR at 1% FPR", 0.01))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def roc_overlay(groups: list[Group], attack: str) -> bytes | None:
    """Log-log ROC of one attack, one curve per group (seeds pooled), with the chance line."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5.2, 4.4))
    drawn = False
    for index, group in enumerate(groups):
        scores, members = [], []
        for run in group.runs:
            path = run.run_dir / "scores.npz"
            if not path.is_file():
                continue
            with np.load(path) as archive:
                if attack not in archive.files:
                    continue
                scores.append(archive[attack])
            members.append(candidate_truth(run.run_dir)[0])
        if not scores:
            continue
        fpr, tpr = roc_points(np.concatenate(scores), np.concatenate(members))
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=group.label, color=f"C{index % 10}")
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    ax.plot([1e-4, 1], [1e-4, 1], "k:", linewidth=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{attack} · seeds pooled", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return _png(figure)


def frontier(summaries: list[dict[str, Any]], attacks: list[str]) -> bytes:
    """Attack AUC and TPR@1%FPR against Dice, seed means with their 95% intervals as error bars."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    markers = "osD^vP*X<>"
    for ax, (key, label, chance) in zip(axes, FRONTIER_KEYS):
        for a_index, attack in enumerate(attacks):
            for g_index, summary in enumerate(summaries):
                entry = summary["attacks"].get(attack)
                dice = summary["dice"]
                if entry is None or dice["mean"] is None or entry[key]["mean"] is None:
                    continue
                x, y = dice["mean"], entry[key]["mean"]
                xerr = None if dice["ci"] is None else [[x - dice["ci"][0]], [dice["ci"][1] - x]]
                yerr = None if entry[key]["ci"] is None else [[y - entry[key]["ci"][0]], [entry[key]["ci"][1] - y]]
                ax.errorbar(
                    x, y, xerr=xerr, yerr=yerr, fmt=markers[g_index % len(markers)], color=f"C{a_index % 10}",
                    capsize=3, alpha=0.85, label=f"{attack} · {summary['label']}",
                )  # fmt: skip
        ax.axhline(chance, color="k", linestyle=":", linewidth=0.8)
        ax.set_ylim(-0.02, 1.02)  # rates: a t-interval over few seeds may reach past them
        ax.set_xlabel("Dice of the global model (mean over seeds)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    figure.suptitle("privacy–utility frontier: colour = attack, marker = cell; bars = 95% interval over seeds", fontsize=10)
    rows = (len(labels) + 2) // 3
    figure.tight_layout(rect=(0, min(0.5, 0.04 * rows + 0.02), 1, 1))
    return _png(figure)


def privacy_by_round(runs: list[RunRecord], attack: str) -> bytes | None:
    """Per-round AUC of an attack, one line per run (those that score every round)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 3.8))
    groups = list(dict.fromkeys(r.group for r in runs))
    drawn = False
    for run in runs:
        per_round = ((run.metrics.get("privacy") or {}).get(attack) or {}).get("per_round")
        if not per_round:
            continue
        rounds = sorted(per_round, key=int)
        ax.plot([int(r) for r in rounds], [per_round[r]["auc"] for r in rounds], color=f"C{groups.index(run.group) % 10}",
                alpha=0.7, label=run.group if run.seed == min(r.seed for r in runs if r.group == run.group) else None)  # fmt: skip
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    ax.axhline(0.5, color="k", linestyle=":", linewidth=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"{attack} AUC")
    ax.set_title(f"{attack} by round · one line per seed", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)
