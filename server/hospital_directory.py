"""Which Flower node is which hospital.

Node ids are random every run; each hospital reports its partition id through
``get_properties``. One batch of messages before round one fills the directory that
sampling, aggregation order and per-hospital poisoning are keyed by.
"""

from __future__ import annotations

import os
import threading
import time

from flwr.app import Message
from flwr.common import GetPropertiesIns
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat
from flwr.serverapp.grid import Grid

from fl_mia.contracts import PARTITION_KEY
from fl_mia.stop_request import STOP


class FederationError(RuntimeError):
    """The federation cannot start or go on; the message says why."""


# Hospitals' first reply carries their start-up (a Ray actor importing torch and building its
# shard): seconds on a quiet machine, minutes on an overloaded one. Not a config key: it is a
# property of the machine, not of the experiment, and must not change a run's config.
STARTUP_TIMEOUT_VARIABLE = "FL_MIA_STARTUP_TIMEOUT_S"
DEFAULT_STARTUP_TIMEOUT_S = 300.0


def startup_timeout_s() -> float:
    """Seconds the server waits for every hospital's first reply (``FL_MIA_STARTUP_TIMEOUT_S``)."""
    raw = os.environ.get(STARTUP_TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_STARTUP_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise FederationError(f"{STARTUP_TIMEOUT_VARIABLE}={raw!r}: give a number of seconds above 0, e.g. 900")
    return value


def discover_hospitals(
    grid: Grid, *, expected: int, connect_timeout_s: float = 30.0, timeout_s: float | None = None
) -> dict[int, int]:
    """Return ``{node_id: partition_id}`` for every connected hospital.

    ``timeout_s`` (default :func:`startup_timeout_s`) bounds the first reply, which carries
    the actors' start-up (Ray and torch imports take several seconds per actor on a small machine).
    """
    return HospitalDiscovery(grid, expected=expected, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s).directory()


class HospitalDiscovery:
    """The directory's request, sent at once; its replies read by :meth:`directory`.

    A hospital answers its first message only after starting up (a Ray actor importing torch
    and smp and building its shard: seconds a process). Waiting on a thread lets the server
    prepare its own side in that time (its shadows, the candidates) instead of after it. A grid
    that runs the hospitals in this process (``runs_hospitals_in_process``) is asked at once:
    they would share torch's process-wide thread count and generator with the server's work.
    """

    def __init__(
        self, grid: Grid, *, expected: int, connect_timeout_s: float = 30.0, timeout_s: float | None = None
    ) -> None:
        self.expected = expected
        self.timeout_s = startup_timeout_s() if timeout_s is None else timeout_s
        messages = _properties_requests(grid, expected, connect_timeout_s)
        self._replies: list[Message] = []
        self._error: BaseException | None = None
        self._waiting = threading.Thread(target=self._receive, args=(grid, messages), name="fl-mia-discovery", daemon=True)
        if getattr(grid, "runs_hospitals_in_process", False):
            self._receive(grid, messages)
        else:
            self._waiting.start()

    def _receive(self, grid: Grid, messages: list[Message]) -> None:
        try:
            self._replies = list(grid.send_and_receive(messages, timeout=self.timeout_s))
        except BaseException as error:  # re-raised by directory(), in the server's thread
            self._error = error

    def directory(self) -> dict[int, int]:
        """``{node_id: partition_id}``; ``FederationError`` in one line when a hospital failed or stayed silent."""
        if self._waiting.is_alive():
            self._waiting.join()
        if self._error is not None:
            raise self._error
        expected, timeout_s = self.expected, self.timeout_s
        directory: dict[int, int] = {}
        for reply in self._replies:
            if reply.has_error():
                raise FederationError(
                    f"hospital on node {reply.metadata.src_node_id} failed to start: {reply.error.reason}"
                )
            properties = compat.recorddict_to_getpropertiesres(reply.content).properties
            directory[reply.metadata.src_node_id] = int(properties[PARTITION_KEY])
        if len(directory) < expected:
            raise FederationError(
                f"only {len(directory)} of {expected} hospitals answered within {timeout_s:.0f}s; hospitals start slowly "
                f"on a loaded machine: run it on a quieter one or wait longer with {STARTUP_TIMEOUT_VARIABLE}=900"
            )
        if sorted(directory.values()) != list(range(expected)):
            raise FederationError(f"hospitals reported partition ids {sorted(directory.values())}, expected 0..{expected - 1}")
        return directory


def _properties_requests(grid: Grid, expected: int, connect_timeout_s: float) -> list[Message]:
    """One ``get_properties`` message per node, once all ``expected`` nodes are connected."""
    deadline = time.monotonic() + connect_timeout_s
    node_ids = list(grid.get_node_ids())
    while len(node_ids) < expected and time.monotonic() < deadline:
        STOP.raise_if_set()
        time.sleep(0.2)
        node_ids = list(grid.get_node_ids())
    if len(node_ids) != expected:
        raise FederationError(
            f"federation.num_hospitals is {expected} but the federation has {len(node_ids)} SuperNodes; with "
            f"`flwr run` set them equal: flwr federation simulation-config --num-supernodes {expected}"
        )
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({}))
    return [
        Message(content=content, dst_node_id=node_id, message_type=MessageTypeLegacy.GET_PROPERTIES, group_id="0")
        for node_id in node_ids
    ]
