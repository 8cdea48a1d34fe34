"""Cases to 2-D slices: slice along an axis, keep foreground (and some empty) slices, crop,
resize (image bilinear, mask nearest), normalise intensities the way nnU-Net does."""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from fl_mia.data.sources.base import DecodedCase
from fl_mia.data.sources.settings import VolumeSettings

# nnU-Net samples at most this many foreground voxels per case for its CT statistics.
CT_SAMPLES_PER_CASE = 10_000


def zscore(values: np.ndarray) -> np.ndarray:
    """Per channel over all voxels (``values`` is ``[C, ...]``)."""
    axes = tuple(range(1, values.ndim))
    return (values - values.mean(axis=axes, keepdims=True)) / (values.std(axis=axes, keepdims=True) + 1e-6)


def foreground_sample(case: DecodedCase) -> np.ndarray:
    """Up to ``CT_SAMPLES_PER_CASE`` foreground voxel values of the first channel (seeded by the case)."""
    values = case.image[0][case.labels > 0]
    if len(values) > CT_SAMPLES_PER_CASE:
        rng = np.random.default_rng(zlib.crc32(case.case.encode()))
        values = rng.choice(values, CT_SAMPLES_PER_CASE, replace=False)
    return values.astype(np.float32)


def ct_normalizer(samples: list[np.ndarray]) -> tuple[float, float, float, float]:
    """``(low, high, mean, std)``: clip bounds at the 0.5/99.5 percentiles of foreground voxels, then their moments."""
    values = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    if len(values) == 0:
        return 0.0, 0.0, 0.0, 1.0
    low, high = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, low, high)
    return float(low), float(high), float(clipped.mean()), float(clipped.std() + 1e-6)


def _box(mask: np.ndarray, margin: float) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    pad_r, pad_c = int(margin * mask.shape[0]), int(margin * mask.shape[1])
    return (
        slice(max(0, rows[0] - pad_r), min(mask.shape[0], rows[-1] + 1 + pad_r)),
        slice(max(0, cols[0] - pad_c), min(mask.shape[1], cols[-1] + 1 + pad_c)),
    )


def resize(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``images [S,C,h,w]`` bilinear, ``labels [S,h,w]`` nearest, to ``size``×``size``."""
    if images.shape[-2:] == (size, size):
        return images.astype(np.float32), labels.astype(np.uint8)
    image_t = F.interpolate(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), size=(size, size), mode="bilinear", align_corners=False)
    label_t = F.interpolate(torch.from_numpy(labels[:, None].astype(np.float32)), size=(size, size), mode="nearest")
    return image_t.numpy(), label_t[:, 0].numpy().astype(np.uint8)


def case_slices(
    case: DecodedCase, volume: VolumeSettings, *, image_size: int, normalize: str
) -> tuple[np.ndarray, np.ndarray]:
    """The kept, cropped and resized slices of a case: ``(images [S,C,H,W], labels [S,H,W])``.

    Intensities are z-scored per case here when ``normalize = 'zscore'``; 'ct' is applied
    to the whole pool afterwards (it needs the dataset's foreground statistics).
    """
    image = zscore(case.image) if normalize == "zscore" else case.image
    labels = case.labels
    if labels.ndim == 2:  # a picture is a single slice
        images, masks = image[None], labels[None]
    else:
        axis = volume.slice_axis
        images = np.moveaxis(image, axis + 1, 0)  # [S, C, h, w]
        masks = np.moveaxis(labels, axis, 0)
        has_foreground = masks.reshape(len(masks), -1).any(axis=1)
        empty = np.flatnonzero(~has_foreground)
        rng = np.random.default_rng(zlib.crc32(case.case.encode()))  # seed-free: the cache serves every seed
        kept_empty = rng.choice(empty, int(round(volume.empty_slice_fraction * len(empty))), replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(has_foreground), kept_empty]).astype(np.int64))
        images, masks = images[keep], masks[keep]
        if volume.crop != "none" and len(keep):
            region = masks > 0 if volume.crop == "foreground" else (images != images.min()).any(axis=1)
            box = _box(region.any(axis=0), margin=0.1 if volume.crop == "foreground" else 0.0)
            if box is not None:
                images, masks = images[:, :, box[0], box[1]], masks[:, box[0], box[1]]
    return resize(images, masks, image_size)
