"""An unexpected error during a run: one short paragraph on the console, the traceback in run.log."""

from __future__ import annotations

import json

import fl_mia.app.experiment as experiment
from tests.test_cli import QUICKSTART, run_cli


def crash_with_big_locals(cfg, run_dir, on_round_end, *, resume=None):
    huge_local = ["a value that must never reach the console"] * 10_000  # noqa: F841 (rich printed locals)
    raise RuntimeError("simulated bug in round 1\nsecond line of a long remote traceback\n" + "frame\n" * 400)


def test_crash_prints_a_short_paragraph_and_logs_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "_simulate", crash_with_big_locals)
    run_dir = tmp_path / "run"
    result = run_cli("run", QUICKSTART, "--set", "federation.rounds=1", "--out", str(run_dir))

    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    after_banner = [line for line in lines if not line.startswith("fl-mia ·")]
    assert len(after_banner) <= 4, result.output
    assert "RuntimeError: simulated bug in round 1" in result.output
    assert str(run_dir / "run.log") in result.output.replace("\n", "")
    assert "must never reach the console" not in result.output and "second line" not in result.output

    log = (run_dir / "run.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "crash_with_big_locals" in log and "second line of a long remote traceback" in log
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
