"""The data sources by ``data.source`` name, each with its own ``[data.<source>]`` table.

A light module (pydantic and :mod:`fl_mia.registry` only): the config takes its allowed
sources and their tables from :data:`DATA_SOURCES` without importing a reader. A reader's
factory is ``index(settings, *, path, labels, patient_regex) -> DatasetIndex``; the phantom
is rendered, not read, so it has settings but no reader.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fl_mia.registry import PluginSettings, Registry

DATA_SOURCES = Registry("data source", key="data.source")


class PhantomSettings(PluginSettings):
    """``[data.phantom]``: the synthetic hospitals' pool, scanners and lesions."""

    num_patients: int = Field(
        400, ge=2, description="Size of the whole data pool (patients) shared out to hospitals and attacker."
    )
    slices_per_patient: int = Field(
        2, ge=1, le=64, description="Neighbouring slices per patient; splits never cut a patient."
    )
    shift_strength: float = Field(
        1.0, ge=0.0, le=3.0, description="Scale of each hospital's acquisition shift (0 = identical scanners)."
    )
    lesion_probability: float = Field(
        0.8, ge=0.0, le=1.0, description="Probability that a patient has at least one lesion."
    )


class FolderSettings(PluginSettings):
    """``[data.folder]``: where the images and masks lie under ``data.path``."""

    image_glob: str | None = Field(
        None, description="Glob of images relative to data.path (default: images/*); masks matched by stem."
    )
    mask_glob: str | None = Field(None, description="Glob of masks relative to data.path (default: masks/*).")


class VolumeSettings(PluginSettings):
    """``[data.msd]`` / ``[data.nnunet]``: how 3-D volumes are cut into 2-D slices."""

    slice_axis: int = Field(2, ge=0, le=2, description="Axis (after reorienting to RAS) cut into 2-D slices; 2 = axial.")
    empty_slice_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of slices without foreground that are kept (every foreground slice is)."
    )
    crop: Literal["none", "body", "foreground"] = Field(
        "none",
        description="Crop each case in-plane to its body (nonzero image) or foreground (labels) box before resizing.",
    )
    check_geometry: bool = Field(
        True,
        description=(
            "Refuse a case whose label's affine (spacing, origin, direction) differs from its image's, as nnU-Net does; "
            "false for data you know to align voxel by voxel."
        ),
    )


DATA_SOURCES.register(
    "phantom", summary="the embedded synthetic hospital generator (rendered, not read)", settings=PhantomSettings
)
DATA_SOURCES.register(
    "folder",
    summary="2-D image/mask pairs (PNG, JPEG, TIFF, BMP) matched by file stem",
    settings=FolderSettings,
    factory="fl_mia.data.sources.folder:index",
)
DATA_SOURCES.register(
    "msd",
    summary="Medical Segmentation Decathlon layout (dataset.json, NIfTI volumes)",
    settings=VolumeSettings,
    factory="fl_mia.data.sources.msd:index",
)
DATA_SOURCES.register(
    "nnunet",
    summary="nnU-Net v2 raw layout (imagesTr/labelsTr, one file per channel)",
    settings=VolumeSettings,
    factory="fl_mia.data.sources.nnunet:index",
)
DATA_SOURCES.register(
    "npz", summary="NumPy arrays in one .npz (images, masks, patient_ids, sites)", factory="fl_mia.data.sources.npz:index"
)
