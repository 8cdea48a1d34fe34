"""Absolute round numbers for a resumed run, without copying Flower's round loop.

``DefaultWorkflow`` always counts rounds from 1. A run resumed after round ``k`` must
still call its rounds ``k+1, k+2, ...``: hospitals seed their shuffling by the round, the
round log is keyed by it, and attacks accumulate over it. This wrapper adds the offset to
every round number the workflow passes to the strategy, like Flower's DP wrappers wrap a
strategy and change one aspect of it.
"""

from __future__ import annotations

from flwr.common import Parameters
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import Strategy


class RoundOffsetStrategy(Strategy):
    """Delegates to ``strategy`` with ``round_offset`` added to every round number.

    The workflow's round 0 (evaluation of the initial parameters) is skipped when
    ``round_offset > 0``: those parameters are round ``round_offset``'s global model,
    already evaluated and logged before the run stopped.
    """

    def __init__(self, strategy: Strategy, *, round_offset: int) -> None:
        super().__init__()
        if round_offset < 0:
            raise ValueError(f"round_offset must be 0 or more, got {round_offset}")
        self.strategy = strategy
        self.round_offset = round_offset

    def __repr__(self) -> str:
        return f"{self.strategy!r} from round {self.round_offset + 1}"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        return self.strategy.configure_fit(server_round + self.round_offset, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results, failures):
        return self.strategy.aggregate_fit(server_round + self.round_offset, results, failures)

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        return self.strategy.configure_evaluate(server_round + self.round_offset, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results, failures):
        return self.strategy.aggregate_evaluate(server_round + self.round_offset, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters):
        if server_round == 0 and self.round_offset > 0:
            return None
        return self.strategy.evaluate(server_round + self.round_offset, parameters)
