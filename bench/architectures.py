"""One tiny federation per smp architecture: does it run end to end, and how long does it take?

Each run is the quickstart shrunk (2 hospitals, 2 rounds, 64x64 scans, one local epoch) with
every update attack on, so training, the prediction attacks of the config, the update
attacks and gradient alignment all run. Prints one line per architecture: works yes/no,
wall time, final Dice, and the first line of the error where it failed.

    python bench/architectures.py [--task lesion|organ_lesion] [--arch Unet FPN ...] [--engine ray|inprocess]
                                  [--set key=value ...]

``--engine inprocess`` runs the same ServerApp federation and ClientApp hospitals through
the tests' ``InProcessGrid`` (one process, hospitals one after another, no Ray): for a
machine too loaded for Ray to start, and to time the model work without Ray's start-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fl_mia.app.experiment import run_experiment
from fl_mia.run_outputs import read_metrics
from fl_mia.run_folder import create_run_folder
from fl_mia.config.loading import load_config
from fl_mia.app.preflight import preflight

# Encoder and depth each architecture runs with here (docs/architectures.md).
ARCHITECTURES = {
    "Unet": ("resnet18", 3),
    "UnetPlusPlus": ("efficientnet-b0", 3),
    "MAnet": ("resnet18", 3),
    "Linknet": ("resnet34", 3),
    "FPN": ("resnet18", 3),
    "PSPNet": ("resnet18", 3),
    "DeepLabV3": ("resnet18", 3),
    "DeepLabV3Plus": ("mobilenet_v2", 3),
    "PAN": ("resnet18", 3),
    "UPerNet": ("resnet18", 3),
    "Segformer": ("mit_b0", 3),
    "DPT": ("tu-vit_tiny_patch16_224", 4),
}

TINY = [
    "data.image_size=64",
    "data.phantom.num_patients=60",
    "federation.num_hospitals=2",
    "federation.patients_per_hospital=8",
    "federation.attacker_patients=8",
    "federation.rounds=2",
    "training.local_epochs=1",
    "attacker.shadows.epochs=1",
    'attacker.update_attacks=["returned_loss", "loss_reduction", "loss_log_ratio", "gradient_alignment"]',
]


def run_in_process(cfg, *, runs_root: Path):
    from flwr.app import Context, RecordDict

    from clients.client_app import make_client_app
    from fl_mia.app.experiment import RunResult
    from server.federation import run_federation
    from server.inprocess_grid import InProcessGrid

    run_dir = create_run_folder(cfg.name, runs_root=runs_root)
    grid = InProcessGrid(make_client_app(cfg), cfg.federation.num_hospitals, seed=cfg.seed)
    context = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    run_federation(grid, context, cfg, run_dir, on_round_end=lambda _progress: None)
    return RunResult(run_dir, read_metrics(run_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.toml")
    parser.add_argument("--task", default="lesion", choices=["lesion", "organ_lesion"])
    parser.add_argument("--arch", nargs="*", default=list(ARCHITECTURES))
    parser.add_argument("--engine", default="ray", choices=["ray", "inprocess"])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    print(f"{'architecture':14s} {'encoder':24s} works  wall_s  dice   error")
    for arch in args.arch:
        encoder, depth = ARCHITECTURES[arch]
        overrides = [
            *TINY,
            f'data.task="{args.task}"',
            f'model.arch="{arch}"',
            f'model.encoder="{encoder}"',
            f"model.encoder_depth={depth}",
            *args.overrides,
        ]
        started = time.perf_counter()
        try:
            cfg = preflight(load_config(Path(args.config), overrides))
            with tempfile.TemporaryDirectory() as root:
                run = run_experiment if args.engine == "ray" else run_in_process
                metrics = run(cfg, runs_root=Path(root)).metrics
            dice, works, error = metrics["utility"]["dice"], "yes", ""
        except Exception as failure:  # a benchmark reports every failure and goes on
            dice, works, error = float("nan"), "no", str(failure).splitlines()[0][:120] if str(failure) else type(failure).__name__
        print(f"{arch:14s} {encoder:24s} {works:5s} {time.perf_counter() - started:7.1f} {dice:6.3f}  {error}", flush=True)


if __name__ == "__main__":
    main()
