"""Re-score finished runs with membership AUC inside lesion / lesion-free strata.

    python bench/stratified_auc.py RUN_DIR [RUN_DIR ...]

Why: on small candidate sets, members and non-members can differ in composition (a
different share of lesion-free slices on each side), so a score that uses no model at all —
minus the lesion area, metrics.json privacy.candidate_set.lesion_area_auc — can beat chance,
and a model that predicts "no lesion" everywhere gives the loss and label-only attacks that
AUC too. Within a stratum that confound is gone. Reads keep.npy and scores.npz
(re-scoring without retraining) and rebuilds the candidates' masks from config.toml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from fl_mia.config.loading import load_config
from fl_mia.referee.candidates import lesion_area
from server.federation import draw_candidates


def _auc(is_member: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(is_member, scores)) if 0 < is_member.sum() < len(is_member) else float("nan")


def stratified(run_dir: Path) -> None:
    cfg = load_config(run_dir / "config.toml")
    candidates, _ = draw_candidates(cfg)
    keep = np.load(run_dir / "keep.npy").astype(bool)  # [candidates, hospitals]
    is_member = keep[np.arange(len(keep)), candidates.hospital]  # in the hospital it was drawn for
    area = lesion_area(candidates.masks, cfg.data.task)
    empty = area == 0
    print(f"{run_dir}: lesion-free slices {empty[is_member].mean():.0%} of members, {empty[~is_member].mean():.0%} of non-members;"
          f" AUC of −lesion area (no model) {_auc(is_member, -area):.3f}")
    print(f"  {'attack':<14} {'AUC':>6} {'lesion':>7} {'no lesion':>9}   (candidates: {(~empty).sum()} with a lesion, {empty.sum()} without)")
    scores = np.load(run_dir / "scores.npz")
    for name in sorted(k for k in scores.files if ".round" not in k):
        s = scores[name]
        print(f"  {name:<14} {_auc(is_member, s):6.3f} {_auc(is_member[~empty], s[~empty]):7.3f} {_auc(is_member[empty], s[empty]):9.3f}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        stratified(Path(arg))
