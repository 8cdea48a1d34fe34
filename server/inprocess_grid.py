"""A Flower ``Grid`` that runs the ClientApp in this process, one node after another.

For tests and benchmarks (bench/) of the real protocols (SecAgg+'s four stages, the DP wrappers,
the client mods) without Ray: every message goes through the same ``ClientApp`` (mods
included) that the simulation runs, with a persistent ``Context`` per node, and a
raising ClientApp becomes an error reply as in the simulation. Not a transport for
experiments: nothing runs in parallel and there are no timeouts.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Iterable

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.client import ClientApp
from flwr.common import parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.compat import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    """``num_nodes`` nodes with random 64-bit ids and ``partition-id`` 0..num_nodes-1."""

    runs_hospitals_in_process = True  # server.hospital_directory asks them at once, not on a thread

    def __init__(self, client_app: ClientApp, num_nodes: int, *, run_id: int | None = None, seed: int | None = None) -> None:
        rng = random.Random(seed)
        self.client_app = client_app
        self._run = Run.create_empty(run_id if run_id is not None else rng.getrandbits(62))
        self.node_ids = [rng.getrandbits(62) + 1 for _ in range(num_nodes)]
        self.contexts = {
            node_id: Context(
                run_id=self._run.run_id,
                node_id=node_id,
                node_config={"partition-id": k, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for k, node_id in enumerate(self.node_ids)
        }
        self._replies: dict[str, Message] = {}
        # Messages built by the server stamp the process's task identity (a ServerApp process's).
        TaskIdentity.run_id = self._run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        TaskIdentity.task_id = 0
        self.messages_handled = 0

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            message_id = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = message_id
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            self._replies[message_id] = self._handle(msg)
            ids.append(message_id)
        return ids

    def _handle(self, msg: Message) -> Message:
        self.messages_handled += 1
        try:
            # A copy, as the wire would deliver: SecAgg+'s workflow shares one content object
            # between nodes and secaggplus_mod pops keys from it.
            return copy.deepcopy(self.client_app(copy.deepcopy(msg), self.contexts[msg.metadata.dst_node_id]))
        except Exception as error:  # noqa: BLE001 — the simulation turns a raising ClientApp into an error reply
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(error).__name__}: {error}"), reply_to=msg)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(message_id) for message_id in list(message_ids) if message_id in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_inprocess_rounds(
    grid: InProcessGrid, strategy: Strategy, *, fit_workflow, client_manager: ClientManager, rounds: int
) -> list[np.ndarray]:
    """``rounds`` rounds of Flower's ``DefaultWorkflow`` over ``grid`` with an already wrapped
    ``strategy`` and ``fit_workflow`` (server/defences.py); return the final global weights."""
    context = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy, client_manager=client_manager
    )
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    final = legacy.state.array_records[MAIN_PARAMS_RECORD]
    return parameters_to_ndarrays(compat.arrayrecord_to_parameters(final, keep_input=True))
