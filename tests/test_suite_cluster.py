"""Suites whose cells run at once: ``--jobs N`` on one machine, Ray tasks over a localhost head + worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from fl_mia.app.suite import SUITE_JSON, load_suite, run_suite
from fl_mia.app.suite_cluster import cell_resources, cells_runner
from fl_mia.config import SimulationConfig
from fl_mia.app.simulation_resources import ray_cluster_address
from tests.conftest import tiny_raw
from tests.test_suite import GRID, FakeRuns, _write_suite

ROOT = Path(__file__).resolve().parent.parent


def _fake_submit(fake: FakeRuns, order: list[str]):
    """Runs each cell at once but finishes them in reverse order, as parallel cells may."""
    pending: list[tuple[Future, object, Path]] = []

    def submit(cell, folder: Path, state: str) -> Future:
        future: Future = Future()
        pending.append((future, cell, folder))
        if len(pending) == 4:
            for waiting, waiting_cell, waiting_folder in reversed(pending):
                order.append(waiting_cell.name)
                try:
                    fake.run(waiting_cell.cfg, out=waiting_folder)
                    waiting.set_result({"label": "complete", "error": None, "cell_seconds": 0.1, "hostname": "h"})
                except RuntimeError as failure:
                    waiting.set_result({"label": "failed", "error": str(failure), "cell_seconds": 0.1, "hostname": "h"})
        return future

    return submit


def test_cells_run_at_once_are_recorded_in_suite_order_with_their_node(tmp_path):
    suite = load_suite(_write_suite(tmp_path, GRID))
    order: list[str] = []
    fake = FakeRuns(fail={"defence=none__seed=1"})
    summary = run_suite(suite, out=tmp_path / "out", run=fake.run, resume_run=fake.resume, cells_runner=cells_runner(_fake_submit(fake, order)))
    names = [cell.name for cell in suite.cells]
    assert order == [cell.name for cell in suite.running_order()][::-1], "the fake must finish cells out of order for this test to mean anything"
    assert [c["name"] for c in summary["cells"]] == names
    assert {c["name"]: c["state"] for c in summary["cells"]}["defence=none__seed=1"] == "failed"
    assert all(c["hostname"] == "h" for c in summary["cells"])
    assert json.loads((tmp_path / "out" / SUITE_JSON).read_text())["cells"] == summary["cells"]


CELL_THAT_WAITS = """
import pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
folder.mkdir(parents=True)
signal.signal(signal.SIGINT, lambda *_: ((folder / "stopped").write_text("SIGINT"), sys.exit(130)))
(folder / "started").write_text("")
time.sleep(120)
"""


def test_closing_the_pool_after_ctrl_c_stops_running_cells_once_and_starts_no_queued_one(tmp_path, monkeypatch):
    import time

    from fl_mia.app import suite_cluster

    script = tmp_path / "cell.py"
    script.write_text(CELL_THAT_WAITS)
    monkeypatch.setattr(suite_cluster, "cell_command", lambda config, folder, state, overrides: [sys.executable, str(script), folder])
    submit, close = suite_cluster.local_pool(2)

    class Cell:
        config_path, overrides = Path("c.toml"), []

    futures = [submit(Cell(), tmp_path / f"cell{i}", "empty") for i in range(3)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"cell{i}" / "started").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    close()  # what the CLI does when Ctrl-C reaches the suite, which alone gets it (cells have their own sessions)
    assert time.monotonic() - started < 30
    assert [(tmp_path / f"cell{i}" / "stopped").read_text() for i in range(2)] == ["SIGINT", "SIGINT"]
    assert not (tmp_path / "cell2").exists(), "a queued cell started after Ctrl-C"
    assert futures[2].cancelled()
    assert [f.result()["label"] for f in futures[:2]] == ["failed", "failed"]  # no result line: exit 130 recorded


def test_sigterm_to_a_suite_running_cells_at_once_stops_them_and_names_the_resume_command(tmp_path, monkeypatch):
    import signal
    import threading
    import time

    from typer.testing import CliRunner

    from fl_mia.app import suite_cluster
    from fl_mia.app.cli import app

    script = tmp_path / "cell.py"
    script.write_text(CELL_THAT_WAITS)
    monkeypatch.setattr(suite_cluster, "cell_command", lambda config, folder, state, overrides: [sys.executable, str(script), folder])
    path = _write_suite(tmp_path, GRID)
    cells = tmp_path / "out" / "cells"

    def terminate_once_two_cells_run() -> None:
        deadline = time.monotonic() + 60
        while len(list(cells.glob("*/started"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)  # what `kill PID` does; it may land on any thread

    threading.Thread(target=terminate_once_two_cells_run, daemon=True).start()
    result = CliRunner().invoke(app, ["suite", str(path), "--out", str(tmp_path / "out"), "--jobs", "2"])
    assert result.exit_code == 130, result.output
    assert f"continue with: fl-mia suite {path} --out {tmp_path / 'out'} --resume --jobs 2" in " ".join(result.output.split())
    assert sorted(p.parent.name for p in cells.glob("*/stopped")) == ["defence=argmax__seed=0", "defence=none__seed=0"]
    assert len(list(cells.iterdir())) == 2, "a queued cell started after the suite was asked to stop"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ray_address_local_means_a_private_ray_and_cells_ask_for_their_cpus(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert ray_cluster_address(SimulationConfig()) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_cluster_address(SimulationConfig()) == "10.0.0.1:6379"

    class Cell:
        cfg = type("Cfg", (), {"simulation": SimulationConfig(total_cpus=3, cpus_per_client=1)})()

    assert cell_resources(Cell()) == {"num_cpus": 3.0, "num_gpus": 0.0}


FOUR_CELLS = """
name = "four"
config = "base.toml"
seeds = [0, 1]
set = ["federation.rounds=1", "simulation.total_cpus=1"]
[axes.defence]
none = {}
argmax = { set = ['defences.output.mode="argmax"'] }
"""


def _suite(path: Path, out: Path, *extra: str, env: dict) -> dict:
    command = [sys.executable, "-m", "fl_mia.app.cli", "suite", str(path), "--out", str(out), *extra]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / SUITE_JSON).read_text())
    assert [c["state"] for c in summary["cells"]] == ["complete"] * 4, [c.get("error") for c in summary["cells"]]
    return summary


@pytest.mark.slow
def test_four_cells_over_a_localhost_head_and_worker_equal_the_same_cells_run_two_at_a_time(tmp_path, monkeypatch):
    from fl_mia.app.processes import free_port, stop_processes
    from fl_mia.app.ray_head import processes_mentioning, ray_head

    raw = tiny_raw(attacker={"prediction_attacks": ["loss"], "shadows": {"epochs": 1}})
    path = _write_suite(tmp_path, FOUR_CELLS, raw=raw)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # Ray's workers (started by `ray start`) import this checkout
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    local = _suite(path, tmp_path / "jobs", "--jobs", "2", env=env)

    worker_dir = Path("/tmp") / f"flmia-w{os.getpid()}"  # short: Ray's socket paths have a length limit
    with ray_head(Path("/tmp") / f"flmia-h{os.getpid()}", num_cpus=1) as address:  # one cell per node at a time
        try:
            ray = str(Path(sys.executable).parent / "ray")
            joined = subprocess.run(
                [ray, "start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={worker_dir}",
                 "--disable-usage-stats", f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert joined.returncode == 0, joined.stderr[-3000:]
            cluster = _suite(path, tmp_path / "cluster", "--ray-address", address, env=env)
        finally:  # this worker only, by its marker: `ray stop` would stop every Ray of the user
            stop_processes(processes_mentioning(str(worker_dir)))
    assert len({c["ray_node_id"] for c in cluster["cells"]}) == 2, "the cells did not run on both nodes"
    for cell in cluster["cells"]:
        with np.load(Path(cell["run_dir"]) / "scores.npz") as there, np.load(tmp_path / "jobs" / "cells" / cell["name"] / "scores.npz") as here:
            assert sorted(there.files) == sorted(here.files)
            for key in here.files:
                np.testing.assert_allclose(there[key], here[key], rtol=1e-6, atol=1e-7, err_msg=f"{cell['name']}: {key}")
    metrics = [json.loads((tmp_path / name / "cells" / "defence=none__seed=0" / "metrics.json").read_text()) for name in ("jobs", "cluster")]
    assert metrics[0]["privacy"] == metrics[1]["privacy"]
    assert local["cells"][0]["hostname"]
    reports = []
    for name in ("jobs", "cluster"):  # the report does not depend on where the cells ran
        folder = tmp_path / name
        command = [sys.executable, "-m", "fl_mia.app.cli", "report", str(folder), "-o", str(folder / "r.html"), "--markdown", str(folder / "r.md")]
        assert subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=600).returncode == 0
        reports.append((folder / "r.md").read_text().replace(str(folder), "OUT"))
    assert reports[0] == reports[1]
    assert local["overhead"] == {"cells_at_once": True}
    for name in ("jobs", "cluster"):  # the cells shared the attacker's shadows through OUT/knowledge/
        assert any(p.is_file() for p in (tmp_path / name / "knowledge").rglob("*")), f"{name}: no shared knowledge written"


def test_shared_ray_does_not_combine_with_cells_at_once_and_one_job_runs_cells_one_by_one():
    from fl_mia.app.suite import SuiteError
    from fl_mia.app.suite_cluster import cell_pool

    with pytest.raises(SuiteError, match="--shared-ray"):
        cell_pool(2, None, shared_ray=True)
    with pytest.raises(SuiteError, match="--shared-ray"):
        cell_pool(1, "10.0.0.1:6379", shared_ray=True)
    submit, close = cell_pool(1, "local", shared_ray=True)  # RAY_ADDRESS=local names no cluster
    assert submit is None
    close()


def test_a_cell_process_gets_the_suites_knowledge_folder_and_a_private_ray(tmp_path):
    from fl_mia.app.suite import shared_knowledge
    from fl_mia.app.suite_cluster import cell_environment
    from fl_mia.attacker.knowledge_cache import KNOWLEDGE_CACHE_ENV

    with shared_knowledge(tmp_path / "knowledge"):
        assert cell_environment() == {"RAY_ADDRESS": "local", KNOWLEDGE_CACHE_ENV: str((tmp_path / "knowledge").resolve())}
    with shared_knowledge(None):
        assert cell_environment() == {"RAY_ADDRESS": "local"}
