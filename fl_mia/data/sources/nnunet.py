"""nnU-Net v2 raw layout: ``dataset.json`` (channel_names, labels, file_ending),
``imagesTr/{CASE}_{XXXX}{ending}`` (one file per channel), ``labelsTr/{CASE}{ending}``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import fl_mia.data.sources.volumes_io as volumes_io
from fl_mia.data.sources.base import DataError, DatasetIndex, DecodedCase, map_label_values, patient_of
from fl_mia.data.sources.integrity import Volume, check_geometry, spatial_label
from fl_mia.data.sources.msd import check_channels, check_label, check_shapes, read_dataset_json
from fl_mia.data.sources.settings import VolumeSettings


def _load_channels(files: dict[int, Path], channels: int, case: str, *, geometry: bool) -> list[Volume]:
    """A case's channel files, one 3-D volume each, checked to agree in shape (and geometry unless opted out)."""
    first_file = files[0]
    decoded = [volumes_io.load_any(files[c]) for c in range(channels)]
    for c, channel in enumerate(decoded):
        if channel.affine is not None:  # one NIfTI per channel: 3-D, or 4-D of one frame
            channel.data = spatial_label(channel.data, files[c], role="channel")
    shapes = {d.data.shape for d in decoded}
    if len(shapes) > 1:
        raise DataError(f"{first_file}: the channel files of case {case!r} differ in shape {sorted(shapes)}; they must match")
    first = decoded[0].data
    if first.ndim == 3 and first.shape[-1] in (3, 4) and str(first_file).lower().endswith(volumes_io.PICTURE_SUFFIXES):
        raise DataError(f"{first_file}: a colour picture is one file per colour channel in nnU-Net; split it or declare 3 channel_names")
    if geometry:
        for c in range(1, channels):
            check_geometry(decoded[0], decoded[c], first_file, files[c], table="data.nnunet", role="channel file")
    return decoded


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
        channel_names = meta["channel_names"]
        declared = meta["labels"]
        ending = meta["file_ending"]
    except KeyError as error:
        raise DataError(f"{where}: missing key {error}; nnU-Net v2 needs channel_names, labels and file_ending") from None
    if any(not isinstance(v, int) for v in declared.values()):
        raise DataError(f"{where}: region-based labels (lists) are not supported; give one integer per label")
    channels = len(channel_names)
    label_files = sorted((root / "labelsTr").glob(f"*{ending}"))
    image_files = sorted((root / "imagesTr").glob(f"*{ending}"))
    if not label_files:
        raise DataError(f"{root / 'labelsTr'}: no masks matching *{ending}; nnU-Net v2 keeps masks in labelsTr/{{CASE}}{ending}")
    pattern = re.compile(r"^(.*)_(\d{4})" + re.escape(ending) + "$")
    by_case: dict[str, dict[int, Path]] = {}
    for file in image_files:
        match = pattern.match(file.name)
        if match is None:
            raise DataError(f"{file}: image name lacks the _XXXX channel suffix; name it {{CASE}}_0000{ending}")
        by_case.setdefault(match.group(1), {})[int(match.group(2))] = file
    case_ids = [file.name[: -len(ending)] for file in label_files]
    for case, label_file in zip(case_ids, label_files):
        if case not in by_case:
            raise DataError(f"{label_file}: mask without its image {root / 'imagesTr' / (case + '_0000' + ending)}; add the image or remove the mask")
    for case, files in by_case.items():
        if case not in case_ids:
            raise DataError(f"{next(iter(files.values()))}: image without its mask {root / 'labelsTr' / (case + ending)}; add the mask or remove the image")
        if sorted(files) != list(range(channels)):
            raise DataError(
                f"{root / 'imagesTr'}: case {case!r} has channel files {sorted(files)} but channel_names in {where} "
                f"declares {channels}; give one {case}_XXXX{ending} per channel"
            )
    values = sorted(declared.values())
    names = {value: name for name, value in declared.items()}
    lookup = {value: class_id for class_id, value in enumerate(values)}

    geometry = settings.check_geometry if settings is not None else True

    def read_cases() -> Iterator[DecodedCase]:
        for case, label_file in zip(case_ids, label_files):
            first_file = by_case[case][0]
            decoded = _load_channels(by_case[case], channels, case, geometry=geometry)
            image = np.stack([d.data for d in decoded])
            label = volumes_io.load_any(label_file)
            raw_labels = spatial_label(label.data, label_file) if label.affine is not None else label.data
            check_channels(image, channels, first_file, f"{where} channel_names")
            check_shapes(image, raw_labels, first_file, label_file)
            check_label(decoded[0], label, raw_labels, first_file, label_file, geometry=geometry, table="data.nnunet")
            yield DecodedCase(
                case, patient_of(case, patient_regex), None, image,
                map_label_values(raw_labels, lookup, label_file), decoded[0].spacing, first_file,
            )

    files = [*label_files, *image_files]
    kinds = [str(name) for name in channel_names.values()]
    return DatasetIndex(
        files, [names[v] for v in values], channels, read_cases, case_ids, channel_kinds=kinds, declared_in=f"{where} channel_names"
    )
