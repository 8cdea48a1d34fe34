"""The privacy step inside a real Flower simulation (Ray): outputs, metrics and summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fl_mia.config.loading import build_config
from fl_mia.app.experiment import run_experiment
from fl_mia.console_summary import render_summary
from tests.conftest import tiny_raw


@pytest.mark.slow
def test_run_with_privacy_writes_every_privacy_output(tmp_path):
    cfg = build_config(
        tiny_raw(attacker={"prediction_attacks": ["loss", "label_only", "learned_type2"], "per_round_attacks": ["loss"],
                           "learned_type2": {"epochs": 2}, "label_only": {"queries": 1}})
    )
    result = run_experiment(cfg, runs_root=tmp_path)
    run_dir = result.run_dir
    for name in ("keep.npy", "candidates.csv", "scores.npz", "roc_loglog.png", "privacy_by_round.png"):
        assert (run_dir / name).is_file(), name
    privacy = json.loads((run_dir / "metrics.json").read_text())["privacy"]
    assert set(privacy["loss"]["per_round"]) == {"0", "1", "2"}  # untrained model and both rounds
    keep, scores = np.load(run_dir / "keep.npy"), np.load(run_dir / "scores.npz")
    hospital = np.loadtxt(run_dir / "candidates.csv", delimiter=",", skiprows=1, dtype=int)[:, 1]
    is_member = keep[np.arange(len(keep)), hospital]
    assert privacy["learned_type2"]["overall"]["auc"] == roc_auc_score(is_member, scores["learned_type2"])
    summary = render_summary(result.metrics)
    assert "membership inference" in summary and "learned_type2" in summary
