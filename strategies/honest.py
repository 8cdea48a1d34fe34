"""Honest-but-curious FedAvg: aggregates faithfully, and records what the server sees.

Flower's node ids are random 64-bit numbers every run, so everything that must be
reproducible (client sampling, aggregation order, per-hospital bookkeeping) is keyed by the
partition id each hospital reports instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.common import FitIns, FitRes, Parameters, Scalar, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from fl_mia.contracts import PARTITION_KEY, HospitalReply, RoundObserver
from fl_mia.seeding import rng_for


def partition_of(proxy: ClientProxy, fit_res: FitRes, directory: dict[int, int]) -> int:
    """The hospital behind a reply: from its metrics, else from the node directory."""
    if PARTITION_KEY in fit_res.metrics:
        return int(fit_res.metrics[PARTITION_KEY])
    return directory[proxy.node_id]


class PartitionSeededClientManager(SimpleClientManager):
    """Samples hospitals by partition id with a seeded stream, not Python's global RNG.

    ``directory`` maps Flower node id to partition id; it is filled before round one.
    """

    def __init__(self, *, seed: int, directory: dict[int, int]) -> None:
        super().__init__()
        self._seed = seed
        self._directory = directory
        self._draws = 0

    def sample(self, num_clients: int, min_num_clients: int | None = None, criterion=None) -> list[ClientProxy]:
        if min_num_clients is None:
            min_num_clients = num_clients
        self.wait_for(min_num_clients)
        available = [
            proxy
            for node_id, proxy in self.clients.items()
            if criterion is None or criterion.select(proxy)
        ]
        if num_clients > len(available):
            return []
        available.sort(key=lambda proxy: self._directory.get(proxy.node_id, proxy.node_id))
        rng = rng_for(self._seed, "client-sampling", self._draws)
        self._draws += 1
        chosen = np.sort(rng.choice(len(available), size=num_clients, replace=False))
        return [available[i] for i in chosen]

    # Checkpoint (fl_mia.checkpoint.Stateful): draw k of a resumed run must be draw k of the
    # uninterrupted one.
    def state_dict(self) -> dict:
        return {"draws": self._draws}

    def load_state_dict(self, state: dict) -> None:
        self._draws = int(state["draws"])


class HonestFedAvg(FedAvg):
    """FedAvg with replies ordered by hospital (bit-identical averages run after run).

    Parameters
    ----------
    directory:
        Flower node id → partition id, filled by the server app before round one.
    observer:
        One or several, told about every round's replies (metrics, sent and returned weights)
        before aggregation.
    keep_weights:
        Hand each hospital's returned weights to the observer (the server's white-box view).
    secure_aggregation:
        Replies come from SecAgg+: every result carries the same unmasked sum, so the observer
        gets no weights at all (only each hospital's metrics and num_examples, which SecAgg+
        leaves visible).
    """

    def __init__(
        self,
        *,
        directory: dict[int, int],
        observer: RoundObserver | list[RoundObserver] | None = None,
        keep_weights: bool = False,
        secure_aggregation: bool = False,
        **fedavg_kwargs,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.directory = directory
        self.observers = [] if observer is None else (list(observer) if isinstance(observer, list) else [observer])
        self.keep_weights = keep_weights
        self.sent_this_round: dict[int, Parameters] = {}
        self.secure_aggregation = secure_aggregation

    def __repr__(self) -> str:
        return "HonestFedAvg"

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager) -> list[tuple[ClientProxy, FitIns]]:
        instructions = super().configure_fit(server_round, parameters, client_manager)
        # Remember what each hospital was sent: update attacks compare it with what comes back.
        self.sent_this_round = {self.directory[proxy.node_id]: ins.parameters for proxy, ins in instructions}
        return instructions

    def prepare_for_aggregation(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[tuple[ClientProxy, FitRes]]:
        """The replies FedAvg averages; the honest server averages exactly what it received."""
        return results

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list,
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        # Replies arrive in completion order; a fixed order makes the float sums reproducible.
        results = sorted(results, key=lambda item: partition_of(item[0], item[1], self.directory))
        if self.observers:
            replies = []
            for proxy, res in results:
                hospital = partition_of(proxy, res, self.directory)
                weights, view = self.visible_weights(hospital, res, results) if self.keep_weights else (None, "reply")
                replies.append(
                    HospitalReply(
                        round=server_round,
                        hospital=hospital,
                        num_examples=res.num_examples,
                        metrics=dict(res.metrics),
                        weights=weights,
                        sent_weights=self._sent_to(hospital),
                        view=view,
                    )
                )
            for observer in self.observers:
                observer.on_fit_replies(server_round, replies, len(failures))
        return super().aggregate_fit(server_round, self.prepare_for_aggregation(server_round, results), failures)

    def visible_weights(
        self, hospital: int, res: FitRes, results: list[tuple[ClientProxy, FitRes]]
    ) -> tuple[list[np.ndarray] | None, str]:
        """The model the server can attribute to ``hospital`` this round, and how it got it.

        Without secure aggregation: the hospital's own reply. Under SecAgg+ every result
        carries the same unmasked average delta, so all the server can attribute to any
        hospital is the new aggregate model (sent + average delta).
        """
        if not self.secure_aggregation:
            return parameters_to_ndarrays(res.parameters), "reply"
        sent = self._sent_to(hospital)
        if sent is None:
            return None, "aggregate"
        return [s + d for s, d in zip(sent, parameters_to_ndarrays(res.parameters))], "aggregate"

    def _sent_to(self, hospital: int) -> list[np.ndarray] | None:
        if not self.keep_weights or hospital not in self.sent_this_round:
            return None
        return parameters_to_ndarrays(self.sent_this_round[hospital])


def fit_config_fn(extra: dict[str, Scalar] | None = None) -> Callable[[int], dict[str, Scalar]]:
    """Tell every hospital the round number (it seeds their local shuffling)."""

    def config(server_round: int) -> dict[str, Scalar]:
        return {"server_round": server_round, **(extra or {})}

    return config
