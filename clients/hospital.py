"""A hospital as a Flower ``NumPyClient``: its private shard, local training, evaluation."""

from __future__ import annotations

import time

import numpy as np
from flwr.client import NumPyClient
from torch import nn

from fl_mia.contracts import DP_PRIOR_STEPS_KEY, PARTITION_KEY
from fl_mia.config import DpSgdConfig, FailuresConfig, TrainingConfig
from fl_mia.data.shards import HospitalData
from fl_mia.failures import simulate_failure
from fl_mia.models import get_weights, set_weights
from fl_mia.training import evaluate_segmentation, per_image_losses, train_local
from clients.dp_state import train_dp_sgd


class HospitalClient(NumPyClient):
    """Trains the model it receives on its own training shard; never shares data.

    It gets what it uses, built by :mod:`clients.client_app`: its own splits, a model on its
    device, the training and DP-SGD settings, the scheduled failures, the rounds and the seed.
    """

    def __init__(
        self,
        partition_id: int,
        hospital: HospitalData,
        model: nn.Module,
        *,
        classes: int,
        training: TrainingConfig,
        dp_sgd: DpSgdConfig,
        failures: FailuresConfig,
        rounds: int,
        seed: int,
        node_state=None,
        node_config: dict | None = None,
    ) -> None:
        self.partition_id = partition_id
        self.hospital = hospital
        self.model = model
        self.classes = classes
        self.training = training
        self.dp_sgd = dp_sgd
        self.failures = failures
        self.rounds = rounds
        self.seed = seed
        self.node_state = node_state  # Flower's per-node context.state: persists across rounds
        self.node_config = node_config or {}  # the hospital's own settings (its DP secret), never the server's

    def get_properties(self, config):
        return {PARTITION_KEY: self.partition_id}

    def fit(self, parameters: list[np.ndarray], config):
        set_weights(self.model, parameters)
        server_round = int(config.get("server_round", 0))
        simulate_failure(self.failures, seed=self.seed, server_round=server_round, hospital=self.partition_id)
        started = time.perf_counter()
        tags = (server_round, self.partition_id)
        privacy: dict = {}
        if self.dp_sgd.enabled:
            result, privacy = train_dp_sgd(
                self.model, self.hospital.train, self.dp_sgd, self.training, rounds=self.rounds,
                node_state=self.node_state, node_config=self.node_config, partition_id=self.partition_id, tags=tags,
                prior_steps=int(config.get(f"{DP_PRIOR_STEPS_KEY}{self.partition_id}", 0)),
            )
        else:
            result = train_local(self.model, self.hospital.train, self.training, seed=self.seed, tags=tags)
        metrics = {
            **privacy,
            PARTITION_KEY: self.partition_id,
            "steps": result.steps,
            "fit_seconds": time.perf_counter() - started,
        }
        if not self.dp_sgd.enabled:
            # Losses are functions of the private scans that DP-SGD's ε does not cover: under
            # DP-SGD the hospital keeps them (the update is then its only data-dependent output).
            metrics.update(train_loss=result.train_loss, first_batch_loss=result.first_batch_loss)
        return get_weights(self.model), result.num_examples, metrics

    def evaluate(self, parameters: list[np.ndarray], config):
        set_weights(self.model, parameters)
        scores = evaluate_segmentation(self.model, self.hospital.test, num_classes=self.classes)
        loss = float(per_image_losses(self.model, self.hospital.test, self.training).mean())
        return loss, len(self.hospital.test), {PARTITION_KEY: self.partition_id, **scores}
