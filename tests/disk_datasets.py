"""Small datasets written straight with nibabel, Pillow and NumPy (not by fl-mia), for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _volume(rng: np.random.Generator, shape: tuple[int, int, int], lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume: a liver box (label 1) with an optional lesion (label 2) on its middle slices."""
    x, y, z = shape
    image = rng.normal(-100.0, 30.0, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[x // 4 : 3 * x // 4, y // 4 : 3 * y // 4, z // 5 : 4 * z // 5] = 1
    if lesion:
        labels[x // 3 : x // 2, y // 3 : y // 2, 2 * z // 5 : 3 * z // 5] = 2
    image[labels == 1] += 150.0
    image[labels == 2] += 250.0
    return image, labels


def write_msd(root: Path, *, cases: int = 12, shape=(40, 36, 10), modalities: int = 1, seed: int = 0) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    training = []
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for i in range(cases):
        image, labels = _volume(rng, shape, lesion=i % 3 != 0)
        if modalities > 1:
            image = np.stack([image * (1 + m) for m in range(modalities)], axis=-1)
        nib.save(nib.Nifti1Image(image, affine), root / f"imagesTr/liver_{i}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / f"labelsTr/liver_{i}.nii.gz")
        training.append({"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"})
    meta = {
        "name": "Liver",
        "modality": {str(m): "CT" for m in range(modalities)},
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": cases,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def write_nnunet(root: Path, *, cases: int = 12, shape=(40, 36, 10), channels: int = 1, seed: int = 0) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    for i in range(cases):
        image, labels = _volume(rng, shape, lesion=i % 3 != 0)
        for c in range(channels):
            nib.save(nib.Nifti1Image(image + 10 * c, affine), root / f"imagesTr/case{i:03d}_{c:04d}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / f"labelsTr/case{i:03d}.nii.gz")
    meta = {
        "channel_names": {str(c): f"MR{c}" for c in range(channels)},
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def write_folder(root: Path, *, images: int = 16, size=(48, 40), rgb: bool = True, seed: int = 0, suffix=".png") -> Path:
    """Kvasir-like pairs: colour pictures with a bright polyp disc, masks 0/255."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for i in range(images):
        cy, cx, r = rng.integers(10, h - 10), rng.integers(10, w - 10), rng.integers(4, 9)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.uint8) * 255
        base = rng.integers(40, 120, (h, w, 3)).astype(np.uint8)
        base[mask > 0] = [220, 120, 90]
        picture = Image.fromarray(base if rgb else base[..., 0])
        picture.save(root / f"images/p{i // 2:02d}_img{i:03d}{suffix}")
        Image.fromarray(mask).save(root / f"masks/p{i // 2:02d}_img{i:03d}.png")
    return root


def write_npz(path: Path, *, patients: int = 12, slices: int = 3, size: int = 32, sites: int | None = None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n = patients * slices
    images = rng.normal(0.0, 1.0, (n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        masks[i, 8:20, 8:20] = 1
        if (i // slices) % 3:
            masks[i, 10:14, 10:14] = 2
    images += masks.astype(np.float32)
    arrays = {"images": images, "masks": masks, "patient_ids": np.repeat(np.arange(patients) + 100, slices)}
    if sites is not None:
        arrays["sites"] = np.repeat(np.array([f"site{p % sites}" for p in range(patients)]), slices)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
