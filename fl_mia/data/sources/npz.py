"""NumPy arrays in one ``.npz``: ``images [N,H,W(,C)]``, ``masks [N,H,W]`` (label ids),
``patient_ids [N]`` and optionally ``sites [N]``; each slice is a case of its patient."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fl_mia.data.sources.base import DataError, DatasetIndex, DecodedCase, map_label_values


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: cannot read this .npz ({type(error).__name__}); write it with numpy.savez") from None


def index(
    settings: None,
    *,
    path: Path,
    labels: dict[str, int | list[int]] | None,
    patient_regex: str | None,
) -> DatasetIndex:
    """The arrays' slices (npz has no table of its own; patients come from ``patient_ids``, not a regex)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path: {path} does not exist; point data.path at an .npz file with images, masks, patient_ids")
    arrays = _load(path)
    missing = [key for key in ("images", "masks", "patient_ids") if key not in arrays]
    if missing:
        raise DataError(f"{path}: arrays {missing} missing (has {sorted(arrays)}); save images, masks and patient_ids")
    images, masks, patients = arrays["images"], arrays["masks"], arrays["patient_ids"]
    sites = arrays.get("sites")
    n = len(images)
    if images.ndim not in (3, 4) or masks.shape != images.shape[:3]:
        raise DataError(f"{path}: images {images.shape} and masks {masks.shape} differ; need images [N,H,W(,C)] and masks [N,H,W]")
    for name, column in (("patient_ids", patients), ("sites", sites)):
        if column is not None and len(column) != n:
            raise DataError(f"{path}: {name} has {len(column)} entries for {n} images; give one per image")
    channels = 1 if images.ndim == 3 else images.shape[-1]
    if labels:
        if any(isinstance(v, list) for v in labels.values()):
            raise DataError("data.labels: NPZ masks hold label ids; give one integer per label")
        values, names = list(labels.values()), list(labels)
    else:
        values = sorted(int(v) for v in np.unique(masks))
        values = values if 0 in values else [0, *values]
        names = ["background", *(f"label_{v}" for v in values[1:])]
    lookup = {int(v): class_id for class_id, v in enumerate(values)}

    def read_cases() -> Iterator[DecodedCase]:
        for i in range(n):
            image = images[i].astype(np.float32)
            image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
            yield DecodedCase(
                f"slice_{i}", str(patients[i]), None if sites is None else str(sites[i]), image,
                map_label_values(masks[i], lookup, path), (1.0, 1.0), path,
            )

    return DatasetIndex([path], names, channels, read_cases, [f"slice_{i}" for i in range(n)])
