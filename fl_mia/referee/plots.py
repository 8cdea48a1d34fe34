"""Privacy figures of a run: log-log ROC of every attack, AUC and TPR@1%FPR per round."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs in a server process without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fl_mia.referee.metrics import roc_points  # noqa: E402
from fl_mia.run_folder import atomic_write_bytes  # noqa: E402


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_roc_loglog(
    path: Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    dp_bound: tuple[float, float] | None = None,
) -> None:
    """ROC of every attack on log-log axes (low FPR is where membership leaks matter).

    ``curves`` maps attack name to ``(scores, is_member)``. Zero rates are drawn at half the
    smallest resolvable rate so that the curve stays on the log axes. ``dp_bound`` = (ε, δ)
    draws the ceiling TPR ≤ min(1, e^ε·FPR + δ) that (ε, δ)-DP puts on every attack.
    """
    figure, axes = plt.subplots(figsize=(5.2, 5))
    floor = 1.0
    x_floor = 1.0
    for name, (scores, is_member) in curves.items():
        fpr, tpr = roc_points(scores, is_member)
        n_neg, n_pos = int((~np.asarray(is_member, bool)).sum()), int(np.asarray(is_member, bool).sum())
        # The x-axis starts at 1/n (one false positive): below it the candidates say nothing;
        # FPR 0 is drawn on that edge. Zero TPRs are drawn at half the smallest TPR step.
        x_low = 1.0 / max(n_neg, 1)
        x_floor = min(x_floor, x_low)
        floor = min(floor, 0.5 / max(n_pos, 1))
        auc = float(np.trapezoid(tpr, fpr))
        axes.plot(np.maximum(fpr, x_low), np.maximum(tpr, floor), label=f"{name} (AUC {auc:.3f})")
    floor = min(floor, x_floor)
    axes.plot([x_floor, 1], [x_floor, 1], "k--", linewidth=0.8, label="chance")
    if dp_bound is not None:
        epsilon, delta = dp_bound
        fpr_grid = np.logspace(np.log10(x_floor), 0, 200)
        ceiling = np.minimum(1.0, np.exp(epsilon) * fpr_grid + delta)
        axes.plot(fpr_grid, ceiling, color="crimson", linestyle=":", linewidth=1.2, label=f"DP bound ε={epsilon:.2f}, δ={delta:g}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(x_floor, 1)
    axes.set_ylim(floor, 1)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.legend(fontsize=7, loc="lower right")
    _save(figure, path)


def plot_privacy_by_round(path: Path, per_round: dict[str, dict[int, dict]], *, title: str) -> None:
    """AUC and TPR at 1% FPR of each per-round attack on every round's global model."""
    figure, (auc_axes, tpr_axes) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, rounds in per_round.items():
        order = sorted(rounds)
        auc_axes.plot(order, [rounds[r]["auc"] for r in order], marker="o", label=name)
        tpr_axes.plot(order, [rounds[r]["tpr_at_1pct_fpr"] for r in order], marker="o", label=name)
    auc_axes.axhline(0.5, color="k", linestyle="--", linewidth=0.8, label="chance")
    tpr_axes.axhline(0.01, color="k", linestyle="--", linewidth=0.8, label="chance")
    auc_axes.set(xlabel="round (0 = untrained)", ylabel="AUC", title="AUC")
    tpr_axes.set(xlabel="round (0 = untrained)", ylabel="TPR at 1% FPR", title="TPR at 1% FPR")
    auc_axes.legend(fontsize=7)
    figure.suptitle(title)
    _save(figure, path)
