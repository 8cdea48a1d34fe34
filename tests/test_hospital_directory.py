"""The directory's request goes out at once; the server prepares while hospitals start up."""

import threading
from types import SimpleNamespace

import pytest
from flwr.common import Code, GetPropertiesRes, Status
from flwr.compat.common import recorddict_compat as compat

from fl_mia.contracts import PARTITION_KEY
from server.hospital_directory import FederationError, HospitalDiscovery


def properties_reply(node_id: int, partition: int):
    content = compat.getpropertiesres_to_recorddict(
        GetPropertiesRes(status=Status(code=Code.OK, message=""), properties={PARTITION_KEY: partition})
    )
    return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node_id), has_error=lambda: False, content=content)


class StartingGrid:
    """Two nodes whose replies come only when the test lets the hospitals finish starting."""

    def __init__(self, *, fail: BaseException | None = None) -> None:
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 0
        self.started = threading.Event()
        self.fail = fail
        self.sent: list[int] = []
        self.asked = threading.Event()

    def get_node_ids(self):
        return [11, 12]

    def send_and_receive(self, messages, timeout=None):
        self.sent = [m.metadata.dst_node_id for m in messages]
        self.asked.set()
        assert self.started.wait(timeout=30), "the test never let the hospitals start"
        if self.fail is not None:
            raise self.fail
        return [properties_reply(11, 1), properties_reply(12, 0)]


def test_the_request_is_out_before_the_replies_and_the_directory_waits_for_them():
    grid = StartingGrid()
    discovery = HospitalDiscovery(grid, expected=2, timeout_s=60)  # returns with the hospitals still starting
    assert grid.asked.wait(timeout=10) and sorted(grid.sent) == [11, 12]  # asked, not yet answered
    grid.started.set()
    assert discovery.directory() == {11: 1, 12: 0}


def test_a_failed_wait_is_raised_in_the_servers_thread():
    grid = StartingGrid(fail=TimeoutError("link lost"))
    discovery = HospitalDiscovery(grid, expected=2, timeout_s=60)
    grid.started.set()
    with pytest.raises(TimeoutError, match="link lost"):
        discovery.directory()


def test_hospitals_run_in_this_process_are_asked_at_once():
    """They would share torch's thread count and generator with the server's preparation."""
    grid = StartingGrid()
    grid.runs_hospitals_in_process = True
    grid.started.set()
    discovery = HospitalDiscovery(grid, expected=2, timeout_s=60)
    assert not discovery._waiting.is_alive() and grid.sent == [11, 12]
    assert discovery.directory() == {11: 1, 12: 0}


def test_a_missing_hospital_is_a_one_line_error():
    grid = StartingGrid()
    grid.get_node_ids = lambda: [11]
    with pytest.raises(FederationError, match="num_hospitals is 2 but the federation has 1"):
        HospitalDiscovery(grid, expected=2, connect_timeout_s=0.1)
