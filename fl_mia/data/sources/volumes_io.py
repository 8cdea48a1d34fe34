"""Decoding NIfTI volumes (nibabel) and 2-D pictures (Pillow) into arrays, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fl_mia.data.sources.base import DataError
from fl_mia.data.sources.integrity import Volume

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_nifti(path: Path) -> Volume:
    """A NIfTI volume reoriented to RAS (``as_closest_canonical``), with its spacing and stored affine.

    The one place volumes are decoded (the cache test counts calls of this function).
    """
    import nibabel as nib

    if not path.exists():
        raise DataError(f"{path}: file missing; the dataset lists it, so add it or remove its entry")
    try:
        stored = nib.load(str(path))
        shape = stored.shape
    except Exception as error:  # nibabel raises many types for broken files
        raise DataError(f"{path}: cannot read this NIfTI file ({type(error).__name__}); replace the truncated or broken file") from None
    if len(shape) < 3:
        # Reorienting needs three axes; and "N channels" would blame the wrong thing.
        raise DataError(f"{path}: a 2-D NIfTI {tuple(shape)} in a volume dataset; give 3-D volumes (x, y, z), or use data.source='folder' for 2-D pictures")
    try:
        image = nib.as_closest_canonical(stored)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:
        raise DataError(f"{path}: cannot read this NIfTI file ({type(error).__name__}); replace the truncated or broken file") from None
    return Volume(data, tuple(float(z) for z in image.header.get_zooms()[:3]), np.asarray(stored.affine, dtype=np.float64))


def load_picture(path: Path) -> np.ndarray:
    """A picture as ``[H, W]`` (grey) or ``[H, W, 3]`` (colour) float32 array."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            picture.load()
            if picture.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA"):
                picture = picture.convert("RGB" if picture.mode != "LA" else "L")
            return np.asarray(picture, dtype=np.float32)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path}: cannot read this image ({type(error).__name__}); replace the truncated or broken file") from None


def load_any(path: Path) -> Volume:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return load_nifti(path)
    if name.endswith(PICTURE_SUFFIXES):
        return Volume(load_picture(path), (1.0, 1.0), None)
    raise DataError(f"{path}: unsupported file type; use .nii.gz, .nii or one of {', '.join(PICTURE_SUFFIXES)}")
