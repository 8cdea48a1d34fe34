"""Tiny Flower apps for Ray-free protocol tests: a hospital that returns a known update."""

from __future__ import annotations

import numpy as np
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient
from flwr.common import FitIns, ndarrays_to_parameters

from clients.mods import defences_mod
from server.defences import fit_workflow, wrap_strategy
from server.federation import secagg_max_weight
from server.inprocess_grid import InProcessGrid, run_inprocess_rounds
from strategies.honest import HonestFedAvg, PartitionSeededClientManager

SHAPES = [(3, 4), (5,), (2, 2, 2)]


def known_update(partition: int, round_: int) -> list[np.ndarray]:
    """A delta per hospital and round with a spread of magnitudes (hand-checkable)."""
    rng = np.random.default_rng(1000 * round_ + partition)
    return [(rng.normal(0, 0.05, shape) * (1 + partition)).astype(np.float32) for shape in SHAPES]


def base_weights(value: float = 50.0) -> list[np.ndarray]:
    """Global weights far outside SecAgg+'s clipping range: sent raw, they would be clipped."""
    return [np.full(shape, value, np.float32) + np.arange(np.prod(shape), dtype=np.float32).reshape(shape) for shape in SHAPES]


class KnownUpdateClient(NumPyClient):
    def __init__(self, partition: int, num_examples: int) -> None:
        self.partition = partition
        self.num_examples = num_examples

    def get_properties(self, config):
        return {"partition_id": self.partition}

    def fit(self, parameters, config):
        update = known_update(self.partition, int(config.get("server_round", 0)))
        returned = [p + u for p, u in zip(parameters, update)]
        return returned, self.num_examples, {"partition_id": self.partition, "train_loss": 0.1 * self.partition}


def known_update_app(cfg, sizes: list[int]) -> ClientApp:
    def client_fn(context: Context):
        k = int(context.node_config["partition-id"])
        return KnownUpdateClient(k, sizes[k]).to_client()

    return ClientApp(client_fn=client_fn, mods=[defences_mod(lambda _context: (cfg.defences, cfg.seed, cfg.sampled_per_round()))])


class Recorder:
    def __init__(self):
        self.calls = []

    def on_fit_replies(self, server_round, replies, failures):
        self.calls.append((server_round, replies, failures))


def run_rounds(cfg, sizes, *, strategy_cls=HonestFedAvg, rounds=1, initial=None, seed=0, grid_cls=InProcessGrid, **strategy_kwargs):
    """Run ``rounds`` rounds over the in-process grid; return (final weights, recorder, grid)."""
    from server.hospital_directory import discover_hospitals

    grid = grid_cls(known_update_app(cfg, sizes), len(sizes), seed=seed)
    directory = discover_hospitals(grid, expected=len(sizes))
    recorder = Recorder()
    strategy = strategy_cls(
        directory=directory,
        observer=recorder,
        keep_weights=True,
        secure_aggregation=cfg.defences.secagg.enabled,
        fraction_evaluate=0.0,
        min_fit_clients=len(sizes),
        min_available_clients=len(sizes),
        on_fit_config_fn=lambda r: {"server_round": r},
        initial_parameters=ndarrays_to_parameters(initial if initial is not None else base_weights()),
        **strategy_kwargs,
    )
    final = run_inprocess_rounds(
        grid,
        wrap_strategy(cfg.defences, strategy, sampled_per_round=cfg.sampled_per_round()),
        fit_workflow=fit_workflow(cfg.defences.secagg, max_weight=secagg_max_weight(cfg)),
        client_manager=PartitionSeededClientManager(seed=0, directory=directory),
        rounds=rounds,
    )
    return final, recorder, grid


def plain_fedavg(initial, sizes, round_=1):
    """The plain weighted average of the hospitals' returned weights, by hand."""
    total = sum(sizes)
    return [
        sum((w + known_update(k, round_)[i].astype(np.float64)) * n for k, n in enumerate(sizes)) / total
        for i, w in enumerate(initial)
    ]


__all__ = ["FitIns", "run_rounds", "plain_fedavg", "base_weights", "known_update"]
