"""Real Flower simulations (Ray backend) on tiny settings: the wiring, end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from fl_mia.config.loading import build_config
from fl_mia.app.experiment import run_experiment
from fl_mia.devices import torch_threads
from tests.conftest import tiny_raw


def read_rounds(run_dir):
    with open(run_dir / "rounds.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return run_experiment(build_config(tiny_raw()), runs_root=root)


def test_run_folder_has_every_documented_output(tiny_run):
    run_dir = tiny_run.run_dir
    for name in ("config.toml", "status.json", "metrics.json", "rounds.csv", "timings.csv", "global_model.pt", "run.log"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    metrics = tiny_run.metrics
    assert set(metrics["utility"]["per_hospital"]) == {"0", "1"}
    for key in ("dice", "iou"):
        assert 0.0 <= metrics["utility"][key] <= 1.0
    assert metrics["wall_time_s"] > 0
    assert metrics["rounds_completed"] == 2


def test_rounds_csv_has_a_row_per_round_and_hospital(tiny_run):
    rows = read_rounds(tiny_run.run_dir)
    keys = [(r["round"], r["hospital"]) for r in rows]
    assert keys == [(str(r), h) for r in range(3) for h in ("0", "1", "all")]
    trained = [r for r in rows if r["round"] != "0" and r["hospital"] != "all"]
    assert all(r["participated"] == "1" and float(r["train_loss"]) > 0 for r in trained)


def test_training_lowers_the_test_loss(tiny_run):
    rows = [r for r in read_rounds(tiny_run.run_dir) if r["hospital"] == "all"]
    assert float(rows[-1]["test_loss"]) < float(rows[0]["test_loss"])


def test_a_second_run_gets_its_own_folder(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="not empty"):
        run_experiment(build_config(tiny_raw()), out=tiny_run.run_dir)
    assert json.loads((tiny_run.run_dir / "status.json").read_text())["state"] == "complete"


@pytest.mark.slow
def test_same_seed_same_rounds_csv_other_seed_different(tiny_run, tmp_path):
    # Again with the process at 3 threads (tiny_run's server ran at conftest's 1): a machine with
    # more cores, or a Ray node that gives the run fewer, must not change a single score.
    with torch_threads(3):
        again = run_experiment(build_config(tiny_raw()), runs_root=tmp_path)
    assert (again.run_dir / "rounds.csv").read_bytes() == (tiny_run.run_dir / "rounds.csv").read_bytes()
    # metrics.json too, except what measures the wall clock (README, "Reproducibility").
    wall_clock = ("wall_time_s", "cost")
    assert {k: v for k, v in again.metrics.items() if k not in wall_clock} == {
        k: v for k, v in tiny_run.metrics.items() if k not in wall_clock
    }
    with np.load(tiny_run.run_dir / "scores.npz") as first, np.load(again.run_dir / "scores.npz") as second:
        assert sorted(first.files) == sorted(second.files)
        assert all(np.array_equal(first[k], second[k], equal_nan=True) for k in first.files)
    first, second = (torch.load(r / "global_model.pt", weights_only=True) for r in (tiny_run.run_dir, again.run_dir))
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = run_experiment(build_config(tiny_raw(seed=1)), runs_root=tmp_path)
    assert (other.run_dir / "rounds.csv").read_bytes() != (tiny_run.run_dir / "rounds.csv").read_bytes()
