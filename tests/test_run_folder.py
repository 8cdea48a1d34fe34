"""Nothing half-written: atomic files, status marks, failed runs and resumes leave earlier state intact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fl_mia import run_folder
from fl_mia.app import experiment
from fl_mia.checkpoint import CHECKPOINT_FILE, Checkpointer, config_fingerprint
from fl_mia.config.loading import build_config
from fl_mia.app.experiment import resume_experiment, run_experiment
from fl_mia.app.resume import resumable_run
from fl_mia.round_log import RoundLog
from fl_mia.run_folder import atomic_write_text, create_run_folder, read_status, write_toml
from strategies.honest import PartitionSeededClientManager
from tests.conftest import tiny_raw


def test_an_interrupted_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "earlier, complete content")

    def crash(*_args):
        raise KeyboardInterrupt  # as a kill between writing and renaming would

    monkeypatch.setattr(run_folder.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new content that never lands")
    assert target.read_text() == "earlier, complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    folders = {create_run_folder("same", runs_root=tmp_path) for _ in range(3)}
    assert len(folders) == 3 and all(not any(f.iterdir()) for f in folders)


def failing_simulation(*_args, **_kwargs):
    raise RuntimeError("simulated server crash")


def test_a_failed_run_is_marked_failed_and_leaves_other_runs_alone(tmp_path, monkeypatch):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "metrics.json").write_text('{"utility": 1}')
    monkeypatch.setattr(experiment, "_simulate", failing_simulation)
    with pytest.raises(RuntimeError):
        run_experiment(build_config(tiny_raw()), runs_root=tmp_path)
    (failed,) = [p for p in tmp_path.iterdir() if p != earlier]
    status = read_status(failed)
    assert status["state"] == "failed" and "simulated server crash" in status["error"]
    assert not (failed / "metrics.json").exists()
    assert (earlier / "metrics.json").read_text() == '{"utility": 1}'


def test_a_simulation_that_returns_without_results_is_failed_not_complete(tmp_path, monkeypatch):
    # Flower's run_simulation returns normally when its runtime stops before the ServerApp finished.
    monkeypatch.setattr(experiment, "_simulate", lambda *args, **kwargs: None)
    with pytest.raises(experiment.SimulationEndedEarly, match="no metrics.json"):
        run_experiment(build_config(tiny_raw()), out=tmp_path / "run")
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and "ended before the server wrote its results" in status["error"]


def test_a_failed_resume_keeps_the_checkpoint_so_it_can_be_resumed_again(tmp_path, monkeypatch):
    cfg = build_config(tiny_raw())
    run = tmp_path / "run"
    run.mkdir()
    write_toml(run / "config.toml", cfg.to_toml_dict())
    run_folder.set_status(run, "running", pid=1, host="another-machine")
    checkpointer = Checkpointer(run, config_fingerprint(cfg.to_toml_dict()))
    checkpointer.register("round_log", RoundLog(num_hospitals=2, total_rounds=2))
    checkpointer.register("client_manager", PartitionSeededClientManager(seed=0, directory={}))
    checkpointer.save(server_round=1, weights=[np.ones(4, np.float32)], wall_time_s=2.0)
    saved = (run / CHECKPOINT_FILE).read_bytes()

    monkeypatch.setattr(experiment, "_simulate", failing_simulation)
    with pytest.raises(RuntimeError):
        resume_experiment(run)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "simulated server crash" in status["error"]
    assert (run / CHECKPOINT_FILE).read_bytes() == saved
    _, checkpoint = resumable_run(run)
    assert checkpoint.round == 1
