"""A hospital as a Flower ``NumPyClient``: its private shard, local training, evaluation."""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.client import NumPyClient

from fl_mia.contracts import PARTITION_KEY
from fl_mia.config import ExperimentConfig
from fl_mia.data import build_hospital, input_channels, num_classes
from fl_mia.failures import simulate_failure
from fl_mia.devices import process_device
from fl_mia.models import build_model, get_weights, set_weights
from fl_mia.training import evaluate_segmentation, per_image_losses, train_local
from fl_mia.contracts import DP_PRIOR_STEPS_KEY
from clients.dp_state import train_dp_sgd


class HospitalClient(NumPyClient):
    """Trains the model it receives on its own training shard; never shares data."""

    def __init__(self, cfg: ExperimentConfig, partition_id: int, node_state=None, node_config: dict | None = None) -> None:
        self.cfg = cfg
        self.node_state = node_state  # Flower's per-node context.state: persists across rounds
        self.node_config = node_config or {}  # the hospital's own settings (its DP secret), never the server's
        self.partition_id = partition_id
        torch.set_num_threads(cfg.simulation.threads_per_client)
        self.hospital = build_hospital(cfg.data, cfg.federation, partition_id, seed=cfg.seed)
        self.classes = num_classes(cfg.data.task)
        self.device = process_device(cfg.simulation, role="hospital")  # the GPU Ray gave this actor, if any
        self.model = build_model(
            cfg.model, in_channels=input_channels(cfg.data), classes=self.classes, image_size=cfg.data.image_size
        )
        self.model.to(self.device)

    def get_properties(self, config):
        return {PARTITION_KEY: self.partition_id}

    def fit(self, parameters: list[np.ndarray], config):
        set_weights(self.model, parameters)
        server_round = int(config.get("server_round", 0))
        simulate_failure(self.cfg.failures, seed=self.cfg.seed, server_round=server_round, hospital=self.partition_id)
        started = time.perf_counter()
        tags = (server_round, self.partition_id)
        privacy: dict = {}
        if self.cfg.defences.dp_sgd.enabled:
            result, privacy = train_dp_sgd(
                self.model, self.hospital.train, self.cfg, node_state=self.node_state, node_config=self.node_config,
                partition_id=self.partition_id, tags=tags,
                prior_steps=int(config.get(f"{DP_PRIOR_STEPS_KEY}{self.partition_id}", 0)),
            )
        else:
            result = train_local(self.model, self.hospital.train, self.cfg.training, seed=self.cfg.seed, tags=tags)
        metrics = {
            **privacy,
            PARTITION_KEY: self.partition_id,
            "steps": result.steps,
            "fit_seconds": time.perf_counter() - started,
        }
        if not self.cfg.defences.dp_sgd.enabled:
            # Losses are functions of the private scans that DP-SGD's ε does not cover: under
            # DP-SGD the hospital keeps them (the update is then its only data-dependent output).
            metrics.update(train_loss=result.train_loss, first_batch_loss=result.first_batch_loss)
        return get_weights(self.model), result.num_examples, metrics

    def evaluate(self, parameters: list[np.ndarray], config):
        set_weights(self.model, parameters)
        scores = evaluate_segmentation(self.model, self.hospital.test, num_classes=self.classes)
        loss = float(per_image_losses(self.model, self.hospital.test, self.cfg.training).mean())
        return loss, len(self.hospital.test), {PARTITION_KEY: self.partition_id, **scores}
