"""2-D image/mask pairs (PNG, JPEG, TIFF, BMP): Kvasir-SEG style ``images/`` + ``masks/`` matched
by file stem, or any two glob patterns (``data.folder.image_glob``, ``data.folder.mask_glob``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

import fl_mia.data.sources.volumes_io as volumes_io
from fl_mia.data.sources.base import DataError, DatasetIndex, DecodedCase, check_unique, patient_of, require_dir
from fl_mia.data.sources.settings import FolderSettings


def _pictures(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.is_file() and p.name.lower().endswith(volumes_io.PICTURE_SUFFIXES))


def case_key(file: Path, pattern: str) -> str:
    """The case a picture belongs to: the part of its name the glob's ``*`` matched.

    ``masks/*`` keys ``x.png`` as ``x`` (its stem); ``masks/*_mask.png`` keys ``x_mask.png`` as
    ``x`` too, so images and masks whose names differ by a suffix still pair up.
    """
    name_pattern = Path(pattern).name
    if name_pattern.count("*") == 1 and not any(c in name_pattern for c in "?[]"):
        prefix, suffix = name_pattern.split("*")
        if "." in suffix and file.name.startswith(prefix) and file.name.endswith(suffix):
            return file.name[len(prefix) : len(file.name) - len(suffix)]
        if suffix == "" and file.stem.startswith(prefix):
            return file.stem[len(prefix) :]
    return file.stem


def _suffix_hint(image_key: str, mask_keys: list[str], masks: list[Path], mask_glob: str) -> str:
    """When masks are named ``{case}_mask.png`` and the glob does not say so: the glob that would."""
    for key, mask in zip(mask_keys, masks):
        if key.startswith(image_key) and key != image_key and key[len(image_key)] in "_-.":
            folder = Path(mask_glob).parent.as_posix()
            glob = f"{'' if folder == '.' else folder + '/'}*{key[len(image_key):]}{mask.suffix}"
            return (f"; the masks look named {{case}}{key[len(image_key):]}{mask.suffix}: set data.folder.mask_glob={glob!r} "
                    "(and data.folder.image_glob so it leaves the masks out, if they share a folder)")
    return "; add the mask or remove the image"


def _mask_classes(mask: np.ndarray, labels: dict[str, int | list[int]] | None, file: Path) -> np.ndarray:
    if labels is None:
        grey = mask.mean(axis=-1) if mask.ndim == 3 else mask
        peak = grey.max()
        # 0/1 and 0/255 masks, and JPEG masks whose edges are not exactly either, all cut at half.
        return (grey > peak / 2).astype(np.uint8) if peak > 0 else np.zeros(grey.shape, np.uint8)
    classes = np.full(mask.shape[:2], 255, dtype=np.uint8)
    for class_id, value in enumerate(labels.values()):
        if isinstance(value, list):
            if mask.ndim != 3:
                raise DataError(f"{file}: data.labels gives colours but this mask is grey; give grey values instead")
            hit = np.all(mask[..., :3] == np.asarray(value, dtype=np.float32), axis=-1)
        else:
            hit = (mask.mean(axis=-1) if mask.ndim == 3 else mask) == value
        classes[hit] = class_id
    if (classes == 255).any():
        values = np.unique(mask[classes == 255].reshape(-1, mask.shape[-1]) if mask.ndim == 3 else mask[classes == 255], axis=0)
        raise DataError(
            f"{file}: mask values {values[:5].tolist()} are not declared in data.labels {dict(labels)}; declare them or fix the mask"
        )
    return classes


def index(
    settings: FolderSettings,
    *,
    path: Path,
    labels: dict[str, int | list[int]] | None,
    patient_regex: str | None,
) -> DatasetIndex:
    root = Path(path)
    require_dir(root, "a folder of images and masks")
    image_glob, mask_glob = settings.image_glob or "images/*", settings.mask_glob or "masks/*"
    images, masks = _pictures(root, image_glob), _pictures(root, mask_glob)
    if not images or not masks:
        raise DataError(
            f"{root}: no image/mask pairs found with data.folder.image_glob={image_glob!r} and data.folder.mask_glob={mask_glob!r} "
            f"({len(images)} images, {len(masks)} masks); set the two globs to your layout"
        )
    image_stems = [case_key(p, image_glob) for p in images]
    mask_keys = [case_key(p, mask_glob) for p in masks]
    check_unique(image_stems, root / image_glob)
    check_unique(mask_keys, root / mask_glob)
    mask_by_stem = dict(zip(mask_keys, masks))
    for image, stem in zip(images, image_stems):
        if stem not in mask_by_stem:
            raise DataError(f"{image}: image without its mask (no {mask_glob} with stem {stem!r}){_suffix_hint(stem, mask_keys, masks, mask_glob)}")
    image_set = set(image_stems)
    for mask, key in zip(masks, mask_keys):
        if key not in image_set:
            raise DataError(f"{mask}: mask without its image (no {image_glob} with stem {key!r}); add the image or remove the mask")
    from PIL import Image

    try:
        with Image.open(images[0]) as first:
            channels = 3 if first.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") else 1
    except Exception as error:
        raise DataError(f"{images[0]}: cannot read this image ({type(error).__name__}); replace the broken file") from None
    label_names = list(labels) if labels else ["background", "foreground"]

    def read_cases() -> Iterator[DecodedCase]:
        for image_file, case in zip(images, image_stems):
            image = volumes_io.load_picture(image_file)
            if channels == 3 and image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=-1)  # a grey picture among colour ones
            elif channels == 1 and image.ndim == 3:
                image = image.mean(axis=-1)
            image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
            mask_file = mask_by_stem[case]
            mask = volumes_io.load_picture(mask_file)
            if mask.shape[:2] != image.shape[1:]:
                raise DataError(
                    f"{image_file}: image shape {tuple(image.shape[1:])} differs from its mask {mask_file} {mask.shape[:2]}; "
                    "image and mask must have the same size"
                )
            yield DecodedCase(case, patient_of(case, patient_regex), None, image, _mask_classes(mask, labels, mask_file), (1.0, 1.0), image_file)

    return DatasetIndex([*images, *masks], label_names, channels, read_cases, image_stems)
