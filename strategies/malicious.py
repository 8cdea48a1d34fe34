"""A dishonest server: FedAvg that poisons the model it sends, per hospital and round.

Only two hooks change: ``configure_fit`` replaces a targeted hospital's payload by a fresh
one (the honest payload object is shared by every hospital of the round and is never
touched), and ``prepare_for_aggregation`` optionally folds a poisoned hospital back in
(``Poisoner.fold_back``: "global model + its own update", or left out), so that the poison
itself does not reach the global model. Under SecAgg+ nothing can be folded back one by
one; a poisoner with ``discards_secure_sum`` makes the server keep its previous global
model for the poisoned round instead.
"""

from __future__ import annotations

import numpy as np
from flwr.common import FitIns, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from fl_mia.config import ThreatConfig
from fl_mia.attacker.poisoning.base import Poisoner
from fl_mia.attacker.poisoning.model_inconsistency import reconstruct_target_update
from strategies.honest import HonestFedAvg, partition_of


class PoisoningFedAvg(HonestFedAvg):
    """FedAvg whose payloads come from a :class:`~fl_mia.attacker.poisoning.Poisoner` in poisoned rounds."""

    def __init__(self, *, poisoner: Poisoner, threat: ThreatConfig, **honest_kwargs) -> None:
        super().__init__(**honest_kwargs)
        self.poisoner = poisoner
        self.threat = threat
        self.poisoned_this_round: set[int] = set()
        self.silenced_this_round: set[int] = set()
        self._global_this_round: list[np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"PoisoningFedAvg({self.poisoner.name})"

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager) -> list[tuple[ClientProxy, FitIns]]:
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self.poisoned_this_round = set()
        self.silenced_this_round = set()
        self._global_this_round = parameters_to_ndarrays(parameters)
        if not self.threat.poisons(server_round):
            return instructions
        tailored = []
        for proxy, honest_ins in instructions:
            hospital = self.directory[proxy.node_id]
            poisoned = self.poisoner.poison(
                server_round=server_round, hospital=hospital, global_weights=self._global_this_round
            )
            if poisoned is None:
                tailored.append((proxy, honest_ins))
                continue
            # A fresh FitIns per poisoned hospital; config copied so no two share mutable state.
            payload = FitIns(ndarrays_to_parameters(poisoned), dict(honest_ins.config))
            self.sent_this_round[hospital] = payload.parameters
            self.poisoned_this_round.add(hospital)
            if self.poisoner.is_silenced(server_round=server_round, hospital=hospital):
                self.silenced_this_round.add(hospital)
            tailored.append((proxy, payload))
        return tailored

    def visible_weights(self, hospital, res, results):
        """Model inconsistency under SecAgg+: recover the target's own model from the aggregate.

        The silenced hospitals' deltas are zero (but for the head bias), so the average
        delta D = n_t·Δ_t / Σn and Δ_t = D·Σn / n_t (``reconstruct_target_update``). The
        target's model is what it was sent (honest, or trapped) plus Δ_t.
        """
        weights, view = super().visible_weights(hospital, res, results)
        silenced = self.silenced_this_round
        if not self.secure_aggregation or hospital in silenced or not silenced:
            return weights, view
        counts = {partition_of(p, r, self.directory): r.num_examples for p, r in results}
        if set(counts) - silenced != {hospital}:
            return weights, view  # more than one unsilenced hospital: the aggregate mixes them
        average_delta = parameters_to_ndarrays(res.parameters)
        target_delta = reconstruct_target_update(
            aggregate=average_delta,
            sent={k: [np.zeros_like(a) for a in average_delta] for k in counts},  # silenced deltas: zero
            num_examples=counts,
            target=hospital,
        )
        sent = parameters_to_ndarrays(self.sent_this_round[hospital])
        return [s + d for s, d in zip(sent, target_delta)], "reconstructed"

    def prepare_for_aggregation(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[tuple[ClientProxy, FitRes]]:
        if not self.secure_aggregation:
            # Under SecAgg+ every reply carries the same average delta, not the hospital's model:
            # a poisoner must never take it for one (preflight also refuses isolation there).
            for proxy, res in results:
                self.poisoner.observe_size(hospital=partition_of(proxy, res, self.directory), num_examples=res.num_examples)
                self.poisoner.observe_reply(
                    server_round=server_round,
                    hospital=partition_of(proxy, res, self.directory),
                    returned=parameters_to_ndarrays(res.parameters),
                )
        if self.secure_aggregation:
            # The replies are one masked sum: nothing to fold back one by one. Either the whole
            # round's sum goes in, or the server keeps its previous global model (FedAvg
            # aggregates nothing, so the workflow keeps the parameters it had).
            if self.threat.compensate and self.poisoned_this_round and self.poisoner.discards_secure_sum:
                return []
            return results
        if not self.threat.compensate or not self.poisoned_this_round:
            return results
        prepared = []
        for proxy, res in results:
            hospital = partition_of(proxy, res, self.directory)
            if hospital in self.poisoned_this_round:
                folded = self.poisoner.fold_back(
                    global_weights=self._global_this_round,
                    sent=parameters_to_ndarrays(self.sent_this_round[hospital]),
                    returned=parameters_to_ndarrays(res.parameters),
                )
                if folded is None:
                    continue  # the poisoner keeps this reply out of the global model
                res = FitRes(res.status, ndarrays_to_parameters(folded), res.num_examples, res.metrics)
            prepared.append((proxy, res))
        return prepared
