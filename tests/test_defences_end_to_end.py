"""The defences through the real Flower simulation (Ray), on the tiny federation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fl_mia.config.loading import build_config, load_config
from fl_mia.app.experiment import run_experiment
from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parent.parent


def test_every_defence_config_loads_and_switches_its_defence_on():
    files = sorted((ROOT / "configs" / "defences").glob("*.toml"))
    assert len(files) >= 5
    for path in files:
        assert load_config(path).defences.active(), path.name


@pytest.mark.slow
def test_secagg_with_consistency_check_and_client_dp_end_to_end(tmp_path):
    cfg = build_config(
        tiny_raw(
            defences={
                "secagg": {"enabled": True},
                "consistency": {"mode": "refuse"},
                "central_dp": {"mode": "client_clipping", "noise_multiplier": 0.01, "clipping_norm": 5.0},
            }
        )
    )
    metrics = run_experiment(cfg, runs_root=tmp_path).metrics
    assert metrics["rounds_completed"] == 2
    assert metrics["defences"] == ["secagg+", "central_dp:client_clipping", "consistency:refuse"]
    report = metrics["defence_report"]
    assert 0 < report["secagg"]["max_abs_delta"] <= 1.0
    assert report["central_dp"]["epsilon"]["value"] > 0 and report["central_dp"]["epsilon"]["unit"] == "hospital"
    assert "NOT the server" in report["central_dp"]["protects_against"]
    verdicts = report["consistency"]["verdicts"]
    assert set(verdicts) == {"1", "2"} and all(v["consistent"] for r in verdicts.values() for v in r.values())
    with open(next(tmp_path.glob("*/rounds.csv"))) as handle:
        rows = [r for r in csv.DictReader(handle) if r["hospital"] in ("0", "1") and r["round"] != "0"]
    assert all(r["participated"] == "1" for r in rows)  # per-hospital metrics still reach the server


@pytest.mark.slow
def test_dp_sgd_end_to_end_reports_epsilon_over_all_rounds(tmp_path):
    cfg = build_config(tiny_raw(defences={"dp_sgd": {"enabled": True, "noise_multiplier": 1.0}}))
    metrics = run_experiment(cfg, runs_root=tmp_path).metrics
    report = metrics["defence_report"]["dp_sgd"]
    assert report["epsilon"]["unit"] == "patient" and report["epsilon"]["value"] == report["epsilon_max"]
    assert set(report["epsilon_per_hospital"]) == {"0", "1"}
    from fl_mia.data import build_hospital
    from fl_mia.defences.accounting import epsilon_of
    from fl_mia.defences.dp_sgd import plan_for_split

    for hospital, epsilon in report["epsilon_per_hospital"].items():
        plan = plan_for_split(
            cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds,
            split=build_hospital(cfg.data, cfg.federation, int(hospital), seed=cfg.seed).train,
        )
        expected = epsilon_of([(1.0, plan.sample_rate, 2 * plan.steps_per_round)], delta=plan.delta)
        assert epsilon == pytest.approx(expected, rel=1e-9)  # both rounds, kept in the node's state
    assert report["epsilon_max"] == max(report["epsilon_per_hospital"].values())
