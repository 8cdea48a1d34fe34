"""Flower simulation overhead: the same federated training through Flower/Ray and as a plain loop.

Both paths train the same model on the same shards with the same local steps, seeds and
FedAvg weighting; only the transport differs. Prints the total wall-time ratio and the
per-round ratio after start-up (Ray actors, imports) side by side, plus both final Dice
scores as a check that the two did the same work.

The two do identical arithmetic: the loop trains each hospital with the hospitals' own torch
thread count (``simulation.threads_per_client``; a different count changes the float
reductions, and ten rounds of training amplify that into a different model) and averages
with Flower's own ``aggregate_inplace``, in partition order as the strategy does; so the
final Dice agree to the evaluation's rounding. The loop trains the hospitals one after
another, Flower side by side on the cores it has. ``--plain-threads N`` gives the loop N
threads instead (faster, no longer the same numbers).

    python bench/fl_overhead.py [CONFIG] [--set key=value ...] [--plain-threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.strategy.aggregate import aggregate_inplace

from fl_mia.config.loading import load_config
from fl_mia.data import build_hospital
from fl_mia.app.experiment import run_experiment
from fl_mia.models import build_experiment_model, get_weights, set_weights
from fl_mia.training import train_local
from server.federation import global_evaluator, initial_weights


def fedavg(replies: list[tuple[list[np.ndarray], int]]) -> list[np.ndarray]:
    """Flower's FedAvg average (``aggregate_inplace``, its default) of (weights, examples) in this order."""
    status = Status(code=Code.OK, message="")
    results = [(None, FitRes(status, ndarrays_to_parameters(w), n, {})) for w, n in replies]
    return aggregate_inplace(results)


def plain_federated_loop(cfg, threads: int | None = None) -> tuple[float, list[float], float]:
    """FedAvg over the hospitals in one process; returns (total s, per-round s, final Dice)."""
    started = time.perf_counter()
    torch.set_num_threads(threads or cfg.simulation.threads_per_client)
    hospitals = [build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed) for k in range(cfg.federation.num_hospitals)]
    model = build_experiment_model(cfg.model, cfg.data)
    evaluator = global_evaluator(cfg)
    weights = initial_weights(cfg)
    evaluator.evaluate(weights)
    round_times = []
    for server_round in range(1, cfg.federation.rounds + 1):
        round_started = time.perf_counter()
        replies = []
        for hospital in hospitals:
            set_weights(model, weights)
            train_local(model, hospital.train, cfg.training, seed=cfg.seed, tags=(server_round, hospital.index))
            replies.append((get_weights(model), len(hospital.train)))
        weights = fedavg(replies)
        dice = evaluator.evaluate(weights)["overall"]["dice"]
        round_times.append(time.perf_counter() - round_started)
    return time.perf_counter() - started, round_times, dice


def flower_run(cfg) -> tuple[float, list[float], float]:
    stamps: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        result = run_experiment(cfg, runs_root=Path(root), on_round_end=lambda _: stamps.append(time.perf_counter()))
    total = time.perf_counter() - started
    round_times = list(np.diff(stamps))  # stamps[0] is the untrained model's evaluation
    return total, round_times, result.metrics["utility"]["dice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="configs/quickstart.toml")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--plain-threads", type=int, default=None, help="the loop's torch threads (default: the hospitals')")
    args = parser.parse_args()
    # Only the transport is compared: the server's attacks would add work the plain loop does not do.
    cfg = load_config(args.config, ["referee.enabled=false", "attacker.update_attacks=[]", *args.overrides])
    flower_total, flower_rounds, flower_dice = flower_run(cfg)
    plain_total, plain_rounds, plain_dice = plain_federated_loop(cfg, args.plain_threads)
    steady_flower = float(np.mean(flower_rounds[1:])) if len(flower_rounds) > 1 else float("nan")
    steady_plain = float(np.mean(plain_rounds[1:])) if len(plain_rounds) > 1 else float("nan")
    print(f"config: {args.config} · {cfg.federation.num_hospitals} hospitals · {cfg.federation.rounds} rounds")
    print(f"{'':28s}{'Flower/Ray':>12s}{'plain loop':>12s}{'ratio':>8s}")
    print(f"{'total wall time (s)':28s}{flower_total:12.1f}{plain_total:12.1f}{flower_total / plain_total:8.2f}")
    print(f"{'per round after round 1 (s)':28s}{steady_flower:12.2f}{steady_plain:12.2f}{steady_flower / steady_plain:8.2f}")
    print(f"{'final global Dice':28s}{flower_dice:12.6f}{plain_dice:12.6f}")


if __name__ == "__main__":
    main()
