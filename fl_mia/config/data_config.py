"""``[data]``: where images come from and how they look; each source's own knobs in ``[data.<source>]``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from fl_mia.config.base import Section, plugin_table_fields
from fl_mia.data.sources.settings import DATA_SOURCES

# (sources whose table holds the keys, keys): flat [data] keys that are one source's knobs.
_MOVED_TO_SOURCE_TABLES = (
    (("phantom",), ("num_patients", "slices_per_patient", "shift_strength", "lesion_probability")),
    (("folder",), ("image_glob", "mask_glob")),
    (("msd", "nnunet"), ("slice_axis", "empty_slice_fraction", "crop")),
)


class DataSettings(Section):
    """Where images come from and how they look (the keys every source shares)."""

    moved_keys: ClassVar[dict[str, str]] = {
        f"data.{key}": " or ".join(f"data.{source}.{key}" for source in sources)
        for sources, keys in _MOVED_TO_SOURCE_TABLES
        for key in keys
    }

    source: str = Field(
        "phantom",
        description=(
            "'phantom': the embedded synthetic hospital generator; from disk (data.path): 'folder' (2-D image/mask "
            "pairs), 'msd' (Medical Segmentation Decathlon), 'nnunet' (nnU-Net v2 raw), 'npz' (arrays); or a source "
            "registered in fl_mia.data.sources.settings.DATA_SOURCES. See docs/data.md."
        ),
    )
    path: Path | None = Field(
        None, description="Dataset folder (folder, msd, nnunet) or .npz file (npz); needed by every source but the phantom."
    )
    cache_dir: Path | None = Field(
        None, description="Where decoded, resized slices are cached (default: ~/.cache/fl-mia/data)."
    )
    labels: dict[str, int | list[int]] | None = Field(
        None,
        description=(
            "folder and npz: mask value of each class, e.g. {background = 0, polyp = 255}, or (folder) an [R, G, B] "
            "palette colour (default: folder binary, mask > half its maximum; npz the distinct mask values)."
        ),
    )
    lesion_labels: list[str] | None = Field(
        None, description="Label names that count as lesion for data.task (default: the dataset's last label)."
    )
    patient_regex: str | None = Field(
        None,
        description=(
            "folder, msd, nnunet: regex on the case id (image file stem) whose first group is the patient id "
            "(default: every case its own patient)."
        ),
    )
    task: Literal["lesion", "organ_lesion"] = Field(
        "lesion",
        description="'lesion': binary lesion masks; 'organ_lesion': background/organ/lesion classes.",
    )
    image_size: int = Field(64, ge=32, le=512, description="Side of the square 2-D slices in pixels.")
    normalize: Literal["auto", "zscore", "ct", "none"] = Field(
        "auto",
        description=(
            "'auto': from the dataset, as nnU-Net picks it (dataset.json 'modality' / 'channel_names': CT -> 'ct', "
            "anything else -> 'zscore'; folder, npz and the phantom: 'zscore'); 'zscore': each image (volume) scaled to "
            "mean 0, std 1 (nnU-Net's MRI scheme); 'ct': clip to the 0.5-99.5 percentiles of foreground voxels of the "
            "dataset, then z-score with their mean and std (nnU-Net's CT scheme); 'none': raw values."
        ),
    )

    @field_validator("source")
    @classmethod
    def _registered_source(cls, value: str) -> str:
        return DATA_SOURCES.check(value)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        # smp encoders downsample 5 times; other sizes crash deep inside the decoder.
        if value % 32:
            raise ValueError("must be a multiple of 32 (smp encoders downsample by 32)")
        return value

    @model_validator(mode="after")
    def _disk_sources_need_a_path(self) -> "DataSettings":
        if self.source != "phantom" and self.path is None:
            raise ValueError(f"data.source={self.source!r} reads from disk: set data.path to the dataset")
        if self.source == "phantom" and self.normalize == "ct":
            raise ValueError("data.normalize='ct' needs a CT dataset from disk; the phantom uses 'zscore' or 'none'")
        return self

    def source_settings(self) -> BaseModel | None:
        """The selected source's own table (``None`` for a source without knobs)."""
        plugin = DATA_SOURCES.get(self.source)
        if plugin.settings is None:
            return None
        if self.source not in type(self).model_fields:
            return plugin.settings()  # registered after this schema was built: no table, its defaults apply
        return getattr(self, self.source)


DataConfig = create_model(
    "DataConfig",
    __base__=DataSettings,
    __doc__="Where images come from and how they look; each source's own knobs in its table.",
    __module__=__name__,
    **plugin_table_fields(DATA_SOURCES),
)
