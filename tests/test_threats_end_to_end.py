"""Dishonest server through the real Flower simulation, on the tiny federation."""

from __future__ import annotations

import numpy as np
import pytest

from fl_mia.config.loading import build_config
from fl_mia.app.experiment import run_experiment
from fl_mia.referee.scopes import headline
from tests.conftest import tiny_raw

ONE_ROUND = {"rounds": 1, "num_hospitals": 2, "patients_per_hospital": 8}
FAST_ATTACKER = {"prediction_attacks": ["loss"], "per_round_attacks": []}
# The loss-based update signals only: no per-sample gradient pass.
WITHOUT_GRADIENT_ALIGNMENT = {**FAST_ATTACKER, "update_attacks": ["returned_loss", "loss_reduction", "loss_log_ratio"]}


def run(tmp_path, name, **sections):
    sections = {"federation": ONE_ROUND, "attacker": FAST_ATTACKER, **sections}
    raw = tiny_raw(**sections)
    raw["name"] = name
    result = run_experiment(build_config(raw), runs_root=tmp_path)
    with np.load(result.run_dir / "scores.npz") as archive:
        matrices = {k: archive[k] for k in archive.files if k.startswith("update_matrix.")}
    return result.metrics, matrices


@pytest.mark.slow
def test_secagg_hides_each_hospital_and_model_inconsistency_recovers_the_target(tmp_path):
    inconsistency = {"poisoning": "model_inconsistency", "target_hospitals": [0]}
    fast = WITHOUT_GRADIENT_ALIGNMENT
    plain, plain_scores = run(tmp_path, "plain-mi", threat=inconsistency, attacker=fast)
    secagg, secagg_scores = run(tmp_path, "secagg", attacker=fast, defences={"secagg": {"enabled": True}})
    attacked, attacked_scores = run(
        tmp_path, "secagg-mi", threat=inconsistency, attacker=fast, defences={"secagg": {"enabled": True}}
    )
    signal = "update_matrix.returned_loss"
    # SecAgg+: the server can attribute only the aggregate, the same to every hospital.
    assert np.allclose(secagg_scores[signal][0, :, 0], secagg_scores[signal][0, :, 1])
    # Model inconsistency: the target's own returned model comes out of the secure sum (up to
    # SecAgg+'s quantisation and the silenced hospitals' head bias), as the plain server sees it.
    recovered, seen_in_clear = attacked_scores[signal][0, :, 0], plain_scores[signal][0, :, 0]
    assert np.allclose(recovered, seen_in_clear, atol=2e-2 * np.abs(seen_in_clear).max())
    assert not np.allclose(recovered, attacked_scores[signal][0, :, 1])
    assert attacked["threat"]["poisoned_hospitals"] == [1]
    assert plain["threat"]["stealth"]["ratio"] is not None


@pytest.mark.slow
def test_isolation_run_reports_threat_update_attacks_and_source_inference(tmp_path):
    metrics, matrices = run(tmp_path, "isolation", federation={**ONE_ROUND, "rounds": 2}, threat={"poisoning": "isolation"})
    assert metrics["threat_model"] == "malicious (isolation)"
    assert "sends hospitals [0]" in metrics["threat"]["what_the_server_changes"]
    privacy = metrics["privacy"]
    for name in ("update.returned_loss", "update.loss_reduction.accumulated", "update.gradient_alignment"):
        # Hospital 0 got other models than the rest: no pooled figure, the targeted one is the headline.
        assert "overall" not in privacy[name] and privacy[name]["headline"] == "targeted"
        assert 0.0 <= headline(privacy[name])["auc"] <= 1.0 and privacy[name]["targeted"]["hospitals"] == [0]
    assert 0.0 <= privacy["source_inference"]["accuracy"] <= 1.0
    assert matrices["update_matrix.returned_loss"].shape[0] == 2


@pytest.mark.slow
def test_consistency_check_refuses_the_inconsistent_round_and_the_run_goes_on(tmp_path):
    metrics, matrices = run(
        tmp_path, "secagg-mi-checked",
        federation={**ONE_ROUND, "rounds": 2},
        threat={"poisoning": "model_inconsistency", "target_hospitals": [0], "poison_rounds": [2]},
        attacker=WITHOUT_GRADIENT_ALIGNMENT,
        defences={"secagg": {"enabled": True}, "consistency": {"mode": "refuse"}},
    )
    assert metrics["rounds_completed"] == 2
    assert metrics["failures"]["refused"] == 2  # both hospitals withheld their shares in round 2
    signal = matrices["update_matrix.returned_loss"]
    assert np.isfinite(signal[0]).all()  # round 1: the (secure) aggregate was opened
    assert np.isnan(signal[1]).all()  # round 2: the server learned nothing, target included


@pytest.mark.slow
def test_trap_weights_run_names_the_members_of_the_trapped_hospital(tmp_path):
    metrics, matrices = run(
        tmp_path, "trap",
        federation={"rounds": 2, "num_hospitals": 2, "patients_per_hospital": 16},
        threat={"poisoning": "trap_weights", "target_hospitals": [0], "poison_rounds": [2],
                "trap_weights": {"detectors_per_round": 32}},
        attacker=WITHOUT_GRADIENT_ALIGNMENT,
    )
    trap = metrics["privacy"]["update.trap_trace"]["per_hospital"]["0"]
    assert trap["auc"] >= 0.95 and trap["tpr_at_1pct_fpr"] >= 0.9
    assert metrics["threat"]["trap"]["candidates_covered"] == 1.0
    traces = matrices["update_matrix.trap_trace"]
    assert np.isnan(traces[0]).all()  # round 1 was honest
    assert np.isnan(traces[1][:, 1]).all()  # hospital 1 was never trapped
