"""Checkpoint, round log state and the round-offset wrapper, without Ray."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from fl_mia.checkpoint import CHECKPOINT_FILE, CheckpointError, Checkpointer, read_checkpoint, config_fingerprint
from fl_mia.config.loading import build_config
from fl_mia.round_log import ROUND_COLUMNS, RoundLog
from fl_mia.run_folder import write_csv
from fl_mia.contracts import HospitalReply
from strategies.honest import PartitionSeededClientManager
from strategies.round_offset import RoundOffsetStrategy
from tests.conftest import tiny_raw


def evaluation(value: float, hospitals: int = 2) -> dict:
    scores = {"dice": value, "iou": value / 2, "dice_pooled": value, "dice_lesion_images": value, "loss": 1 - value}
    return {"overall": dict(scores), **{f"hospital_{k}": dict(scores) for k in range(hospitals)}}


def filled_round_log() -> RoundLog:
    """Round 0, a clean round 1, and a round 2 where hospital 1 crashed."""
    log = RoundLog(num_hospitals=2, total_rounds=3)
    log.on_evaluation(0, evaluation(0.01))
    metrics = {"partition_id": 0, "train_loss": 0.123456789, "first_batch_loss": 0.2, "steps": 2, "fit_seconds": 1.5}
    for server_round in (1, 2):
        hospitals = (0, 1) if server_round == 1 else (0,)
        log.on_fit_outcomes(server_round, {0: "trained", 1: "trained" if server_round == 1 else "crashed"})
        log.on_fit_replies(server_round, [HospitalReply(server_round, h, 8, {**metrics, "partition_id": h}) for h in hospitals], 2 - len(hospitals))
        log.on_evaluation(server_round, evaluation(0.1 * server_round + 1e-9))
    return log


def rows_as_csv(log: RoundLog, path) -> bytes:
    write_csv(path, log.rows(), ROUND_COLUMNS)
    return path.read_bytes()


def test_round_log_records_who_failed_and_what_was_observed(tmp_path):
    log = filled_round_log()
    assert log.failed_hospitals(2) == {1: "crashed"} and log.failed_hospitals(1) == {}
    assert log.status(2, 1) == "crashed" and log.status(2, 0) == "trained" and log.status(3, 0) == "not_sampled"
    assert log.failure_summary() == {"crashed": 1, "timed_out": 0, "refused": 0, "events": [{"round": 2, "hospital": 1, "status": "crashed"}]}
    rows = list(csv.DictReader(rows_as_csv(log, tmp_path / "r.csv").decode().splitlines()))
    by_key = {(r["round"], r["hospital"]): r for r in rows}
    assert by_key[("2", "1")]["status"] == "crashed" and by_key[("2", "1")]["failed"] == "1"
    assert by_key[("2", "1")]["participated"] == "0"
    assert by_key[("2", "all")]["failed"] == "1" and by_key[("1", "all")]["failed"] == "0"
    assert by_key[("0", "0")]["status"] == "initial"


def test_round_log_state_round_trips_to_identical_rows(tmp_path):
    original = filled_round_log()
    restored = RoundLog(num_hospitals=2, total_rounds=3)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))  # as the checkpoint stores it
    assert rows_as_csv(restored, tmp_path / "a.csv") == rows_as_csv(original, tmp_path / "b.csv")
    assert restored.timing_rows() == original.timing_rows()
    assert restored.failure_summary() == original.failure_summary()


def test_checkpoint_round_trip_restores_weights_and_components_exactly(tmp_path):
    cfg = build_config(tiny_raw())
    log, manager = filled_round_log(), PartitionSeededClientManager(seed=0, directory={})
    manager.load_state_dict({"draws": 7})
    weights = [np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), np.arange(5, dtype=np.int64)]

    class Accumulator:  # what an attack branch would register: arrays and plain values
        def __init__(self):
            self.scores, self.rounds = np.linspace(0, 1, 6), [1, 2]

        def state_dict(self):
            return {"scores": self.scores, "rounds": self.rounds}

        def load_state_dict(self, state):
            self.scores, self.rounds = state["scores"], state["rounds"]

    writer = Checkpointer(tmp_path, config_fingerprint(cfg.to_toml_dict()), wall_time_before_s=2.0)
    for name, component in (("round_log", log), ("client_manager", manager), ("attack", Accumulator())):
        writer.register(name, component)
    writer.save(server_round=2, weights=weights, wall_time_s=3.0)

    checkpoint = read_checkpoint(tmp_path, config_fingerprint(cfg.to_toml_dict()))
    assert checkpoint.round == 2 and checkpoint.wall_time_s == 5.0
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(checkpoint.weights, weights))
    new_log, new_manager, new_acc = RoundLog(num_hospitals=2, total_rounds=3), PartitionSeededClientManager(seed=0, directory={}), Accumulator()
    new_acc.scores = None
    reader = Checkpointer(tmp_path, config_fingerprint(cfg.to_toml_dict()))
    for name, component in (("round_log", new_log), ("client_manager", new_manager), ("attack", new_acc)):
        reader.register(name, component)
    assert reader.restore(checkpoint) == 2
    assert new_manager.state_dict() == {"draws": 7}
    assert np.array_equal(new_acc.scores, np.linspace(0, 1, 6)) and new_acc.rounds == [1, 2]
    assert rows_as_csv(new_log, tmp_path / "a.csv") == rows_as_csv(log, tmp_path / "b.csv")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers


def test_checkpoint_of_another_config_or_damaged_file_is_refused(tmp_path):
    cfg = build_config(tiny_raw())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path, config_fingerprint(cfg.to_toml_dict()))
    Checkpointer(tmp_path, config_fingerprint(cfg.to_toml_dict())).save(server_round=1, weights=[np.zeros(2)], wall_time_s=0.0)
    with pytest.raises(CheckpointError, match="different experiment config"):
        read_checkpoint(tmp_path, config_fingerprint(build_config(tiny_raw(seed=5)).to_toml_dict()))
    data = (tmp_path / CHECKPOINT_FILE).read_bytes()
    (tmp_path / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable checkpoint") as info:
        read_checkpoint(tmp_path, config_fingerprint(cfg.to_toml_dict()))
    assert "\n" not in str(info.value)


def test_restore_names_a_component_the_checkpoint_lacks(tmp_path):
    cfg = build_config(tiny_raw())
    Checkpointer(tmp_path, config_fingerprint(cfg.to_toml_dict())).save(server_round=1, weights=[np.zeros(2)], wall_time_s=0.0)
    reader = Checkpointer(tmp_path, config_fingerprint(cfg.to_toml_dict()))
    reader.register("dp_accountant", PartitionSeededClientManager(seed=0, directory={}))
    with pytest.raises(CheckpointError, match="dp_accountant"):
        reader.restore(read_checkpoint(tmp_path, config_fingerprint(cfg.to_toml_dict())))


class RecordingStrategy:
    def __init__(self):
        self.rounds = []

    def initialize_parameters(self, client_manager):
        return "initial"

    def configure_fit(self, server_round, parameters, client_manager):
        self.rounds.append(("configure_fit", server_round))
        return []

    def aggregate_fit(self, server_round, results, failures):
        self.rounds.append(("aggregate_fit", server_round))
        return None, {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        self.rounds.append(("configure_evaluate", server_round))
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        self.rounds.append(("aggregate_evaluate", server_round))
        return None, {}

    def evaluate(self, server_round, parameters):
        self.rounds.append(("evaluate", server_round))
        return 0.0, {}


def test_round_offset_makes_every_round_absolute_and_skips_re_evaluating_the_checkpoint():
    inner = RecordingStrategy()
    wrapped = RoundOffsetStrategy(inner, round_offset=3)
    assert wrapped.initialize_parameters(None) == "initial"
    assert wrapped.evaluate(0, None) is None  # round 3's model was evaluated before the stop
    wrapped.configure_fit(1, None, None)
    wrapped.aggregate_fit(1, [], [])
    wrapped.evaluate(1, None)
    wrapped.configure_evaluate(2, None, None)
    wrapped.aggregate_evaluate(2, [], [])
    assert inner.rounds == [
        ("configure_fit", 4), ("aggregate_fit", 4), ("evaluate", 4), ("configure_evaluate", 5), ("aggregate_evaluate", 5)
    ]
    fresh = RoundOffsetStrategy(RecordingStrategy(), round_offset=0)
    assert fresh.evaluate(0, None) == (0.0, {})  # a fresh run evaluates its untrained model


def test_sampler_state_continues_the_same_draw_sequence():
    def draws(manager, n):
        return [[p.node_id for p in manager.sample(2)] for _ in range(n)]

    def manager():
        m = PartitionSeededClientManager(seed=4, directory={10: 0, 20: 1, 30: 2, 40: 3})
        for node in (10, 20, 30, 40):
            m.register(SimpleNamespace(node_id=node, cid=str(node)))
        return m

    uninterrupted = draws(manager(), 5)
    first = manager()
    head = draws(first, 2)
    resumed = manager()
    resumed.load_state_dict(first.state_dict())
    assert head + draws(resumed, 3) == uninterrupted
