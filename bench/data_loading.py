"""Datasets from disk: NIfTI decoding cold vs from the cache, and a federated round on a
loaded dataset vs the phantom at the same image count and size.

1. Writes an MSD-layout CT-like dataset with nibabel (CASES volumes of SIDE×SIDE×DEPTH),
   loads it with an empty cache (decode, reorient, slice, resize, normalise, write the cache),
   then again from the cache; prints slices/s of both (goal: cached ≥ 20× faster).
2. Exports the quickstart phantom to MSD NIfTI and loads it back with its own hospitals
   (site manifest): the same patients, slice counts and image size. Times federated rounds
   (local training of every hospital + FedAvg + evaluation, in one process, as
   bench/fl_overhead.py's plain loop) on both (goal: loaded ≤ 1.1× the phantom's time).

    python bench/data_loading.py [--cases 20] [--side 256] [--depth 48] [--rounds 3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
from record import BenchRecord

from fl_mia.config.loading import load_config
from fl_mia.data.export import export_phantom
from fl_mia.data.pool import load_pool


def write_ct_like(root: Path, *, cases: int, side: int, depth: int) -> Path:
    import json

    import nibabel as nib

    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    zz, yy, xx = np.meshgrid(np.arange(depth), np.arange(side), np.arange(side), indexing="ij")
    training = []
    for i in range(cases):
        body = ((xx - side / 2) / (0.4 * side)) ** 2 + ((yy - side / 2) / (0.3 * side)) ** 2 <= 1
        organ = ((xx - 0.6 * side) / (0.12 * side)) ** 2 + ((yy - 0.5 * side) / (0.1 * side)) ** 2 + ((zz - depth / 2) / (0.3 * depth)) ** 2 <= 1
        lesion = ((xx - 0.62 * side) / (0.03 * side)) ** 2 + ((yy - 0.5 * side) / (0.03 * side)) ** 2 + ((zz - depth / 2) / (0.1 * depth)) ** 2 <= 1
        image = np.where(body, 40.0, -1000.0) + 60.0 * organ + 40.0 * lesion + rng.normal(0, 20, body.shape)
        labels = organ.astype(np.uint8) + (lesion & organ).astype(np.uint8)
        affine = np.diag([0.8, 0.8, 2.5, 1.0])
        # nibabel volumes are x, y, z: the axial slices go last.
        nib.save(nib.Nifti1Image(np.transpose(image, (2, 1, 0)).astype(np.int16), affine), root / f"imagesTr/ct_{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)), affine), root / f"labelsTr/ct_{i}.nii.gz")
        training.append({"image": f"./imagesTr/ct_{i}.nii.gz", "label": f"./labelsTr/ct_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "organ", "2": "lesion"}, "training": training,
    }))
    return root


def timed_load(data_cfg) -> tuple[float, int]:
    started = time.perf_counter()
    pool = load_pool(data_cfg)
    float(np.asarray(pool.images).sum())  # touch every slice: a memory map reads lazily
    return time.perf_counter() - started, len(pool)


def plain_loop():
    spec = importlib.util.spec_from_file_location("fl_overhead", Path(__file__).with_name("fl_overhead.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plain_federated_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--depth", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--write", type=Path, default=None, help="also write the figures there (docs/benchmarks/data_loading.md)")
    args = parser.parse_args()
    record = BenchRecord("bench/data_loading.py", "Datasets from disk: decoding, the cache, and a round on loaded data", write=args.write)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_ct_like(root / "ct", cases=args.cases, side=args.side, depth=args.depth)
        ct = load_config("configs/data/msd.toml", [f'data.path="{root / "ct"}"', f'data.cache_dir="{root / "cache"}"', *args.overrides])
        cold_s, slices = timed_load(ct.data)
        cached_s, _ = timed_load(ct.data)
        record.add("| measurement | result |")
        record.add("|---|---|")
        size = f"{ct.data.image_size}×{ct.data.image_size}"
        record.add(f"| NIfTI cold (decode, reorient, slice, resize, normalise, write the cache): {args.cases} volumes "
                   f"{args.side}×{args.side}×{args.depth} → {slices} slices of {size} | {slices / cold_s:.1f} slices/s ({cold_s:.2f} s) |")
        record.add(f"| the same from the cache (memory map, every slice read) | {slices / cached_s:.1f} slices/s ({cached_s:.3f} s) |")
        record.add(f"| cached / cold | {cold_s / cached_s:.0f}× (goal ≥ 20×) |")

        base = [f"federation.rounds={args.rounds}", "referee.enabled=false", "attacker.update_attacks=[]", *args.overrides]
        phantom = load_config("configs/quickstart.toml", base)
        settings = export_phantom(phantom.data, phantom.federation, "msd", root / "phantom_msd", seed=phantom.seed)
        loaded = load_config("configs/data/msd.toml", [
            *base, f'data.cache_dir="{root / "cache"}"', f"federation.attacker_patients={phantom.federation.attacker_patients}",
            *(f"{key}={value!r}" if not isinstance(value, str) else f'{key}="{value}"' for key, value in settings.items()),
        ])
        load_pool(loaded.data)  # decoded once, outside the timing, as a second run would find it
        loop = plain_loop()
        # Phantom, loaded, loaded, phantom: a load that drifts during the run (a shared machine)
        # weighs on both sides alike.
        rounds: dict[str, list[float]] = {"phantom": [], "loaded": []}
        dice: dict[str, float] = {}
        for name in ("phantom", "loaded", "loaded", "phantom"):
            _, times, dice[name] = loop(phantom if name == "phantom" else loaded)
            rounds[name] += list(times)
        from fl_mia.data import build_hospital

        count = lambda cfg: sum(len(build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed).train) for k in range(cfg.federation.num_hospitals))  # noqa: E731
        p, q = float(np.median(rounds["phantom"])), float(np.median(rounds["loaded"]))
        hospitals = phantom.federation.num_hospitals
        record.add(f"| federated round, quickstart phantom, {hospitals} hospitals, {count(phantom)} training slices of {size} "
                   f"(median of {len(rounds['phantom'])}) | {p:.2f} s, Dice {dice['phantom']:.3f} |")
        record.add(f"| the same phantom exported to MSD NIfTI and loaded back with its site manifest ({count(loaded)} "
                   f"training slices; median of {len(rounds['loaded'])}) | {q:.2f} s, Dice {dice['loaded']:.3f} |")
        record.add(f"| loaded / phantom | {q / p:.2f} (goal ≤ 1.1) |")
    record.finish()


if __name__ == "__main__":
    main()
