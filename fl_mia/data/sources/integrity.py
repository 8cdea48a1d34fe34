"""Checks a volume dataset must pass before it is decoded, as nnU-Net's integrity check does them.

Every listed file exists; an image and its label agree in geometry (affine, hence spacing,
origin and direction) within tolerance; labels are whole class ids; a 2-D file in a
volume dataset is named as such; a label with a trailing axis of size 1 is squeezed. Each
failure is one :class:`DataError` line naming the file(s) and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fl_mia.data.sources.base import DataError

# nnU-Net compares spacing, origin and direction with np.allclose; the same tolerances here.
GEOMETRY_RTOL = 1e-3
GEOMETRY_ATOL = 1e-4


@dataclass
class Volume:
    """A decoded file: its data and voxel spacing (both reoriented to RAS), and the affine as stored."""

    data: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None  # None for pictures (no geometry to compare)


def check_listed_files(entries: Iterable[tuple[str, Path]], where: Path) -> None:
    """Every file the dataset lists is there: ``entries`` are (how the entry is named, file)."""
    for entry, file in entries:
        if not file.is_file():
            raise DataError(f"{where}: {entry} lists {file}, which does not exist; add the file or remove the entry")


def spatial_label(labels: np.ndarray, file: Path, *, role: str = "label") -> np.ndarray:
    """The volume as ``[x, y, z]``: a trailing axis of size 1 (a 4-D file of one frame) squeezed."""
    if labels.ndim == 4 and labels.shape[-1] == 1:
        return labels[..., 0]
    if labels.ndim != 3:
        raise DataError(f"{file}: {role} of shape {tuple(labels.shape)} has {labels.ndim} axes; give one 3-D {role} volume (x, y, z)")
    return labels


def check_integral(labels: np.ndarray, file: Path) -> None:
    """Labels are whole class ids: an interpolated mask (0.5, 1.5) is refused, not rounded."""
    fractional = labels != np.rint(labels)
    if fractional.any():
        examples = sorted({float(v) for v in np.unique(labels[fractional])[:3]})
        raise DataError(
            f"{file}: label values {examples} are not whole class ids (an interpolated mask?); "
            "resample the label with nearest-neighbour interpolation"
        )


def _differences(image: Volume, label: Volume) -> str | None:
    if image.affine is None or label.affine is None:
        return None
    close = dict(rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL)
    image_spacing, label_spacing = (np.linalg.norm(v.affine[:3, :3], axis=0) for v in (image, label))
    if not np.allclose(image_spacing, label_spacing, **close):
        return f"spacing {_short(image_spacing)} vs {_short(label_spacing)}"
    if not np.allclose(image.affine[:3, 3], label.affine[:3, 3], **close):
        return f"origin {_short(image.affine[:3, 3])} vs {_short(label.affine[:3, 3])}"
    if not np.allclose(image.affine[:3, :3], label.affine[:3, :3], **close):
        return "direction (their affines' axes point different ways)"
    return None


def _short(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def check_geometry(
    image: Volume, label: Volume, image_file: Path, label_file: Path, *, table: str, role: str = "label"
) -> None:
    """Image and label lie in the same place: spacing, origin and direction.

    ``table`` names the opt-out key's table. Shapes are compared apart (always): a different
    affine can be a user's known quirk, a different voxel count cannot be trained on.
    """
    difference = _differences(image, label)
    if difference is not None:
        raise DataError(
            f"{image_file} and its {role} {label_file} differ in {difference}; fix the {role}'s geometry "
            f"(or set {table}.check_geometry=false if you know they align)"
        )
