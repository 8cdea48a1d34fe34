"""Simulated hospital failures and the round-timeout Grid proxy, without Ray."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app.message_type import MessageType
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat

from fl_mia import failures as failures_module
from fl_mia.config import FailuresConfig
from fl_mia.config.loading import build_config
from fl_mia.failures import Failure, SimulatedHospitalCrash, planned_failure, simulate_failure
from server.round_timeout import CRASHED, TIMED_OUT, TRAINED, NoRepliesError, RoundDeadlines, RoundTimeoutGrid
from tests.conftest import tiny_raw


# --- which hospital fails when --------------------------------------------------------------


def test_scheduled_crash_hits_only_its_hospital_and_rounds():
    cfg = FailuresConfig(crashes=[{"hospital": 1, "rounds": [2, 4]}])
    hits = {(r, h) for r in range(1, 6) for h in range(3) if planned_failure(cfg, seed=0, server_round=r, hospital=h) is Failure.CRASH}
    assert hits == {(2, 1), (4, 1)}


def test_crash_probability_is_seeded_per_round_and_hospital():
    cfg = FailuresConfig(crash_probability=0.3)

    def pattern(seed):
        return [planned_failure(cfg, seed=seed, server_round=r, hospital=h) for r in range(1, 401) for h in range(5)]

    first = pattern(0)
    assert first == pattern(0)  # same seed, same crashes
    assert first != pattern(1)
    rate = sum(f is Failure.CRASH for f in first) / len(first)
    # 2,000 independent draws at p=0.3: the standard error is 0.01, so 0.05 is five of them.
    assert abs(rate - 0.3) < 0.05


def test_probability_zero_and_one_are_exact():
    never, always = FailuresConfig(crash_probability=0.0), FailuresConfig(crash_probability=1.0)
    for r in range(1, 50):
        assert planned_failure(never, seed=3, server_round=r, hospital=0) is Failure.NONE
        assert planned_failure(always, seed=3, server_round=r, hospital=0) is Failure.CRASH


def test_crash_raises_and_straggler_sleeps_past_the_longest_deadline(monkeypatch):
    cfg = FailuresConfig(
        crashes=[{"hospital": 0, "rounds": [1]}], stragglers=[{"hospital": 1, "rounds": [1]}],
        round_timeout_s=4.0, first_round_allowance_s=2.0,
    )
    with pytest.raises(SimulatedHospitalCrash, match="hospital 0 crashed in round 1"):
        simulate_failure(cfg, seed=0, server_round=1, hospital=0)
    slept = []
    monkeypatch.setattr(failures_module.time, "sleep", slept.append)
    simulate_failure(cfg, seed=0, server_round=1, hospital=1)
    simulate_failure(cfg, seed=0, server_round=2, hospital=1)  # not scheduled: no sleep
    assert len(slept) == 1 and slept[0] > 4.0 + 2.0


def test_failure_schedule_must_name_real_hospitals_and_rounds():
    from fl_mia.config import ConfigError

    with pytest.raises(ConfigError, match=r"failures.crashes: hospital 2 does not exist"):
        build_config(tiny_raw(failures={"crashes": [{"hospital": 2, "rounds": [1]}]}))
    with pytest.raises(ConfigError, match=r"failures.stragglers: round 3 .*federation.rounds=2"):
        build_config(tiny_raw(failures={"stragglers": [{"hospital": 0, "rounds": [3]}], "round_timeout_s": 5}))


# --- the Grid proxy ---------------------------------------------------------------------------


def train_message(node_id: int, group_id: str = "1", message_type: str = MessageType.TRAIN):
    return SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node_id, group_id=group_id, message_type=message_type))


def fit_reply(node_id: int, code: Code = Code.OK):
    content = compat.fitres_to_recorddict(
        FitRes(Status(code, "bad" if code != Code.OK else ""), ndarrays_to_parameters([np.zeros(1)]), 1, {}), True
    )
    return SimpleNamespace(
        metadata=SimpleNamespace(src_node_id=node_id), has_error=lambda: False, content=content
    )


def error_reply(node_id: int, reason: str = "boom"):
    return SimpleNamespace(
        metadata=SimpleNamespace(src_node_id=node_id), has_error=lambda: True, error=SimpleNamespace(reason=reason)
    )


class FakeGrid:
    """Answers every wait with prepared replies and records the timeout the proxy waited with."""

    def __init__(self, replies):
        self.replies = replies
        self.timeouts = []

    def wait_for_replies(self, messages, *, timeout=None):
        self.timeouts.append(timeout)
        return list(self.replies)


def proxy(replies, *, round_timeout_s=10.0, allowance=30.0, offset=0):
    reported = []
    grid = FakeGrid(replies)
    timed = RoundTimeoutGrid(
        grid,
        deadlines=RoundDeadlines(round_timeout_s=round_timeout_s, first_round_allowance_s=allowance),
        directory={111: 0, 222: 1, 333: 2},
        round_offset=offset,
        on_outcomes=lambda r, o: reported.append((r, o)),
    )
    # The deadline and outcome logic, without the pull loop (tested below on a grid that pulls).
    timed._push_and_pull = grid.wait_for_replies
    return timed, grid, reported


class PullingGrid:
    """Flower's Grid API as the proxy uses it: push returns ids, pull returns the replies ready so far."""

    pull_interval = 0.01

    def __init__(self, answering: set[int]):
        self.answering = answering
        self.pushed: dict[str, int] = {}
        self.pulls = 0

    def push_messages(self, messages):
        ids = [f"m{len(self.pushed) + i}" for i, _ in enumerate(messages)]
        self.pushed.update(zip(ids, (m.metadata.dst_node_id for m in messages)))
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        replies = [fit_reply(self.pushed[i]) for i in message_ids if self.pushed[i] in self.answering]
        for reply, message_id in zip(replies, [i for i in message_ids if self.pushed[i] in self.answering]):
            reply.metadata.reply_to_message_id = message_id
        return replies


def test_the_pull_loop_returns_once_every_hospital_replied():
    grid = PullingGrid(answering={111, 222})
    timed = RoundTimeoutGrid(grid, deadlines=RoundDeadlines(round_timeout_s=None, first_round_allowance_s=0.0),
                             directory={111: 0, 222: 1})  # fmt: skip
    replies = timed.send_and_receive([train_message(111), train_message(222)])
    assert sorted(r.metadata.src_node_id for r in replies) == [111, 222] and grid.pulls == 1


def test_a_stop_request_ends_the_wait_for_a_silent_hospital():
    from fl_mia.stop_request import STOP, FederationStopped

    grid = PullingGrid(answering=set())  # nobody answers, and no timeout: only the stop request ends the wait
    timed = RoundTimeoutGrid(grid, deadlines=RoundDeadlines(round_timeout_s=None, first_round_allowance_s=0.0),
                             directory={111: 0})  # fmt: skip
    import threading

    threading.Timer(0.2, STOP.set, args=("SIGINT",)).start()
    try:
        with pytest.raises(FederationStopped, match="SIGINT"):
            timed.send_and_receive([train_message(111)])
        with pytest.raises(FederationStopped):  # and no new round starts once it is set
            timed.send_and_receive([train_message(111, message_type=MessageType.EVALUATE)])
    finally:
        STOP.clear()
    assert grid.pulls >= 2


def test_first_training_round_gets_the_allowance_later_rounds_do_not():
    timed, grid, _ = proxy([fit_reply(111)])
    for group in ("1", "1", "2", "3"):  # a round may send twice (SecAgg+ stages)
        timed.send_and_receive([train_message(111, group)])
    assert grid.timeouts == [40.0, 40.0, 10.0, 10.0]


def test_no_timeout_configured_waits_for_everyone():
    timed, grid, _ = proxy([fit_reply(111)], round_timeout_s=None)
    timed.send_and_receive([train_message(111)])
    assert grid.timeouts == [None]


def test_outcomes_name_hospitals_and_absolute_rounds():
    timed, _, reported = proxy([fit_reply(111), error_reply(222)], offset=4)
    replies = timed.send_and_receive([train_message(n, "2") for n in (111, 222, 333)])
    assert len(replies) == 2  # the workflow still sees exactly what arrived
    assert reported == [(6, {0: TRAINED, 1: CRASHED, 2: TIMED_OUT})]


def test_a_failed_status_counts_as_crashed():
    timed, _, reported = proxy([fit_reply(111), fit_reply(222, Code.FIT_NOT_IMPLEMENTED)])
    timed.send_and_receive([train_message(111), train_message(222)])
    assert reported[0][1] == {0: TRAINED, 1: CRASHED}


def test_a_round_without_any_reply_stops_with_one_line_naming_the_round():
    timed, _, reported = proxy([error_reply(111)], offset=2)
    with pytest.raises(NoRepliesError) as info:
        timed.send_and_receive([train_message(111, "1"), train_message(222, "1")])
    message = str(info.value)
    assert "\n" not in message and message.startswith("round 3: no hospital replied")
    assert "hospital 0 crashed" in message and "hospital 1 timed out" in message
    assert reported == [(3, {0: CRASHED, 1: TIMED_OUT})]  # recorded before stopping


def test_other_messages_pass_through_untouched():
    timed, grid, reported = proxy([fit_reply(111)])
    timed.send_and_receive([train_message(111, "0", MessageTypeLegacy.GET_PROPERTIES)], timeout=300.0)
    assert grid.timeouts == [300.0] and reported == []


class _SilentGrid:
    """Two SuperNodes that never answer: what an overloaded machine looks like to the server."""

    def __init__(self) -> None:
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        self.timeouts: list[float] = []
        # Messages built by the server stamp the process's task identity (a ServerApp process's).
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 0

    def get_node_ids(self):
        return [11, 12]

    def send_and_receive(self, messages, timeout=None):
        self.timeouts.append(timeout)
        return []


def test_hospitals_that_do_not_start_in_time_fail_in_one_line_naming_the_wait_to_raise(monkeypatch):
    from server.hospital_directory import STARTUP_TIMEOUT_VARIABLE, FederationError, discover_hospitals

    monkeypatch.delenv(STARTUP_TIMEOUT_VARIABLE, raising=False)
    grid = _SilentGrid()
    with pytest.raises(FederationError, match=f"only 0 of 2 hospitals answered within 300s.*{STARTUP_TIMEOUT_VARIABLE}=900") as error:
        discover_hospitals(grid, expected=2)
    assert "\n" not in str(error.value)
    monkeypatch.setenv(STARTUP_TIMEOUT_VARIABLE, "900")
    with pytest.raises(FederationError, match="within 900s"):
        discover_hospitals(grid, expected=2)
    assert grid.timeouts == [300.0, 900.0]
    monkeypatch.setenv(STARTUP_TIMEOUT_VARIABLE, "soon")
    with pytest.raises(FederationError, match=f"{STARTUP_TIMEOUT_VARIABLE}='soon': give a number of seconds"):
        discover_hospitals(grid, expected=2)
