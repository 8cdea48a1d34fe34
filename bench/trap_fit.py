"""Trap weights' detector fitting: a round's detectors fitted together vs one by one, side by side.

Each detector's filter is ascended against every patch the server holds (its population and
every candidate, at every position of the detector layer). Fitted one by one, every detector
reads all those patches at each step; fitted together, one matrix product per step serves
them all. Same filters (to float rounding) either way.

    python bench/trap_fit.py [--detectors 8] [--scans 1100] [--positions 64] [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fl_mia.attacker.poisoning.trap_weights import fit_detector_filter, fit_detector_filters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", type=int, default=8)
    parser.add_argument("--scans", type=int, default=1100, help="population + candidates (the threats suite: about 1100)")
    parser.add_argument("--positions", type=int, default=64, help="positions of the detector layer (32×32 scans: 8×8)")
    parser.add_argument("--width", type=int, default=576, help="a patch's length (resnet18 layer1: 64 channels × 3×3)")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(args.scans * args.positions, args.width, generator=generator)
    owns = [patches[k * args.positions : (k + 1) * args.positions] for k in range(args.detectors)]
    held = torch.ones(len(patches), args.detectors, dtype=torch.bool)
    for k in range(args.detectors):
        held[k * args.positions : (k + 1) * args.positions, k] = False
    started = time.perf_counter()
    together, _ = fit_detector_filters(owns, patches, held_against=held, steps=args.steps)
    batched = time.perf_counter() - started
    started = time.perf_counter()
    alone = [fit_detector_filter(own, patches, held_against=held[:, k], steps=args.steps)[0] for k, own in enumerate(owns)]
    one_by_one = time.perf_counter() - started
    difference = max(float((a - b).abs().max()) for a, b in zip(alone, together))
    print(f"{args.detectors} detectors, {len(patches):,} patches of {args.width}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}; largest filter difference {difference:.1e}")
    print(f"one by one {one_by_one:.1f} s · together {batched:.1f} s · {one_by_one / batched:.2f}× faster together")


if __name__ == "__main__":
    main()
