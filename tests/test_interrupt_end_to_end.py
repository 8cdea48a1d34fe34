"""One Ctrl-C to a real run and a real suite: they stop within seconds with the line that
continues them, and the continued run ends where an uninterrupted one does."""

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
from typer.testing import CliRunner

from fl_mia.app.cli import app
from fl_mia.checkpoint import checkpoint_round
from fl_mia.run_folder import write_toml

ROOT = Path(__file__).resolve().parent.parent
STOP_WITHIN_S = 15.0


def _ctrl_c_after_first_checkpoint(args: list[str], run_dir: Path) -> tuple[int, float, str]:
    """Start the CLI in its own process group and send the group SIGINT (what a terminal's Ctrl-C
    does, Ray's processes included) once ``run_dir`` holds a checkpoint; return code, seconds, output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fl_mia.app.cli", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None and not (checkpoint_round(run_dir) or 0) >= 1:
        time.sleep(0.2)
    assert process.poll() is None, "the command ended before it could be interrupted: " + process.stdout.read()
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, time.monotonic() - sent, output


def _rounds(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "rounds.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_one_sigint_stops_a_run_and_a_suite_and_resume_ends_where_an_uninterrupted_run_does(tmp_path, uninterrupted_three_rounds):
    raw, full = uninterrupted_three_rounds
    write_toml(tmp_path / "base.toml", raw)

    run_dir = tmp_path / "run"
    code, seconds, output = _ctrl_c_after_first_checkpoint(["run", str(tmp_path / "base.toml"), "--out", str(run_dir)], run_dir)
    assert code == 130, output
    assert seconds <= STOP_WITHIN_S, f"took {seconds:.1f} s to stop"
    assert f"continue with: fl-mia run --resume {run_dir}" in output, output
    assert "Traceback" not in output and "ActorDiedError" not in output, output
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["last_round"] >= 1
    resumed = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output

    suite = tmp_path / "suite.toml"
    suite.write_text('name = "tiny"\nconfig = "base.toml"\nseeds = [0]\n')
    out = tmp_path / "suite"
    cell = out / "cells" / "seed=0"
    code, seconds, output = _ctrl_c_after_first_checkpoint(["suite", str(suite), "--out", str(out)], cell)
    assert code == 130, output
    assert seconds <= STOP_WITHIN_S, f"took {seconds:.1f} s to stop"
    assert f"continue with: fl-mia suite {suite} --out {out} --resume" in output, output
    assert "Traceback" not in output, output
    again = CliRunner().invoke(app, ["suite", str(suite), "--out", str(out), "--resume"])
    assert again.exit_code == 0, again.output
    assert "seed=0 · resumed" in again.output, again.output

    assert _rounds(run_dir) == _rounds(full.run_dir)
    assert _rounds(cell) == _rounds(full.run_dir)
    wall_clock = ("wall_time_s", "cost")
    resumed_metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {k: v for k, v in resumed_metrics.items() if k not in wall_clock} == {
        k: v for k, v in full.metrics.items() if k not in wall_clock
    }
