"""Flower ClientApp: the hospital side's composition root.

It reads the experiment once, builds the hospital of the node's partition (its splits, its
model on its device) and hands each piece only the sections it uses. ``app`` serves
``flwr run .`` (the experiment file comes from the run config); ``make_client_app(cfg)``
serves ``fl-mia run``, whose simulation passes no run config.
"""

from __future__ import annotations

import json
from functools import lru_cache

import torch
from flwr.app import Context
from flwr.client import ClientApp

from fl_mia.config import DefencesConfig, ExperimentConfig
from fl_mia.console_logging import flower_lines_once
from fl_mia.contracts import NODE_PARTITION_KEY
from fl_mia.data import build_hospital, input_channels, num_classes
from fl_mia.devices import process_device
from fl_mia.models import model_to_load
from fl_mia.run_config import experiment_from_run_config
from clients.hospital import HospitalClient
from clients.mods import defences_mod

# Flower's lines once in the hospitals' processes too: opacus, imported on the way, gives the root logger a handler of its own.
flower_lines_once()


def experiment_of_run(run_config: dict) -> ExperimentConfig:
    """The experiment a run config names, read and validated once per run config in this process.

    Flower builds a fresh client object and runs the mods for every message; without the
    cache each message would re-read the TOML and re-validate it.
    """
    return _experiment_of_run(json.dumps(run_config, sort_keys=True, default=str))


@lru_cache(maxsize=8)
def _experiment_of_run(run_config_json: str) -> ExperimentConfig:
    return experiment_from_run_config(json.loads(run_config_json))


def hospital_client(
    cfg: ExperimentConfig, partition_id: int, node_state=None, node_config: dict | None = None
) -> HospitalClient:
    """The hospital of ``partition_id``, built from the experiment's sections."""
    torch.set_num_threads(cfg.simulation.threads_per_client)
    hospital = build_hospital(cfg.data, cfg.federation, partition_id, seed=cfg.seed)
    classes = num_classes(cfg.data.task)
    device = process_device(cfg.simulation, role="hospital")  # the GPU Ray gave this actor, if any
    model = model_to_load(cfg.model, in_channels=input_channels(cfg.data), classes=classes, image_size=cfg.data.image_size)
    model.to(device)
    return HospitalClient(
        partition_id, hospital, model, classes=classes, training=cfg.training, dp_sgd=cfg.defences.dp_sgd,
        failures=cfg.failures, rounds=cfg.federation.rounds, seed=cfg.seed, node_state=node_state, node_config=node_config,
    )


def make_client_app(cfg: ExperimentConfig | None = None) -> ClientApp:
    def experiment(context: Context) -> ExperimentConfig:
        return cfg if cfg is not None else experiment_of_run(context.run_config)

    def client_fn(context: Context):
        partition_id = int(context.node_config[NODE_PARTITION_KEY])
        return hospital_client(experiment(context), partition_id, context.state, context.node_config).to_client()

    def defences_of(context: Context) -> tuple[DefencesConfig, int, int]:
        chosen = experiment(context)
        return chosen.defences, chosen.seed, chosen.sampled_per_round()

    return ClientApp(client_fn=client_fn, mods=[defences_mod(defences_of)])


app = make_client_app()
