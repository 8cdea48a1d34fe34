"""Server-side momentum on the aggregate (FedAvgM, Hsu et al. 2019), as the outermost strategy layer.

Flower's ``FedAvgM`` applies momentum inside FedAvg's aggregation. Here it must sit
*outside* every other layer: Flower's central-DP wrappers add their noise to what the
wrapped strategy returns, so momentum inside them would carry un-noised updates of past
rounds into later releases and the accountant's ε would no longer hold. Outside, the
momentum reads only released (noised, securely summed, clipped) aggregates, so it is
post-processing and costs no privacy, under hospital-level DP and under DP-SGD alike.

The step is FedAvgM's: with ``g = sent − aggregated`` (the pseudo-gradient),
``m ← β·m + g`` (``m = g`` the first time) and ``new = sent − η·m``. With β = 0 and
η = 1 the layer is the identity, and the experiment does not add it.
"""

from __future__ import annotations

import numpy as np
from flwr.common import Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import Strategy


class ServerMomentum:
    """FedAvgM's server optimiser over lists of NumPy arrays; its buffer is checkpointed."""

    def __init__(self, *, learning_rate: float, momentum: float) -> None:
        if learning_rate <= 0:
            raise ValueError(f"server learning rate must be positive, got {learning_rate}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"server momentum must be in [0, 1), got {momentum}")
        self.learning_rate = learning_rate
        self.momentum = momentum
        self._buffer: list[np.ndarray] | None = None

    def step(self, sent: list[np.ndarray], aggregated: list[np.ndarray]) -> list[np.ndarray]:
        """The new global model from the one ``sent`` this round and the round's ``aggregated`` model."""
        pseudo_gradient = [np.asarray(s, np.float64) - np.asarray(a, np.float64) for s, a in zip(sent, aggregated)]
        if self._buffer is None or self.momentum == 0.0:
            self._buffer = pseudo_gradient
        else:
            self._buffer = [self.momentum * m + g for m, g in zip(self._buffer, pseudo_gradient)]
        updated = []
        for s, m, a in zip(sent, self._buffer, aggregated):
            if not np.issubdtype(np.asarray(a).dtype, np.floating):
                updated.append(a)  # integer buffers (e.g. BatchNorm's batch counter) are averaged, not stepped
                continue
            updated.append((np.asarray(s, np.float64) - self.learning_rate * m).astype(np.asarray(a).dtype))
        return updated

    def state_dict(self) -> dict:
        if self._buffer is None:
            return {"layers": 0}
        return {"layers": len(self._buffer), **{f"buffer_{i:05d}": m for i, m in enumerate(self._buffer)}}

    def load_state_dict(self, state: dict) -> None:
        layers = int(state["layers"])
        self._buffer = None if layers == 0 else [np.asarray(state[f"buffer_{i:05d}"], np.float64) for i in range(layers)]


class ServerMomentumStrategy(Strategy):
    """Delegates to ``strategy`` and steps the global model with ``optimiser`` after each aggregation."""

    def __init__(self, strategy: Strategy, optimiser: ServerMomentum) -> None:
        super().__init__()
        self.strategy = strategy
        self.optimiser = optimiser
        self._sent: list[np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"ServerMomentum(η={self.optimiser.learning_rate}, β={self.optimiser.momentum}, {self.strategy!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        self._sent = parameters_to_ndarrays(parameters)
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results, failures) -> tuple[Parameters | None, dict[str, Scalar]]:
        aggregated, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        if aggregated is None or self._sent is None:
            return aggregated, metrics
        return ndarrays_to_parameters(self.optimiser.step(self._sent, parameters_to_ndarrays(aggregated))), metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results, failures):
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters):
        return self.strategy.evaluate(server_round, parameters)
