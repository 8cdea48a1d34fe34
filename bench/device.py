"""Images per second on the CPU and on the GPU: local training, attack scoring, gradient alignment.

    python bench/device.py [CONFIG] [--set key=value ...] [--repeats 3] [--threads 2] [--tiny] [--cell]

Per device: one hospital's local training (``training.local_epochs`` over its shard, the
quickstart model and batch size), scoring every server-side candidate with the loss attack's
signal (a forward pass and a per-image loss), and the per-sample gradients of the gradient-
alignment update attack. Best of ``--repeats`` after one warm-up. Without CUDA the GPU rows say
"no CUDA device".

``--cell`` also times one threats-suite cell (``fl-mia run configs/threats/honest.toml``, a
fresh process) on each device. ``--tiny`` shrinks everything (32×32, a few patients, one
round, one repeat) so that the whole script runs in seconds on a CPU: it is how the script
is tested, and a dry run before spending GPU time.

Prepared GPU run (one short command, minutes of GPU time)::

    python bench/device.py --cell --repeats 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fl_mia.attacker.predictions.output_signals import per_image_loss
from fl_mia.config.loading import load_config
from fl_mia.data import build_attacker_population, build_hospital
from fl_mia.models import build_experiment_model
from fl_mia.training import predict_logits, train_local
from fl_mia.attacker.updates.signals import gradient_alignment

ROOT = Path(__file__).resolve().parent.parent
THREATS_CELL = ROOT / "configs" / "threats" / "honest.toml"
TINY = [
    "data.image_size=32", "data.phantom.num_patients=24", "federation.num_hospitals=2",
    "federation.patients_per_hospital=4", "federation.attacker_patients=4", "federation.rounds=1",
    "training.local_epochs=1", "training.batch_size=4",
]


def best_seconds(action, repeats: int) -> float:
    action()  # warm-up: CUDA context, cuDNN autotuning, allocator
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        action()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(cfg, device: str, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_experiment_model(cfg.model, cfg.data, device=device)
    split = build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed).train
    population = build_attacker_population(cfg.data, cfg.federation, seed=cfg.seed)
    images, masks = population.images, population.masks
    update = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    aligned = min(len(images), 32)
    train = best_seconds(lambda: train_local(model, split, cfg.training, seed=cfg.seed), repeats)
    score = best_seconds(
        lambda: per_image_loss(predict_logits(model, images), masks, dice_weight=1.0, ce_weight=1.0), repeats
    )
    align = best_seconds(
        lambda: gradient_alignment(model, [update], images[:aligned], masks[:aligned], dice_weight=1.0, ce_weight=1.0),
        repeats,
    )
    return {
        "training": len(split) * cfg.training.local_epochs / train,
        "attack scoring": len(images) / score,
        "gradient alignment": aligned / align,
    }


def cell_seconds(device: str, overrides: list[str]) -> float:
    """Wall time of one threats-suite cell run as ``fl-mia run`` on ``device`` (start-up included)."""
    on_device = ["simulation.device=cuda", "simulation.gpus_per_client=0.25"] if device == "cuda" else ["simulation.device=cpu"]
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "fl_mia.app.cli", "run", str(THREATS_CELL), "--out", str(Path(out) / "cell")]
        for override in [*overrides, *on_device]:
            command += ["--set", override]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "quickstart.toml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="seconds on a CPU: 32x32, few patients, one round, one repeat")
    parser.add_argument("--cell", action="store_true", help="also time one threats-suite cell per device")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = (TINY if args.tiny else []) + args.overrides
    repeats = 1 if args.tiny else args.repeats
    cfg = load_config(args.config, overrides)
    print(
        f"{cfg.model.arch}/{cfg.model.encoder} depth {cfg.model.encoder_depth}, {cfg.data.image_size}x{cfg.data.image_size}, "
        f"batch {cfg.training.batch_size}, amp {cfg.training.amp}, {args.threads} CPU threads"
    )
    cpu = measure(cfg, "cpu", repeats)
    gpu = measure(cfg, "cuda", repeats) if torch.cuda.is_available() else None
    gpu_name = torch.cuda.get_device_name(0) if gpu else "no CUDA device"
    print(f"{'images/s':20s} {'CPU':>10s} {'GPU':>10s}  ({gpu_name})")
    for task, rate in cpu.items():
        other = f"{gpu[task]:10.1f}  x{gpu[task] / rate:.1f}" if gpu else f"{'-':>10s}"
        print(f"{task:20s} {rate:10.1f} {other}")
    if args.cell:
        cell_overrides = (TINY if args.tiny else []) + args.overrides
        cpu_cell = cell_seconds("cpu", cell_overrides)
        gpu_cell = cell_seconds("cuda", cell_overrides) if gpu else None
        other = f"{gpu_cell:10.1f}  x{cpu_cell / gpu_cell:.1f}" if gpu_cell else f"{'-':>10s}"
        print(f"{'threats cell (s)':20s} {cpu_cell:10.1f} {other}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
