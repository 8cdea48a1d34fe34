"""Real Flower simulations: failing hospitals, a killed and resumed run, a round nobody answers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
import torch
from typer.testing import CliRunner

from fl_mia.checkpoint import CHECKPOINT_FILE, CheckpointError, read_checkpoint, config_fingerprint
from fl_mia.app.cli import app
from fl_mia.config.loading import build_config
from fl_mia.app.experiment import run_experiment
from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parent.parent

# Fields that measure the wall clock: they differ between any two runs (README, "Reproducibility").
WALL_CLOCK_KEYS = ("wall_time_s", "cost")


def comparable(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in WALL_CLOCK_KEYS}


def rounds_by_key(run_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(run_dir / "rounds.csv") as handle:
        return {(row["round"], row["hospital"]): row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_a_straggler_and_a_crash_are_dropped_and_the_run_completes(tmp_path):
    # Hospital 1 sleeps past round 1's deadline (its late reply must not leak into round 2);
    # hospital 0 crashes in round 2; round 3 is clean.
    raw = tiny_raw(
        federation={"rounds": 3},
        failures={
            "stragglers": [{"hospital": 1, "rounds": [1]}],
            "crashes": [{"hospital": 0, "rounds": [2]}],
            # Far above a healthy round (2-6 s on two busy cores), so only the straggler is late.
            "round_timeout_s": 15.0,
            "first_round_allowance_s": 15.0,
        },
    )
    started = time.monotonic()
    result = run_experiment(build_config(raw), out=tmp_path / "run")
    elapsed = time.monotonic() - started
    rows = rounds_by_key(result.run_dir)
    statuses = {(r, h): rows[(str(r), str(h))]["status"] for r in (1, 2, 3) for h in (0, 1)}
    assert statuses == {
        (1, 0): "trained", (1, 1): "timed_out",
        (2, 0): "crashed", (2, 1): "trained",
        (3, 0): "trained", (3, 1): "trained",
    }
    assert [rows[(str(r), "all")]["failed"] for r in (1, 2, 3)] == ["1", "1", "0"]
    assert rows[("1", "1")]["train_loss"] == "" and rows[("1", "1")]["participated"] == "0"
    assert result.metrics["failures"] == {
        "crashed": 1, "timed_out": 1, "refused": 0,
        "events": [{"round": 1, "hospital": 1, "status": "timed_out"}, {"round": 2, "hospital": 0, "status": "crashed"}],
    }
    assert result.metrics["rounds_completed"] == 3
    assert json.loads((result.run_dir / "status.json").read_text())["state"] == "complete"
    # The straggler sleeps 35 s; nothing waits for it beyond that (no hang on late replies).
    assert elapsed < 240


@pytest.mark.slow
def test_a_round_without_replies_stops_with_one_line_naming_it(tmp_path):
    config = tmp_path / "all_crash.toml"
    config.write_text(tomli_w.dumps(tiny_raw(failures={"crash_probability": 1.0})))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "round 1: no hospital replied" in error_lines[0]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "round 1" in status["error"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def _kill_after_first_checkpoint(config: Path, run_dir: Path, cfg) -> int:
    """Start ``fl-mia run`` in its own process group; SIGKILL it once round 1 is checkpointed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fl_mia.app.cli", "run", str(config), "--out", str(run_dir)],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if read_checkpoint(run_dir, config_fingerprint(cfg.to_toml_dict())).round >= 1:
                    break
            except CheckpointError:
                pass
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI, Ray and its workers: all of the group
        process.wait()
    return read_checkpoint(run_dir, config_fingerprint(cfg.to_toml_dict())).round


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics_as_an_uninterrupted_one(tmp_path, uninterrupted_three_rounds):
    raw, full = uninterrupted_three_rounds
    cfg = build_config(raw)
    config = tmp_path / "tiny.toml"
    config.write_text(tomli_w.dumps(raw))

    killed = tmp_path / "killed"
    stopped_after = _kill_after_first_checkpoint(config, killed, cfg)
    assert 1 <= stopped_after < 3, "the run finished before it could be killed; nothing was resumed"
    assert json.loads((killed / "status.json").read_text())["state"] == "running"  # never marked complete
    assert not (killed / "metrics.json").exists()

    resumed = CliRunner().invoke(app, ["run", "--resume", str(killed)])
    assert resumed.exit_code == 0, resumed.output
    assert f"after round {stopped_after}" in resumed.output
    status = json.loads((killed / "status.json").read_text())
    assert status["state"] == "complete"

    resumed_metrics = json.loads((killed / "metrics.json").read_text())
    assert comparable(resumed_metrics) == comparable(full.metrics)
    assert (killed / "rounds.csv").read_bytes() == (full.run_dir / "rounds.csv").read_bytes()
    a = torch.load(killed / "global_model.pt", weights_only=True)
    b = torch.load(full.run_dir / "global_model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # A finished run is not resumed again, and is left as it was.
    again = CliRunner().invoke(app, ["run", "--resume", str(killed)])
    assert again.exit_code == 2 and "already complete" in again.output
    assert (killed / CHECKPOINT_FILE).is_file()
