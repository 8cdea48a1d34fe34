"""A dataset from disk as one pool of 2-D slices with patient ids, decoded once and cached.

The cache holds the decoded, resized, normalised slices as ``.npy`` files that every process
(the server and each hospital's actor) memory-maps. Its key hashes the files' paths, sizes
and modification times and every preprocessing setting, so editing a file or a setting
decodes again and nothing else does. The key is computed after the reader's checks (every
listed file exists), so a missing file is one line rather than a failed ``stat``.

The intensity scheme is the dataset's unless ``data.normalize`` names one: CT channels get
nnU-Net's CT scheme, any other declared channel (MRI, a picture) a z-score.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from fl_mia.config import DataConfig
from fl_mia.data.sources.base import DataError, DatasetIndex
from fl_mia.data.sources.settings import DATA_SOURCES, VolumeSettings
from fl_mia.data.volumes import case_slices, ct_normalizer, foreground_sample

CACHE_VERSION = 1
# The [data] keys that change the decoded slices (the source's own table counts too).
PREPROCESSING_FIELDS = ("source", "image_size", "normalize", "labels", "patient_regex")


@dataclass
class SlicePool:
    """Every kept slice of a dataset.

    ``labels`` hold the dataset's class ids (0 = background, names in ``label_names``);
    ``slice_patient`` indexes ``patients``; ``patient_sites`` is the site of each patient
    (empty string when the dataset has none).
    """

    images: np.ndarray  # float32 [N, C, H, W], memory-mapped
    labels: np.ndarray  # uint8 [N, H, W], memory-mapped
    slice_patient: np.ndarray  # int64 [N]
    patients: list[str]
    patient_sites: list[str]
    label_names: list[str]
    cases: int
    spacings: list[list[float]]
    raw_intensity: tuple[float, float]
    normalize: str = "zscore"
    normalize_origin: str = "data.normalize"
    # Patients of the dataset none of whose slices was kept (no foreground, no empty slice drawn).
    without_slices: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.images)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FL_MIA_CACHE", Path.home() / ".cache" / "fl-mia")) / "data"


def index_dataset(cfg: DataConfig) -> DatasetIndex:
    """Find the dataset's files and labels (no decoding yet), with the reader registered for ``data.source``."""
    return DATA_SOURCES.create(
        cfg.source, cfg.source_settings(), path=cfg.path, labels=cfg.labels, patient_regex=cfg.patient_regex
    )


def intensity_scheme(normalize: str, index: DatasetIndex) -> tuple[str, str]:
    """``(scheme, where it came from)``: ``data.normalize`` when set, else what the dataset declares."""
    if normalize != "auto":
        return normalize, "data.normalize"
    if not index.channel_kinds:
        return "zscore", "default (the dataset declares no modality)"
    kinds = ", ".join(index.channel_kinds)
    if all(kind.strip().casefold() == "ct" for kind in index.channel_kinds):
        return "ct", f"{index.declared_in}: {kinds}"
    return "zscore", f"{index.declared_in}: {kinds} (not CT)"


def cache_key(cfg: DataConfig, files: list[Path], *, normalize: str | None = None) -> str:
    settings = {name: getattr(cfg, name) for name in PREPROCESSING_FIELDS}
    if normalize is not None:  # the resolved scheme: "auto" and the scheme it picks decode alike
        settings["normalize"] = normalize
    source_settings = cfg.source_settings()
    if source_settings is not None:
        settings.update(source_settings.model_dump())
    stats = []
    for file in files:
        info = file.stat()
        stats.append([str(file.resolve()), info.st_size, info.st_mtime_ns])
    payload = json.dumps({"version": CACHE_VERSION, "settings": settings, "files": stats}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _decode(cfg: DataConfig, index: DatasetIndex, normalize: tuple[str, str]) -> dict:
    source_settings = cfg.source_settings()
    # Pictures are single slices; a source without volume settings cuts volumes as the defaults say.
    volume = source_settings if isinstance(source_settings, VolumeSettings) else VolumeSettings()
    images, labels, owners, patients, sites, spacings, samples = [], [], [], {}, {}, [], []
    low, high = np.inf, -np.inf
    cases = 0
    scheme = normalize[0]
    skipped: set[str] = set()
    for case in index.read_cases():
        cases += 1
        low, high = min(low, float(case.image.min())), max(high, float(case.image.max()))
        if scheme == "ct":
            samples.append(foreground_sample(case))
        case_images, case_labels = case_slices(case, volume, image_size=cfg.image_size, normalize=scheme)
        if len(case_images) == 0:  # no foreground and no empty slice kept: nothing of this case to learn or attack
            skipped.add(case.patient)
            continue
        patient = patients.setdefault(case.patient, len(patients))
        if case.site is not None:
            if sites.setdefault(case.patient, case.site) != case.site:
                raise DataError(f"{case.source_file}: patient {case.patient!r} appears under two sites; a patient belongs to one site")
        spacings.append(list(case.spacing))
        images.append(case_images)
        labels.append(case_labels)
        owners.append(np.full(len(case_images), patient, dtype=np.int64))
    stacked = np.concatenate(images).astype(np.float32)
    if scheme == "ct":
        lo, hi, mean, std = ct_normalizer(samples)
        stacked = (np.clip(stacked, lo, hi) - mean) / std
    names = list(patients)
    return {
        "images": stacked,
        "labels": np.concatenate(labels).astype(np.uint8),
        "slice_patient": np.concatenate(owners),
        "meta": {
            "patients": names,
            "patient_sites": [sites.get(name, "") for name in names],
            "label_names": index.label_names,
            "cases": cases,
            "spacings": spacings,
            "raw_intensity": [low, high],
            "normalize": list(normalize),
            "without_slices": sorted(skipped - set(names)),
        },
    }


def _write(folder: Path, decoded: dict) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then renamed: hospitals starting together never read half a cache.
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    for name in ("images", "labels", "slice_patient"):
        np.save(staging / f"{name}.npy", decoded[name])
    (staging / "meta.json").write_text(json.dumps(decoded["meta"]))
    try:
        staging.rename(folder)
    except OSError:  # another process wrote the same cache first
        shutil.rmtree(staging, ignore_errors=True)


def _read(folder: Path) -> SlicePool:
    meta = json.loads((folder / "meta.json").read_text())
    return SlicePool(
        images=np.load(folder / "images.npy", mmap_mode="r"),
        labels=np.load(folder / "labels.npy", mmap_mode="r"),
        slice_patient=np.load(folder / "slice_patient.npy"),
        patients=meta["patients"],
        patient_sites=meta["patient_sites"],
        label_names=meta["label_names"],
        cases=meta["cases"],
        spacings=meta["spacings"],
        raw_intensity=tuple(meta["raw_intensity"]),
        **dict(zip(("normalize", "normalize_origin"), meta.get("normalize", ()))),
        without_slices=meta.get("without_slices", []),
    )


def load_pool(cfg: DataConfig) -> SlicePool:
    """The dataset's slices: from the cache when it is there, else decoded once and cached."""
    index = index_dataset(cfg)  # the reader's checks run here, before any file is stat'ed
    normalize = intensity_scheme(cfg.normalize, index)
    folder = Path(cfg.cache_dir or default_cache_dir()).expanduser() / cache_key(cfg, index.files, normalize=normalize[0])
    if not (folder / "meta.json").is_file():
        _write(folder, _decode(cfg, index, normalize))
    return _read(folder)


@lru_cache(maxsize=8)
def _pool_from_json(data_json: str) -> SlicePool:
    return load_pool(DataConfig.model_validate_json(data_json))


def pool_of(data: DataConfig) -> SlicePool:
    """The (process-wide memoised) pool of a disk experiment."""
    return _pool_from_json(data.model_dump_json())
