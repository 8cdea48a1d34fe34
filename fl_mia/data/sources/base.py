"""What every dataset reader gives: its files (for the cache key) and its decoded cases."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A dataset on disk is wrong; the message is one line naming the file and the fix."""


@dataclass
class DecodedCase:
    """One case as read from disk, before slicing and resizing.

    ``image`` is ``[C, *spatial]`` (spatial 2-D for a picture, 3-D for a volume), ``labels``
    is ``[*spatial]`` holding class ids 0..L-1 in the order of the dataset's label names.
    """

    case: str
    patient: str
    site: str | None
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]
    source_file: Path


@dataclass
class DatasetIndex:
    """A dataset found on disk: cheap to build (no decoding), decoded by ``read_cases``."""

    files: list[Path]
    label_names: list[str]  # class id -> name; 0 is background
    channels: int
    read_cases: Callable[[], Iterator[DecodedCase]]
    case_ids: list[str] = field(default_factory=list)
    # What the dataset declares each channel to be (MSD 'modality', nnU-Net 'channel_names'), and where:
    # the intensity scheme follows it unless data.normalize is set.
    channel_kinds: list[str] = field(default_factory=list)
    declared_in: str = ""


def patient_of(case: str, pattern: str | None) -> str:
    """The patient a case belongs to: the first group of ``data.patient_regex``, else the case."""
    if pattern is None:
        return case
    match = re.search(pattern, case)
    if match is None or not match.groups():
        raise DataError(
            f"data.patient_regex {pattern!r} finds no patient in case {case!r}: give a regex whose first group is the patient id"
        )
    return match.group(1)


def check_unique(case_ids: list[str], where: Path) -> None:
    seen: set[str] = set()
    for case in case_ids:
        if case in seen:
            raise DataError(f"{where}: case id {case!r} appears twice; every case needs its own id (rename or remove one)")
        seen.add(case)


def map_label_values(values: np.ndarray, lookup: dict[int, int], file: Path) -> np.ndarray:
    """Raw label values -> class ids; a value the dataset does not declare is an error."""
    present = np.unique(values)
    undeclared = [int(v) for v in present if int(v) not in lookup]
    if undeclared:
        raise DataError(
            f"{file}: label values {undeclared[:5]} are not declared (declared: {sorted(lookup)}); "
            "declare them in the dataset's labels (data.labels for folders) or fix the mask"
        )
    table = np.zeros(int(present.max()) + 1 if len(present) else 1, dtype=np.uint8)
    for raw, class_id in lookup.items():
        if 0 <= raw < len(table):
            table[raw] = class_id
    return table[values.astype(np.int64)]


def require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist; point data.path at {what}")
