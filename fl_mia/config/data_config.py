"""``[data]``: where images come from and how they look."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fl_mia.config.base import Section


class DataConfig(Section):
    """Where images come from and how they look."""

    source: Literal["phantom", "folder", "msd", "nnunet", "npz"] = Field(
        "phantom",
        description=(
            "'phantom': the embedded synthetic hospital generator; from disk (data.path): 'folder' (2-D image/mask "
            "pairs), 'msd' (Medical Segmentation Decathlon), 'nnunet' (nnU-Net v2 raw), 'npz' (arrays). See docs/data.md."
        ),
    )
    path: Path | None = Field(
        None, description="Dataset folder (folder, msd, nnunet) or .npz file (npz); needed by every source but the phantom."
    )
    cache_dir: Path | None = Field(
        None, description="Where decoded, resized slices are cached (default: ~/.cache/fl-mia/data)."
    )
    slice_axis: int = Field(2, ge=0, le=2, description="Volumes: axis (after reorienting to RAS) cut into 2-D slices; 2 = axial.")
    empty_slice_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Volumes: share of slices without foreground that are kept (every foreground slice is)."
    )
    crop: Literal["none", "body", "foreground"] = Field(
        "none",
        description="Volumes: crop each case in-plane to its body (nonzero image) or foreground (labels) box before resizing.",
    )
    labels: dict[str, int | list[int]] | None = Field(
        None,
        description=(
            "folder: mask value of each class, e.g. {background = 0, polyp = 255}, or an [R, G, B] palette colour "
            "(default: binary, mask > half its maximum)."
        ),
    )
    lesion_labels: list[str] | None = Field(
        None, description="Label names that count as lesion for data.task (default: the dataset's last label)."
    )
    image_glob: str | None = Field(
        None, description="folder: glob of images relative to data.path (default: images/*); masks matched by stem."
    )
    mask_glob: str | None = Field(None, description="folder: glob of masks relative to data.path (default: masks/*).")
    patient_regex: str | None = Field(
        None,
        description="folder: regex on the image file stem whose first group is the patient id (default: every image its own patient).",
    )
    task: Literal["lesion", "organ_lesion"] = Field(
        "lesion",
        description="'lesion': binary lesion masks; 'organ_lesion': background/organ/lesion classes.",
    )
    image_size: int = Field(64, ge=32, le=512, description="Side of the square 2-D slices in pixels.")
    num_patients: int = Field(
        400, ge=2, description="Size of the whole data pool (patients) shared out to hospitals and attacker."
    )
    slices_per_patient: int = Field(
        2, ge=1, le=64, description="Neighbouring slices per patient; splits never cut a patient."
    )
    shift_strength: float = Field(
        1.0, ge=0.0, le=3.0, description="Scale of each hospital's acquisition shift (0 = identical scanners)."
    )
    normalize: Literal["zscore", "ct", "none"] = Field(
        "zscore",
        description=(
            "'zscore': each image (volume) scaled to mean 0, std 1 (nnU-Net's MRI scheme); 'ct': clip to the 0.5-99.5 "
            "percentiles of foreground voxels of the dataset, then z-score with their mean and std (nnU-Net's CT scheme); "
            "'none': raw values."
        ),
    )
    lesion_probability: float = Field(
        0.8, ge=0.0, le=1.0, description="Probability that a patient has at least one lesion."
    )

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        # smp encoders downsample 5 times; other sizes crash deep inside the decoder.
        if value % 32:
            raise ValueError("must be a multiple of 32 (smp encoders downsample by 32)")
        return value

    @model_validator(mode="after")
    def _disk_sources_need_a_path(self) -> "DataConfig":
        if self.source != "phantom" and self.path is None:
            raise ValueError(f"data.source={self.source!r} reads from disk: set data.path to the dataset")
        if self.source == "phantom" and self.normalize == "ct":
            raise ValueError("data.normalize='ct' needs a CT dataset from disk; the phantom uses 'zscore' or 'none'")
        return self
