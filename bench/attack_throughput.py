"""Attack scoring throughput against the plain forward pass, and shadow training time.

    python bench/attack_throughput.py [CONFIG] [--set key=value ...] [--repeats 3]

Everything is measured in one process, side by side, so the ratios hold on a loaded
machine even when the absolute numbers do not. Scoring throughput does not depend on how
well the models are trained, so shadows train for ``attacker.shadows.epochs`` epochs (2
unless overridden); the shadow lines give seconds per image-epoch as a multiple of one
image's forward pass.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fl_mia.attacker.predictions.base import TargetView
from fl_mia.attacker.predictions.settings import PREDICTION_ATTACKS
from fl_mia.config.loading import load_config
from fl_mia.models import build_experiment_model
from server.federation import draw_candidates, make_server_attacker
from fl_mia.training import predict_logits

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "quickstart.toml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    every_attack = "[" + ", ".join(f'"{name}"' for name in PREDICTION_ATTACKS.names()) + "]"
    overrides = [f"attacker.prediction_attacks={every_attack}", "attacker.per_round_attacks=[]", "attacker.shadows.epochs=2"]
    cfg = load_config(args.config, overrides + args.overrides)
    step = make_server_attacker(cfg, draw_candidates(cfg)[0], run_dir=None)
    images = step.candidates.images
    torch.manual_seed(0)
    model = build_experiment_model(cfg.model, cfg.data).eval()

    def forward_pass() -> None:
        predict_logits(model, images)

    def side_by_side(action) -> tuple[float, float]:
        """Best seconds of ``action`` and of the forward pass, run alternately (same load)."""
        action_times, forward_times = [], []
        for _ in range(args.repeats):
            for run, times in ((forward_pass, forward_times), (action, action_times)):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
        return min(action_times), min(forward_times)

    print(
        f"{cfg.name}: {len(images)} candidates of {images.shape[-1]}×{images.shape[-1]}, "
        f"{cfg.model.arch}/{cfg.model.encoder}, {args.threads} threads, best of {args.repeats}, "
        "each ratio against a forward pass timed alternately with it"
    )
    print(f"{'':26s}{'images/s':>10s}{'forward img/s':>15s}{'time × forward':>16s}{'fit s':>9s}")
    for name, attack in step.attacks.items():
        fit_started = time.perf_counter()
        attack.fit(step.knowledge, step.candidates)
        fit_seconds = time.perf_counter() - fit_started
        # A fresh view each time: scoring includes the target's own forward pass, as in a run.
        seconds, forward = side_by_side(lambda: attack.score(TargetView(model), step.candidates))
        print(
            f"{name:26s}{len(images) / seconds:10.0f}{len(images) / forward:15.0f}"
            f"{seconds / forward:16.2f}{fit_seconds:9.1f}"
        )
    # Shadow training cost per image-epoch, against a forward pass timed right after it.
    _, forward = side_by_side(lambda: None)
    print(f"\nshadow training ({step.shadows.epochs} epochs each, hospitals' recipe and thread count):")
    for name, seconds in step.shadows.train_seconds.items():
        image_epochs = step.shadows.epochs * step.shadows.train_images[name]
        print(
            f"  {name:24s}{seconds:7.1f} s  {image_epochs / seconds:6.0f} images/s  "
            f"{seconds / image_epochs / (forward / len(images)):5.1f}× a forward pass per image-epoch"
        )

if __name__ == "__main__":
    main()
