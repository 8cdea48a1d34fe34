"""What a suite costs: the privacy step against the training it observes, knowledge shared
across cells, and the quickstart against a plain in-process loop, side by side in one run.

    python bench/suite_cost.py [--rounds 10] [--seed 0] [--set key=value ...] [--skip-suite | --cells N] [--write docs/benchmarks/suite_cost.md]

1. Privacy step / training per round, at the quickstart's size (configs/quickstart.toml) and
   at the threats suite's (configs/threats/honest.toml with the suite's own ``set``, the size its
   cells run at): each run as ``fl-mia run`` in a fresh
   process; "training" is the hospitals' summed ``fit_seconds`` per round (``timings.csv``),
   "privacy step" the server's scoring per round (update signals and per-round attacks,
   the ``privacy step round`` lines of ``run.log``), medians over the rounds.
2. The threats suite's first cells for one seed (``fl-mia suite --only seed=S --only threat=…``), with the attacker's
   knowledge shared (``OUT/knowledge/``) and with ``--no-shared-knowledge`` (every cell
   trains its own shadows, as a cell run alone does); each cell's ``scores.npz`` compared
   between the two.
3. The quickstart's wall time (``fl-mia run``, start-up included) against the same training
   and the same attack scoring as a plain loop in one process (``--plain-loop``, also started
   fresh and timed from the outside): FedAvg over the hospitals one after another, the
   server's attacker fed each round's replies, the referee at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

from fl_overhead import fedavg
from record import BenchRecord
from scale import run_case

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.toml"
THREATS_CELL = ROOT / "configs" / "threats" / "honest.toml"
THREATS_SUITE = ROOT / "configs" / "suites" / "threats.toml"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def threats_suite() -> dict:
    """The threats suite's file as a table: its ``set`` (the size its cells run at) and its threats."""
    return tomllib.loads(THREATS_SUITE.read_text())


def privacy_vs_training(record: BenchRecord, overrides: list[str], tmp: Path, suite_size: list[str]) -> float:
    """Part 1; returns the quickstart's wall time (part 3 compares it)."""
    record.add("| size | config | privacy step s/round | training s/round | privacy / training | wall s |")
    record.add("|---|---|---|---|---|---|")
    quickstart_wall = float("nan")
    cases = (("quickstart", QUICKSTART, []), ("threats suite", THREATS_CELL, suite_size))
    for label, config, size in cases:
        result = run_case(config, size + overrides, tmp / label.replace(" ", "_"))
        ratio = result["privacy_per_round_s"] / result["training_per_round_s"]
        record.add(
            f"| {label} | `{config.relative_to(ROOT)}`{' + the suite’s `set`' if size else ''} | {result['privacy_per_round_s']:.2f} | "
            f"{result['training_per_round_s']:.2f} | {ratio:.2f}× | {result['wall_s']:.1f} |"
        )
        if config == QUICKSTART:
            quickstart_wall = result["wall_s"]
    return quickstart_wall


def one_seed_cells(threats: list[str], seed: int, cells: int | None) -> list[str]:
    """``--only`` choices for the suite's first ``cells`` threats (None: all) at one seed."""
    return [f"seed={seed}", *(f"threat={name}" for name in threats[:cells])]


def timed_suite(suite: Path, out: Path, overrides: list[str], *extra: str) -> float:
    command = [sys.executable, "-m", "fl_mia.app.cli", "suite", str(suite), "--out", str(out), *extra]
    for override in overrides:
        command += ["--set", override]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"suite failed ({finished.returncode}): {(finished.stdout + finished.stderr)[-2000:]}")
    return time.perf_counter() - started


def same_scores(a: Path, b: Path) -> bool:
    with np.load(a) as left, np.load(b) as right:
        return sorted(left.files) == sorted(right.files) and all(
            np.array_equal(left[k], right[k], equal_nan=left[k].dtype.kind == "f") for k in left.files  # NaN: a round not observed
        )


def shared_vs_one_by_one(
    record: BenchRecord, overrides: list[str], tmp: Path, threats: list[str], seed: int, cells: int | None
) -> None:
    only = [arg for choice in one_seed_cells(threats, seed, cells) for arg in ("--only", choice)]
    shared = timed_suite(THREATS_SUITE, tmp / "shared", overrides, *only)
    alone = timed_suite(THREATS_SUITE, tmp / "alone", overrides, "--no-shared-knowledge", *only)
    cells = sorted(p.name for p in (tmp / "shared" / "cells").iterdir())
    differing = [c for c in cells if not same_scores(tmp / "shared" / "cells" / c / "scores.npz", tmp / "alone" / "cells" / c / "scores.npz")]
    record.add("")
    record.add(f"The threats suite's {len(cells)} cells, seed {seed} (`{THREATS_SUITE.relative_to(ROOT)}`):")
    record.add("")
    record.add("| cells | suite wall s |")
    record.add("|---|---|")
    record.add(f"| knowledge shared (`OUT/knowledge/`, default) | {shared:.1f} |")
    record.add(f"| one by one (`--no-shared-knowledge`) | {alone:.1f} |")
    record.add(f"| shared / one by one | {shared / alone:.2f} |")
    record.add("")
    record.add(f"scores.npz equal both ways: {len(cells) - len(differing)} of {len(cells)} cells" + (f" (differ: {', '.join(differing)})" if differing else ""))


def plain_loop(config: Path, overrides: list[str]) -> None:
    """Part 3's in-process loop: the same training and attack scoring as ``fl-mia run``, no Flower, no Ray."""
    from fl_mia.app.simulation_resources import available_cpus
    from fl_mia.config.loading import load_config
    from fl_mia.contracts import HospitalReply
    from fl_mia.data import build_hospital
    from fl_mia.models import build_experiment_model, get_weights, set_weights
    from fl_mia.training import train_local
    from server.federation import draw_candidates, global_evaluator, initial_weights, make_referee, make_server_attacker
    import torch

    cfg = load_config(config, overrides)
    torch.set_num_threads(available_cpus())  # one process: every core Flower's hospitals share
    hospitals = [build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed) for k in range(cfg.federation.num_hospitals)]
    candidates, ledger = draw_candidates(cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        attacker = make_server_attacker(cfg, candidates, Path(run_dir))
        model, evaluator = build_experiment_model(cfg.model, cfg.data), global_evaluator(cfg)
        weights = initial_weights(cfg)
        evaluator.evaluate(weights)
        attacker.observe_round(0, weights)
        for server_round in range(1, cfg.federation.rounds + 1):
            replies = []
            for hospital in hospitals:
                set_weights(model, weights)
                train_local(model, hospital.train, cfg.training, seed=cfg.seed, tags=(server_round, hospital.index))
                replies.append(HospitalReply(round=server_round, hospital=hospital.index, num_examples=len(hospital.train),
                                             metrics={}, weights=get_weights(model), sent_weights=weights))
            if attacker.updates is not None:
                attacker.updates.on_fit_replies(server_round, replies, 0)
            weights = fedavg([(r.weights, r.num_examples) for r in replies])
            evaluator.evaluate(weights)
            attacker.observe_round(server_round, weights)
        scores = attacker.finish(weights)
        make_referee(cfg, candidates, ledger, Path(run_dir)).judge(
            scores, population_images=len(attacker.knowledge.population), shadows=attacker.shadows
        )


def quickstart_vs_plain(record: BenchRecord, overrides: list[str], quickstart_wall: float) -> None:
    command = [sys.executable, str(Path(__file__).resolve()), "--plain-loop", *sum((["--set", o] for o in overrides), [])]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=_env(), check=True, capture_output=True)
    plain = time.perf_counter() - started
    record.add("")
    record.add("Quickstart (`fl-mia run`, start-up included) against the same training and attack scoring in one plain process:")
    record.add("")
    record.add("| | wall s |")
    record.add("|---|---|")
    record.add(f"| `fl-mia run configs/quickstart.toml` | {quickstart_wall:.1f} |")
    record.add(f"| plain loop (`bench/suite_cost.py --plain-loop`) | {plain:.1f} |")
    record.add(f"| Flower / plain | {quickstart_wall / plain:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="federation.rounds of every run (default: the configs')")
    parser.add_argument("--seed", type=int, default=0, help="the suite's one seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra override for every run")
    parser.add_argument("--skip-suite", action="store_true", help="leave out part 2 (12 cell runs)")
    parser.add_argument("--cells", type=int, default=None, help="part 2 with the suite's first N threats only")
    parser.add_argument("--plain-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, default=None, help="also write the page there (docs/benchmarks/suite_cost.md)")
    args = parser.parse_args()
    overrides = ([f"federation.rounds={args.rounds}"] if args.rounds else []) + args.overrides
    if args.plain_loop:
        plain_loop(QUICKSTART, overrides)
        return
    record = BenchRecord("bench/suite_cost.py", "What a suite costs", write=args.write)
    with tempfile.TemporaryDirectory() as tmp:
        suite = threats_suite()
        quickstart_wall = privacy_vs_training(record, overrides, Path(tmp), list(suite.get("set", [])))
        if not args.skip_suite:
            shared_vs_one_by_one(record, overrides, Path(tmp), list(suite["axes"]["threat"]), args.seed, args.cells)
        quickstart_vs_plain(record, overrides, quickstart_wall)
    record.add("")
    record.add(f"load average {os.getloadavg()[0]:.1f} at the end (the machine's other work counts in every figure).")
    record.finish()


if __name__ == "__main__":
    main()
