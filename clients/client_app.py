"""Flower ClientApp: builds the hospital of the node's partition and hands it to Flower.

``app`` serves ``flwr run .`` (the experiment file comes from the run config);
``make_client_app(cfg)`` serves ``fl-mia run``, whose simulation passes no run config.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.client import ClientApp

from fl_mia.run_config import experiment_from_run_config
from fl_mia.config import ExperimentConfig
from fl_mia.contracts import NODE_PARTITION_KEY
from clients.hospital import HospitalClient
from clients.mods import defences_mod


def make_client_app(cfg: ExperimentConfig | None = None) -> ClientApp:
    def client_fn(context: Context):
        experiment = cfg if cfg is not None else experiment_from_run_config(context.run_config)
        partition_id = int(context.node_config[NODE_PARTITION_KEY])
        return HospitalClient(experiment, partition_id, context.state, context.node_config).to_client()

    return ClientApp(client_fn=client_fn, mods=[defences_mod(cfg)])


app = make_client_app()
