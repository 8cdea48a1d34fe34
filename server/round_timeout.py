"""A Grid proxy that puts a deadline on training rounds and reports who did not reply.

Flower's ``DefaultWorkflow`` sends each round's training messages with
``grid.send_and_receive(messages)`` and no timeout, so one silent hospital stalls the
run. Wrapping the Grid handed to the workflow adds the deadline without copying the
round loop: replies that arrive later stay in the link state and are never pulled, so
the round completes with the survivors.

The proxy also sees every training outcome per node (reply, error reply or no reply),
which Flower's ``aggregate_fit`` only receives as anonymous exceptions; it reports them
per hospital and stops the run when a round has no reply at all (FedAvg would otherwise
keep the old model and loop on).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from flwr.app import Message
from flwr.app.message_type import MessageType
from flwr.common import Code
from flwr.compat.common import recorddict_compat as compat
from flwr.serverapp.grid import Grid

from fl_mia.contracts import CONSISTENCY_REFUSAL_CODE
from fl_mia.stop_request import STOP

logger = logging.getLogger("fl_mia")

TRAINED = "trained"
CRASHED = "crashed"
TIMED_OUT = "timed_out"
# A hospital that withheld its SecAgg+ shares because the hospitals did not all receive the
# same model (fl_mia.defences.consistency): a defence working, not a failure of the run.
REFUSED = "refused"
# Flower's deployment grid pulls every 3 s; a stop request should not wait that long.
LONGEST_PULL_INTERVAL_S = 1.0


class NoRepliesError(RuntimeError):
    """A training round got no usable reply; going on would repeat the same model forever."""


class RoundDeadlines:
    """Timeout of each training send: ``round_timeout_s``, plus an allowance on the first one.

    The first training round of a process (fresh or resumed) carries the start-up of the
    Ray actors, which can take longer than a whole round on a small machine.
    """

    def __init__(self, *, round_timeout_s: float | None, first_round_allowance_s: float) -> None:
        self.round_timeout_s = round_timeout_s
        self.first_round_allowance_s = first_round_allowance_s
        self._first_round: str | None = None

    def timeout_for(self, group_id: str) -> float | None:
        if self.round_timeout_s is None:
            return None
        if self._first_round is None:
            self._first_round = group_id
        if group_id == self._first_round:
            return self.round_timeout_s + self.first_round_allowance_s
        return self.round_timeout_s


def _reply_failed(reply: Message) -> str | None:
    """The reason a reply is not a usable training result, or None."""
    if reply.has_error():
        return reply.error.reason
    try:
        status = compat._extract_status_from_recorddict("fitres", reply.content)  # pylint: disable=W0212
    except (KeyError, AttributeError):
        return None  # not a legacy fit reply (a SecAgg+ stage, say): the workflow judges it
    return None if status.code == Code.OK else status.message


class RoundTimeoutGrid(Grid):
    """Delegates to ``grid``; training sends get a deadline and their outcomes are reported.

    Parameters
    ----------
    grid:
        The Grid Flower hands the ServerApp.
    deadlines:
        Timeout per training round.
    directory:
        Flower node id → hospital (partition id).
    round_offset:
        Added to the workflow's round number (rounds already done before a resume), so
        reports name absolute rounds.
    on_outcomes:
        Called after each training send with the absolute round and ``{hospital: status}``
        (``trained``, ``crashed`` or ``timed_out``) of every hospital it was sent to.
    """

    def __init__(
        self,
        grid: Grid,
        *,
        deadlines: RoundDeadlines,
        directory: dict[int, int],
        round_offset: int = 0,
        on_outcomes: Callable[[int, dict[int, str]], None] | None = None,
    ) -> None:
        self._grid = grid
        self._deadlines = deadlines
        self._directory = directory
        self._round_offset = round_offset
        self._on_outcomes = on_outcomes

    # --- the one method that changes ------------------------------------------------------

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if not messages or any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            return self._push_and_pull(messages, timeout=timeout)
        group_id = messages[0].metadata.group_id
        deadline = self._deadlines.timeout_for(group_id)
        if timeout is not None:
            deadline = timeout if deadline is None else min(timeout, deadline)
        sent_to = [m.metadata.dst_node_id for m in messages]
        replies = self._push_and_pull(messages, timeout=deadline)
        self._report(group_id, sent_to, replies, deadline)
        return replies

    def _push_and_pull(self, messages: list[Message], *, timeout: float | None) -> list[Message]:
        """Flower's own send-and-receive loop, which also ends when the process is asked to stop."""
        STOP.raise_if_set()
        waiting = set(self._grid.push_messages(messages))
        interval = min(float(getattr(self._grid, "pull_interval", LONGEST_PULL_INTERVAL_S)), LONGEST_PULL_INTERVAL_S)
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (end is None or time.monotonic() < end):
            pulled = list(self._grid.pull_messages(waiting))
            replies.extend(pulled)
            waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
            if waiting:
                STOP.raise_if_set()
                time.sleep(interval)
        return replies

    def _report(self, group_id: str, sent_to: list[int], replies: list[Message], deadline: float | None) -> None:
        server_round = int(group_id) + self._round_offset if group_id.isdigit() else None
        outcomes: dict[int, str] = {}
        reasons: dict[int, str] = {}
        for reply in replies:
            hospital = self._directory.get(reply.metadata.src_node_id, reply.metadata.src_node_id)
            reason = _reply_failed(reply)
            outcomes[hospital] = TRAINED if reason is None else (REFUSED if CONSISTENCY_REFUSAL_CODE in reason else CRASHED)
            if reason is not None:
                reasons[hospital] = reason
        for node_id in sent_to:
            hospital = self._directory.get(node_id, node_id)
            outcomes.setdefault(hospital, TIMED_OUT)
        for hospital, status in sorted(outcomes.items()):
            if status != TRAINED:
                logger.warning(
                    "round %s: hospital %s %s%s", server_round, hospital, status.replace("_", " "),
                    f" ({reasons[hospital]})" if hospital in reasons else f" after {deadline:g} s",
                )
        if server_round is not None and self._on_outcomes is not None:
            self._on_outcomes(server_round, dict(sorted(outcomes.items())))
        if outcomes and REFUSED in outcomes.values():
            logger.warning(
                "round %s: the hospitals refused to unmask the secure sum (inconsistent models); "
                "the global model stays as it was", server_round,
            )
        if outcomes and not {TRAINED, REFUSED} & set(outcomes.values()):
            described = ", ".join(f"hospital {h} {s.replace('_', ' ')}" for h, s in sorted(outcomes.items()))
            raise NoRepliesError(
                f"round {server_round}: no hospital replied ({described}); the run stops here. "
                "See run.log; if hospitals were only slow, fl-mia run --resume RUN_DIR retries this round, "
                "otherwise change [failures] (crashes recur: they follow the seed) and start a new run"
            )

    # --- everything else is the wrapped Grid's ------------------------------------------------

    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self):
        return self._grid.get_node_ids()

    def get_nodes(self):
        return self._grid.get_nodes()

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)
