"""What a dataset looks like once loaded: counts, splits, classes, sizes; and a preview image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fl_mia.config import DataConfig, FederationConfig
from fl_mia.data.shards import HospitalData, Split
from fl_mia.data.hospitals import build_attacker_population, build_hospital


@dataclass
class DatasetSummary:
    """Rows of ``fl-mia data inspect``: ``overview`` (name, value) and ``splits`` per hospital."""

    overview: list[tuple[str, str]] = field(default_factory=list)
    splits: list[dict[str, str]] = field(default_factory=list)


def _patients(split: Split) -> int:
    return len(np.unique(split.patient_ids))


def summarize(data: DataConfig, federation: FederationConfig, *, seed: int) -> DatasetSummary:
    hospitals = [build_hospital(data, federation, k, seed=seed) for k in range(federation.num_hospitals)]
    attacker = build_attacker_population(data, federation, seed=seed)
    summary = DatasetSummary()
    row = summary.overview.append
    row(("source", data.source if data.path is None else f"{data.source} ({data.path})"))
    if data.source != "phantom":
        from fl_mia.data.disk import task_lookup
        from fl_mia.data.pool import pool_of

        pool = pool_of(data)
        spacings = np.asarray(pool.spacings, dtype=float)
        labels = np.asarray(pool.labels)
        row(("cases", str(pool.cases)))
        row(("patients", str(len(pool.patients))))
        row(("slices kept", str(len(pool))))
        row(("sites", _sites(data, federation, pool)))
        row(("channels", str(pool.channels)))
        row(("spacing range", " × ".join(f"{lo:g}–{hi:g}" for lo, hi in zip(spacings.min(0), spacings.max(0)))))
        row(("raw intensity range", f"{pool.raw_intensity[0]:.4g} … {pool.raw_intensity[1]:.4g}"))
        shares = np.bincount(labels.reshape(-1), minlength=len(pool.label_names)) / labels.size
        row(("foreground share per class", ", ".join(f"{n} {s:.2%}" for n, s in zip(pool.label_names[1:], shares[1:]))))
        lookup = task_lookup(data, pool.label_names)
        row((f"task {data.task!r} classes", ", ".join(f"{n}→{c}" for n, c in zip(pool.label_names, lookup))))
    images = np.concatenate([h.train.images for h in hospitals])
    row(("image size", f"{images.shape[-2]}×{images.shape[-1]} (data.image_size)"))
    row(("intensity scheme", _scheme(data)))
    row(("normalised intensity range", f"{images.min():.3g} … {images.max():.3g}"))
    row(("partition", federation.partition if data.source != "phantom" else "phantom (patients_per_hospital)"))
    for hospital in hospitals:
        summary.splits.append(_split_row(f"hospital {hospital.index}", hospital))
    summary.splits.append({"who": "attacker", "train": "", "heldout": "", "test": "", "population": f"{_patients(attacker)} p / {len(attacker)} sl"})
    return summary


def _sites(data: DataConfig, federation: FederationConfig, pool) -> str:
    """The sites hospitals are made of: the manifest's under partition = 'manifest', else the dataset's own."""
    if federation.partition == "manifest":
        from collections import Counter

        from fl_mia.data.disk import patient_table
        from fl_mia.data.partition import read_manifest

        site_of = read_manifest(federation, patient_table(data, pool), patient_regex=data.patient_regex, dataset=data.path)
        counts = Counter(site_of.values())
        where = federation.manifest or "the dataset"
        return ", ".join(f"{site} ({n} p)" for site, n in sorted(counts.items())) + f" (from {where})"
    sites = sorted({s for s in pool.patient_sites if s})
    return ", ".join(sites) if sites else "none (partition decides)"


def _scheme(data: DataConfig) -> str:
    """The intensity scheme in force and where it came from (``data.normalize`` or the dataset's declaration)."""
    if data.source == "phantom":
        return "zscore (the phantom's default)" if data.normalize == "auto" else f"{data.normalize} (data.normalize)"
    from fl_mia.data.pool import pool_of

    pool = pool_of(data)
    return f"{pool.normalize} ({pool.normalize_origin})"


def _split_row(name: str, hospital: HospitalData) -> dict[str, str]:
    return {
        "who": name,
        **{s: f"{_patients(getattr(hospital, s))} p / {len(getattr(hospital, s))} sl" for s in ("train", "heldout", "test")},
        "population": "",
    }


def slice_title(hospital: int, patient: int, names: list[str] | None) -> str:
    """``h0 case_023``: the dataset's patient id (the phantom's patients are numbered: ``h0 p17``)."""
    return f"h{hospital} {names[patient] if names else f'p{patient}'}"


def write_preview(data: DataConfig, federation: FederationConfig, path: Path, *, seed: int, per_hospital: int = 4) -> Path:
    """``data_preview.png``: training slices of every hospital (rows) with their masks outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fl_mia.data.hospitals import patient_names

    hospitals = [build_hospital(data, federation, k, seed=seed) for k in range(federation.num_hospitals)]
    names = patient_names(data)
    fig, axes = plt.subplots(len(hospitals), per_hospital, figsize=(2 * per_hospital, 2 * len(hospitals)), squeeze=False)
    for row, hospital in zip(axes, hospitals):
        split = hospital.train
        # Prefer slices with foreground: they show what the model learns to segment.
        order = np.argsort(-(split.masks.reshape(len(split), -1) > 0).sum(1), kind="stable")
        for ax, i in zip(row, order[:per_hospital]):
            image = split.images[i]
            shown = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
            if shown.ndim == 3:
                shown = (shown - shown.min()) / (np.ptp(shown) + 1e-6)
            ax.imshow(shown, cmap="gray")
            if split.masks[i].max() > 0:
                ax.contour(split.masks[i], levels=np.arange(0.5, split.masks[i].max() + 1), colors=["yellow", "red"][: int(split.masks[i].max())], linewidths=0.8)
            ax.set_title(slice_title(hospital.index, int(split.patient_ids[i]), names), fontsize=7)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
