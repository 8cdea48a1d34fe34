"""The embedded phantom written in every on-disk layout: what a valid dataset looks like,
and a round trip for the readers (phantom -> export -> load gives the same slices)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fl_mia.config import DataConfig, FederationConfig
from fl_mia.data.shards import Split
from fl_mia.data.hospitals import build_attacker_population, build_hospital


@dataclass
class PhantomCases:
    """The phantom pool by patient: slices ``[S, H, W]``, task masks ``[S, H, W]``, site."""

    names: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    sites: list[str]
    label_names: list[str]


def phantom_cases(data: DataConfig, federation: FederationConfig, *, seed: int) -> PhantomCases:
    parts: list[tuple[Split, str]] = []
    for k in range(federation.num_hospitals):
        hospital = build_hospital(data, federation, k, seed=seed)
        parts += [(split, f"hospital_{k:02d}") for split in (hospital.train, hospital.heldout, hospital.test)]
    parts.append((build_attacker_population(data, federation, seed=seed), "attacker"))
    by_patient: dict[int, tuple[list[int], str, Split]] = {}
    for split, site in parts:
        for patient in np.unique(split.patient_ids):
            rows = np.flatnonzero(split.patient_ids == patient)
            by_patient[int(patient)] = (rows, site, split)
    cases = PhantomCases([], [], [], [], ["background", "lesion"] if data.task == "lesion" else ["background", "organ", "lesion"])
    for patient in sorted(by_patient):
        rows, site, split = by_patient[patient]
        cases.names.append(f"phantom_{patient:04d}")
        cases.images.append(split.images[rows, 0])
        cases.masks.append(split.masks[rows].astype(np.uint8))
        cases.sites.append(site)
    return cases


def _volumes(cases: PhantomCases, write: Callable[[str, np.ndarray, np.ndarray], None]) -> None:
    for name, images, masks in zip(cases.names, cases.images, cases.masks):
        # Slices stacked along the last axis with an identity affine: axis 2 of the RAS volume.
        write(name, np.moveaxis(images, 0, -1).astype(np.float32), np.moveaxis(masks, 0, -1))


def _write_nifti_cases(cases: PhantomCases, out: Path, *, image_file: str) -> None:
    """``imagesTr/`` and ``labelsTr/`` volumes; ``image_file`` names a case's image (``{name}``)."""
    import nibabel as nib

    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(exist_ok=True)

    def write(name: str, image: np.ndarray, mask: np.ndarray) -> None:
        nib.save(nib.Nifti1Image(image, np.eye(4)), out / "imagesTr" / image_file.format(name=name))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), out / "labelsTr" / f"{name}.nii.gz")

    _volumes(cases, write)


def _write_msd(cases: PhantomCases, out: Path) -> dict:
    _write_nifti_cases(cases, out, image_file="{name}.nii.gz")
    meta = {
        "name": "fl-mia phantom",
        "modality": {"0": "phantom"},
        "labels": {str(i): name for i, name in enumerate(cases.label_names)},
        "numTraining": len(cases.names),
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in cases.names],
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return {"data.source": "msd", "data.path": str(out)}


def _write_nnunet(cases: PhantomCases, out: Path) -> dict:
    _write_nifti_cases(cases, out, image_file="{name}_0000.nii.gz")  # channel 0000: nnU-Net's naming
    meta = {
        "channel_names": {"0": "phantom"},
        "labels": {name: i for i, name in enumerate(cases.label_names)},
        "numTraining": len(cases.names),
        "file_ending": ".nii.gz",
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return {"data.source": "nnunet", "data.path": str(out)}


def _write_folder(cases: PhantomCases, out: Path) -> dict:
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    for name, images, masks in zip(cases.names, cases.images, cases.masks):
        for s, (image, mask) in enumerate(zip(images, masks)):
            # 32-bit float TIFF keeps the phantom's values exactly (an 8-bit PNG would round them).
            Image.fromarray(image.astype(np.float32), mode="F").save(out / "images" / f"{name}_s{s:03d}.tif")
            Image.fromarray(mask).save(out / "masks" / f"{name}_s{s:03d}.png")
    labels = {n: i for i, n in enumerate(cases.label_names)}
    return {"data.source": "folder", "data.path": str(out), "data.patient_regex": r"^(phantom_\d+)_s", "data.labels": labels}


def _write_npz(cases: PhantomCases, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    counts = [len(images) for images in cases.images]
    np.savez(
        out / "phantom.npz",
        images=np.concatenate(cases.images).astype(np.float32),
        masks=np.concatenate(cases.masks).astype(np.int64),
        patient_ids=np.repeat(cases.names, counts),
        sites=np.repeat(cases.sites, counts),
    )
    labels = {n: i for i, n in enumerate(cases.label_names)}
    return {"data.source": "npz", "data.path": str(out / "phantom.npz"), "data.labels": labels}


LAYOUTS: dict[str, Callable[[PhantomCases, Path], dict]] = {
    "msd": _write_msd,
    "nnunet": _write_nnunet,
    "folder": _write_folder,
    "npz": _write_npz,
}


def export_phantom(data: DataConfig, federation: FederationConfig, layout: str, out: Path, *, seed: int) -> dict:
    """Write the phantom of these sections and seed in ``layout`` under ``out``, with ``manifest.csv`` (case,site).

    Returns the ``--set`` values that load it back with the phantom's own hospitals.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: folder is not empty; give a new or empty folder")
    cases = phantom_cases(data, federation, seed=seed)
    settings = LAYOUTS[layout](cases, out)
    with (out / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "site"])
        writer.writerows(zip(cases.names, cases.sites))
    # Every slice, as the phantom has it: no empty slice dropped, no renormalisation.
    if layout in ("msd", "nnunet"):
        settings.update({f"data.{layout}.empty_slice_fraction": 1.0, f"data.{layout}.crop": "none"})
    settings.update({
        "data.task": data.task,
        "data.image_size": data.image_size,
        "data.normalize": "none",
        "federation.num_hospitals": federation.num_hospitals,
        "federation.partition": "manifest",
        "federation.manifest": str(out / "manifest.csv"),
    })
    return settings


def as_set_arguments(settings: dict) -> list[str]:
    """``--set`` values (TOML literals) for the settings :func:`export_phantom` returns."""

    def literal(value) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{key} = {literal(item)}" for key, item in value.items()) + "}"
        if isinstance(value, str):
            return json.dumps(value)  # a TOML basic string
        return repr(value)

    return [f"{key}={literal(value)}" for key, value in settings.items()]
