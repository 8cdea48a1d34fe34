"""The report's figures, drawn with matplotlib and returned as PNG bytes (embedded as base64)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from fl_mia.referee.metrics import roc_points
from fl_mia.referee.scopes import headline
from fl_mia.referee.statistics import non_members_needed
from fl_mia.report.collect import Group, RunRecord
from fl_mia.report.pairing import scores_on

FRONTIER_KEYS = (("auc", "attack AUC", 0.5), ("tpr_at_1pct_fpr", "attack TPR at 1% FPR", 0.01))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    """PNG bytes; saved with a tight bounding box so no legend or label is ever cut off at the edge."""
    plt = _pyplot()
    LAYOUT_PROBLEMS.extend(f"{figure.texts[0].get_text() if figure.texts else figure.axes[0].get_title()}: {p}" for p in layout_problems(figure))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


# Layout problems found while saving figures (``report_screenshot.py`` fails when any is left).
LAYOUT_PROBLEMS: list[str] = []


def layout_problems(figure) -> list[str]:
    """Legends that overlap a plotting area or another legend, or fall outside the tight box saved.

    Checked on every figure at save time from the artists' drawn extents: a tight save grows the
    canvas to hold every legend, so what is left to catch is overlap.
    """
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legends = [lg for lg in [*figure.legends, *(ax.get_legend() for ax in figure.axes)] if lg is not None and lg.get_visible()]
    # Legends added with add_artist are kept as artists of their axes, not as its legend.
    legends += [a for ax in figure.axes for a in ax.artists if type(a).__name__ == "Legend" and a not in legends]
    boxes = [lg.get_window_extent(renderer) for lg in legends]
    saved = figure.get_tightbbox(renderer).transformed(figure.dpi_scale_trans)
    problems = []
    for i, box in enumerate(boxes):
        title = legends[i].get_title().get_text() or f"legend {i}"
        if box.x0 < saved.x0 - 1 or box.y0 < saved.y0 - 1 or box.x1 > saved.x1 + 1 or box.y1 > saved.y1 + 1:
            problems.append(f"{title}: outside the saved area")
        for ax in figure.axes:
            if legends[i].axes is not ax and box.overlaps(ax.get_window_extent(renderer)):
                problems.append(f"{title}: over a plot")
        for j in range(i):
            if box.overlaps(boxes[j]):
                problems.append(f"{title}: over another legend")
    return problems


def _targeted_hospitals(groups: list[Group], attack: str) -> list[int] | None:
    """The hospitals of every targeted headline among the groups' runs; None when every run pooled all hospitals."""
    found: set[int] = set()
    for run in (r for g in groups for r in g.runs):
        result = (run.metrics.get("privacy") or {}).get(attack) or {}
        if result.get("headline") == "targeted" and headline(result) is not None:
            found.update(headline(result)["hospitals"])
    return sorted(found) or None


def roc_overlay(groups: list[Group], attack: str) -> bytes | None:
    """Log-log ROC of one attack, one curve per group (seeds pooled), with the chance line.

    Where a threat sent hospitals different models, every curve is drawn on its targeted
    hospitals' candidates (a baseline too: one figure, one candidate set); else on all. The
    x-axis starts at 1/n (n: the most non-members of a curve): below one false positive the
    candidates say nothing.
    """
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5.2, 4.4))
    x_floor, drawn = 1.0, False
    hospitals = _targeted_hospitals(groups, attack)
    for index, group in enumerate(groups):
        parts = [p for p in (scores_on(run, attack, hospitals) for run in group.runs) if p is not None]
        if not parts:
            continue
        scores, members = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        fpr, tpr = roc_points(scores, members)
        low = 1.0 / max(int((~members).sum()), 1)
        x_floor = min(x_floor, low)
        ax.plot(np.maximum(fpr, low), np.maximum(tpr, low), label=group.label, color=f"C{index % 10}")
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    ax.plot([x_floor, 1], [x_floor, 1], "k:", linewidth=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_floor, 1)
    ax.set_ylim(x_floor, 1)
    ax.set_xlabel("false positive rate (from 1/n)")
    ax.set_ylabel("true positive rate")
    where = "all hospitals" if hospitals is None else f"targeted hospitals {hospitals}"
    ax.set_title(f"{attack} · seeds pooled · {where}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.grid(alpha=0.3, which="both")
    return _png(figure)


def _frontier_points(summaries: list[dict[str, Any]], attacks: list[str], key: str):
    """(attack, cell index, x, y, xerr, yerr) of every seeds-mean point; no TPR the non-members cannot resolve."""
    for a_index, attack in enumerate(attacks):
        for g_index, summary in enumerate(summaries):
            entry, dice = summary["attacks"].get(attack), summary["dice"]
            if entry is None or dice["mean"] is None or entry[key]["mean"] is None:
                continue
            pooled = entry.get("pooled") or {}
            if key != "auc" and pooled.get("non_members", 0) < non_members_needed(0.01):
                continue  # unresolvable: never plotted
            x, y = dice["mean"], entry[key]["mean"]
            xerr = None if dice["ci"] is None else [[x - dice["ci"][0]], [dice["ci"][1] - x]]
            yerr = None if entry[key]["ci"] is None else [[y - entry[key]["ci"][0]], [entry[key]["ci"][1] - y]]
            yield a_index, g_index, x, y, xerr, yerr


def frontier(summaries: list[dict[str, Any]], attacks: list[str]) -> bytes:
    """Attack AUC and TPR@1%FPR against Dice: colour = attack, marker = cell, two short legends beside the plots.

    Points of one cell are nudged apart horizontally so that attacks at the same Dice do not
    hide each other; bars are 95% intervals over seeds.
    """
    plt = _pyplot()
    from matplotlib.lines import Line2D

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    markers = "osD^vP*X<>hH"
    spread = 0.004 * (len(attacks) - 1)
    for ax, (key, label, chance) in zip(axes, FRONTIER_KEYS):
        for a_index, g_index, x, y, xerr, yerr in _frontier_points(summaries, attacks, key):
            nudge = (a_index / max(len(attacks) - 1, 1) - 0.5) * spread
            ax.errorbar(x + nudge, y, xerr=xerr, yerr=yerr, fmt=markers[g_index % len(markers)], color=f"C{a_index % 10}",
                        capsize=2, alpha=0.85, markersize=5)  # fmt: skip
        ax.axhline(chance, color="k", linestyle=":", linewidth=0.8)
        ax.set_ylim(-0.02, 1.02)  # rates: a t-interval over few seeds may reach past them
        ax.set_xlabel("Dice of the global model (mean over seeds)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    attack_handles = [Line2D([], [], color=f"C{i % 10}", marker="s", linestyle="", label=a) for i, a in enumerate(attacks)]
    cell_handles = [Line2D([], [], color="grey", marker=markers[i % len(markers)], linestyle="", label=s["label"]) for i, s in enumerate(summaries)]
    axes[1].legend(handles=attack_handles, title="attack (colour)", fontsize=7, title_fontsize=8, loc="upper left",
                   bbox_to_anchor=(1.02, 1.0), frameon=False)  # fmt: skip
    figure.legend(handles=cell_handles, title="cell (marker)", fontsize=7, title_fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(cell_handles)), frameon=False)  # fmt: skip
    figure.suptitle("privacy–utility frontier · bars: 95% interval over seeds · TPR only where ≥100 non-members resolve it", fontsize=10)
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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    return _png(figure)
