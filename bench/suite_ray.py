"""Does one Ray start for a whole suite save time? A small suite run both ways, side by side.

    python bench/suite_ray.py [--seeds 3] [--rounds 2] [--write docs/benchmarks/suite_ray.md]

The same suite (the quickstart at 32×32, a few rounds, one cell per seed) is run as
``fl-mia suite`` with ``--shared-ray`` (one private Ray head, every cell joins it) and with
``--ray-per-cell`` (each cell starts and stops its own Ray), in the order shared, per-cell,
per-cell, shared so that a load drifting on a shared machine weighs on both alike. Each
suite's wall time includes everything a user waits for (Python start, config checks, Ray).
The cells' rounds.csv are compared too: joining a head must not change a result.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import BenchRecord

ROOT = Path(__file__).resolve().parent.parent


def suite_file(folder: Path, *, seeds: int, rounds: int) -> Path:
    path = folder / "bench_suite.toml"
    settings = [
        "data.image_size=32", "data.phantom.num_patients=120", "federation.patients_per_hospital=12",
        "federation.attacker_patients=12", f"federation.rounds={rounds}", "training.local_epochs=1",
        "attacker.shadows.epochs=1",
    ]
    path.write_text(
        f'name = "bench"\nconfig = "{ROOT / "configs" / "quickstart.toml"}"\nseeds = {list(range(seeds))}\n'
        f"set = {settings!r}\n".replace("'", '"') + "\n[axes.run]\nplain = {}\n"
    )
    return path


def run_suite(path: Path, out: Path, *, shared: bool) -> float:
    command = [sys.executable, "-m", "fl_mia.app.cli", "suite", str(path), "--out", str(out),
               "--shared-ray" if shared else "--ray-per-cell"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"suite failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="cells per suite")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", type=Path, default=None, help="also write the figures there (docs/benchmarks/suite_ray.md)")
    args = parser.parse_args()
    record = BenchRecord("bench/suite_ray.py", "Suites: one Ray start for every cell vs one per cell", write=args.write)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = suite_file(folder, seeds=args.seeds, rounds=args.rounds)
        times: dict[bool, list[float]] = {True: [], False: []}
        outs: dict[bool, Path] = {}
        for index, shared in enumerate((True, False, False, True)):
            out = folder / f"suite{index}"
            times[shared].append(run_suite(path, out, shared=shared))
            outs.setdefault(shared, out)
        same = all(
            (outs[True] / "cells" / cell.name / "rounds.csv").read_bytes()
            == (outs[False] / "cells" / cell.name / "rounds.csv").read_bytes()
            for cell in (outs[True] / "cells").iterdir()
        )
    shared_s, per_cell_s = sum(times[True]) / 2, sum(times[False]) / 2
    record.add(f"A suite of {args.seeds} cells (quickstart at 32×32, {args.rounds} rounds), each way twice:")
    record.add()
    record.add("| Ray | suite wall s (mean of 2) | per cell s |")
    record.add("|---|---|---|")
    record.add(f"| one head for the suite (`--shared-ray`, default) | {shared_s:.1f} | {shared_s / args.seeds:.1f} |")
    record.add(f"| started per cell (`--ray-per-cell`) | {per_cell_s:.1f} | {per_cell_s / args.seeds:.1f} |")
    record.add(f"| shared / per cell | {shared_s / per_cell_s:.2f} | |")
    record.add()
    record.add(f"rounds.csv of every cell identical both ways: {'yes' if same else 'NO'}")
    record.finish()


if __name__ == "__main__":
    main()
