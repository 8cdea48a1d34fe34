"""Medical Segmentation Decathlon layout: ``dataset.json`` with ``training: [{image, label}]``.

Images may be 4-D (several modalities in the last axis, e.g. BraTS); ``modality`` declares them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import fl_mia.data.sources.volumes_io as volumes_io
from fl_mia.data.sources.integrity import Volume, check_geometry, check_integral, check_listed_files, spatial_label
from fl_mia.data.sources.settings import VolumeSettings
from fl_mia.data.sources.base import (
    DataError,
    DatasetIndex,
    DecodedCase,
    check_unique,
    map_label_values,
    patient_of,
    require_dir,
)


def read_dataset_json(root: Path) -> dict:
    require_dir(root, "a dataset folder holding dataset.json")
    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: no dataset.json; the folder needs one (see docs/data.md or fl-mia data export-phantom)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error}); fix the file") from None


def check_channels(image: np.ndarray, expected: int, file: Path, declared_in: str) -> None:
    if image.shape[0] != expected:
        raise DataError(
            f"{file}: {image.shape[0]} channel(s) but {declared_in} declares {expected}; fix the image or the declaration"
        )


def check_shapes(image: np.ndarray, labels: np.ndarray, image_file: Path, label_file: Path) -> None:
    if image.shape[1:] != labels.shape:
        raise DataError(
            f"{image_file}: image shape {tuple(image.shape[1:])} differs from its mask {label_file} {tuple(labels.shape)}; "
            "image and mask must cover the same voxels"
        )


def _as_channels_first(volume: np.ndarray) -> np.ndarray:
    return volume[None] if volume.ndim == 3 else np.moveaxis(volume, -1, 0)


def check_label(
    image: Volume, label: Volume, raw_labels: np.ndarray, image_file: Path, label_file: Path, *, geometry: bool, table: str
) -> None:
    """A label whose shape matches its image: its geometry (unless opted out) and its values."""
    if geometry:
        check_geometry(image, label, image_file, label_file, table=table)
    check_integral(raw_labels, label_file)


def index(
    settings: VolumeSettings | None,
    *,
    path: Path,
    labels: dict[str, int | list[int]] | None,
    patient_regex: str | None,
) -> DatasetIndex:
    """The dataset's cases (``settings`` cut the volumes into slices later, in the pool; ``labels`` come from dataset.json)."""
    root = Path(path)
    meta = read_dataset_json(root)
    where = root / "dataset.json"
    try:
        entries = [(root / e["image"], root / e["label"]) for e in meta["training"]]
        names = {int(value): name for value, name in meta["labels"].items()}
        modalities = [str(name) for name in meta.get("modality", {"0": "image"}).values()]
        channels = len(modalities)
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{where}: missing or malformed key {error}; MSD needs 'training' [{{image, label}}], 'labels' and 'modality'") from None
    if not entries:
        raise DataError(f"{where}: 'training' lists no cases; add the image/label pairs")
    case_ids = [image.name.split(".")[0] for image, _ in entries]
    check_unique(case_ids, where)
    # Before anything stats or decodes a file (the cache key does): a missing one is one line.
    check_listed_files(
        ((f"training entry {i} ({kind})", file) for i, pair in enumerate(entries) for kind, file in zip(("image", "label"), pair)),
        where,
    )
    geometry = settings.check_geometry if settings is not None else True
    values = sorted(names)
    lookup = {value: class_id for class_id, value in enumerate(values)}

    def read_cases() -> Iterator[DecodedCase]:
        for case, (image_file, label_file) in zip(case_ids, entries):
            volume = volumes_io.load_nifti(image_file)
            label = volumes_io.load_nifti(label_file)
            image = _as_channels_first(volume.data)
            raw_labels = spatial_label(label.data, label_file)
            check_channels(image, channels, image_file, f"{where} 'modality'")
            check_shapes(image, raw_labels, image_file, label_file)
            check_label(volume, label, raw_labels, image_file, label_file, geometry=geometry, table="data.msd")
            yield DecodedCase(
                case, patient_of(case, patient_regex), None, image,
                map_label_values(raw_labels, lookup, label_file), volume.spacing, image_file,
            )

    files = [f for pair in entries for f in pair]
    return DatasetIndex(files, [names[v] for v in values], channels, read_cases, case_ids, channel_kinds=modalities, declared_in=f"{where} 'modality'")
