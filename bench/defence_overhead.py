"""Compute cost of the defences, measured side by side in one run.

    python bench/defence_overhead.py [--config configs/quickstart.toml] [--rounds 3]

1. A SecAgg+ round relative to a plain round: the same hospitals (real ``HospitalClient``
   training, the config's model) run a few rounds with and without SecAgg+ over the
   in-process grid (``server/inprocess_grid.py``: Flower's workflows and the ClientApp with
   its mods, one node after another, no Ray). Round 1 is dropped (warm-up); the median of
   the remaining rounds is compared. Also printed: the protocol alone (hospitals that return a
   fixed update of the model's size), i.e. the cost SecAgg+ adds whatever the training.
2. A DP-SGD local round (Opacus) relative to plain local training of the same hospital.

Goal for SecAgg+: ≤ 1.5× (Flower's own example measures ~2.3× at U-Net size).
Ratios are only comparable within one run: two jobs on the same cores slow each other.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from flwr.app import Context, RecordDict  # noqa: E402

from fl_mia.config import ExperimentConfig
from fl_mia.config.loading import load_config  # noqa: E402


def _federated_round_seconds(cfg: ExperimentConfig, client_app, rounds: int) -> list[float]:
    from server.federation import run_federation
    from server.inprocess_grid import InProcessGrid
    from fl_mia.run_folder import create_run_folder

    import tempfile

    stamps: list[float] = []
    grid = InProcessGrid(client_app, cfg.federation.num_hospitals, seed=cfg.seed)
    context = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = create_run_folder(cfg.name, runs_root=Path(tmp))
        run_federation(grid, context, cfg, run_dir, on_round_end=lambda progress: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]  # stamps[0]: round 0 (untrained model)


def secagg_ratio(cfg: ExperimentConfig, rounds: int) -> dict[str, float]:
    from clients.client_app import make_client_app

    plain_cfg = cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"rounds": rounds})})
    secure_cfg = plain_cfg.model_copy(deep=True)
    secure_cfg.defences.secagg.enabled = True
    plain = _federated_round_seconds(plain_cfg, make_client_app(plain_cfg), rounds)
    secure = _federated_round_seconds(secure_cfg, make_client_app(secure_cfg), rounds)
    p, s = statistics.median(plain[1:] or plain), statistics.median(secure[1:] or secure)
    return {"plain_round_s": p, "secagg_round_s": s, "ratio": s / p}


def _protocol_rounds(cfg: ExperimentConfig, client_app, initial, *, rounds: int) -> None:
    """Flower's workflow (SecAgg+ when the config asks) over the in-process grid, the honest
    strategy and no evaluation: what the protocol costs around ``client_app``."""
    from flwr.common import ndarrays_to_parameters

    from server.defences import fit_workflow, wrap_strategy
    from server.federation import secagg_max_weight
    from server.hospital_directory import discover_hospitals
    from server.inprocess_grid import InProcessGrid, run_inprocess_rounds
    from strategies.honest import HonestFedAvg, PartitionSeededClientManager

    hospitals = cfg.federation.num_hospitals
    grid = InProcessGrid(client_app, hospitals, seed=0)
    directory = discover_hospitals(grid, expected=hospitals)
    strategy = HonestFedAvg(
        directory=directory,
        keep_weights=True,
        secure_aggregation=cfg.defences.secagg.enabled,
        fraction_evaluate=0.0,
        min_fit_clients=hospitals,
        min_available_clients=hospitals,
        on_fit_config_fn=lambda r: {"server_round": r},
        initial_parameters=ndarrays_to_parameters(initial),
    )
    run_inprocess_rounds(
        grid,
        wrap_strategy(cfg.defences, strategy, sampled_per_round=cfg.sampled_per_round()),
        fit_workflow=fit_workflow(cfg.defences.secagg, max_weight=secagg_max_weight(cfg)),
        client_manager=PartitionSeededClientManager(seed=0, directory=directory),
        rounds=rounds,
    )


def secagg_protocol_only(cfg: ExperimentConfig) -> dict[str, float]:
    """The same comparison with hospitals that do no training: SecAgg+'s own cost per round."""
    import numpy as np
    from flwr.client import ClientApp, NumPyClient

    from clients.mods import defences_mod
    from fl_mia.models import build_experiment_model, get_weights

    sizes = [a.shape for a in get_weights(build_experiment_model(cfg.model, cfg.data))]

    class Fixed(NumPyClient):
        def __init__(self, k):
            self.k = k

        def get_properties(self, config):
            return {"partition_id": self.k}

        def fit(self, parameters, config):
            rng = np.random.default_rng(self.k)
            return [p + rng.normal(0, 1e-3, p.shape).astype(p.dtype) for p in parameters], 10, {"partition_id": self.k, "train_loss": 0.0}

    def app(c):
        return ClientApp(
            client_fn=lambda context: Fixed(int(context.node_config["partition-id"])).to_client(),
            mods=[defences_mod(lambda _context: (c.defences, c.seed))],
        )

    out = {}
    for label, enabled in (("plain", False), ("secagg", True)):
        c = cfg.model_copy(deep=True)
        c.defences.secagg.enabled = enabled
        initial = [np.zeros(s, np.float32) for s in sizes]
        started = time.perf_counter()
        _protocol_rounds(c, app(c), initial, rounds=2)
        out[f"{label}_s_per_round"] = (time.perf_counter() - started) / 2
    out["secagg_extra_s_per_round"] = out["secagg_s_per_round"] - out["plain_s_per_round"]
    return out


def dp_sgd_ratio(cfg: ExperimentConfig, repeats: int) -> dict[str, float]:
    from fl_mia.data import build_hospital
    from fl_mia.defences.dp_sgd import train_local_dp
    from fl_mia.models import build_experiment_model
    from fl_mia.training import train_local

    dp_cfg = cfg.model_copy(deep=True)
    dp_cfg.defences.dp_sgd.enabled = True
    hospital = build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed)
    plain_times, dp_times = [], []
    for r in range(repeats):
        model = build_experiment_model(cfg.model, cfg.data)
        started = time.perf_counter()
        train_local(model, hospital.train, cfg.training, seed=cfg.seed, tags=(r, 0))
        plain_times.append(time.perf_counter() - started)
        model = build_experiment_model(cfg.model, cfg.data)
        started = time.perf_counter()
        train_local_dp(
            model, hospital.train, dp_cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, history=[],
            secret=cfg.seed, tags=(r, 0),
        )
        dp_times.append(time.perf_counter() - started)
    p, d = statistics.median(plain_times), statistics.median(dp_times)
    return {"plain_local_round_s": p, "dp_sgd_local_round_s": d, "ratio": d / p, "train_images": len(hospital.train)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.toml"))
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds per variant (round 1 is warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="local rounds per DP-SGD timing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    cfg = load_config(args.config)
    print(f"model {cfg.model.arch}/{cfg.model.encoder} depth {cfg.model.encoder_depth}, {cfg.data.image_size}px, "
          f"{cfg.federation.num_hospitals} hospitals, {cfg.training.local_epochs} local epochs, {args.threads} thread(s)")
    secagg = secagg_ratio(cfg, args.rounds)
    protocol = secagg_protocol_only(cfg)
    dp = dp_sgd_ratio(cfg, args.repeats)
    print(f"{'':34}{'plain':>10}{'defended':>10}{'ratio':>8}")
    print(f"{'SecAgg+ federated round (s)':34}{secagg['plain_round_s']:10.2f}{secagg['secagg_round_s']:10.2f}{secagg['ratio']:7.2f}x")
    print(f"{'  protocol only, no training (s)':34}{protocol['plain_s_per_round']:10.2f}{protocol['secagg_s_per_round']:10.2f}"
          f"{protocol['secagg_s_per_round'] / protocol['plain_s_per_round']:7.2f}x")
    print(f"{'DP-SGD local round, hospital 0 (s)':34}{dp['plain_local_round_s']:10.2f}{dp['dp_sgd_local_round_s']:10.2f}{dp['ratio']:7.2f}x")
    print(f"goal for SecAgg+: <= 1.5x ({'met' if secagg['ratio'] <= 1.5 else 'NOT met'}); Flower's example: ~2.3x at U-Net size")


if __name__ == "__main__":
    main()
