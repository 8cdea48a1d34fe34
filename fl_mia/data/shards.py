"""Share a patient pool out to hospitals and the attacker, and split each hospital.

Every hospital gets a training shard (the members), a held-out pool from the same
distribution (future non-members, never trained on) and a test split for utility. The
attacker's population is disjoint from all hospitals. Splits group by patient, so that
neighbouring slices of one patient never straddle member and non-member.

Each piece is a pure function of the data and federation sections and the seed: a Flower client can rebuild its own
hospital in its own process and get exactly the arrays the server-side evaluation sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fl_mia.config import DataConfig, FederationConfig
from fl_mia.data.phantom import LESION, ORGAN, PatientAnatomy, ScannerProfile, render_patient
from fl_mia.data.sources.settings import PhantomSettings
from fl_mia.seeding import rng_for


@dataclass
class Split:
    """Images and masks of one split, with the ids that tie them to patients.

    ``masks`` holds class indices: for the binary lesion task 0/1, for organ_lesion 0/1/2.
    ``image_ids`` are unique across the whole pool (hospitals and attacker).
    """

    images: np.ndarray  # float32 [N, 1, H, W]
    masks: np.ndarray  # int64 [N, H, W]
    patient_ids: np.ndarray  # int64 [N]
    image_ids: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "Split":
        return Split(self.images[index], self.masks[index], self.patient_ids[index], self.image_ids[index])

    @staticmethod
    def concatenate(parts: list["Split"]) -> "Split":
        return Split(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.masks for p in parts]),
            np.concatenate([p.patient_ids for p in parts]),
            np.concatenate([p.image_ids for p in parts]),
        )


@dataclass
class HospitalData:
    index: int
    scanner: ScannerProfile | None  # None for a dataset from disk
    lesion_probability: float  # from disk: share of the hospital's patients with a lesion
    train: Split
    heldout: Split
    test: Split


def num_classes(task: str) -> int:
    """Output channels of the model for a task (binary lesion: one logit channel)."""
    return 1 if task == "lesion" else 3


def _task_masks(labels: np.ndarray, task: str) -> np.ndarray:
    if task == "lesion":
        return (labels == LESION).astype(np.int64)
    return labels.astype(np.int64)


def patient_assignment(
    phantom: PhantomSettings, federation: FederationConfig, *, seed: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Patient ids of every hospital (in partition order) and of the attacker."""
    order = rng_for(seed, "patient-assignment").permutation(phantom.num_patients)
    sizes = federation.hospital_sizes()
    hospitals, start = [], 0
    for size in sizes:
        hospitals.append(np.sort(order[start : start + size]))
        start += size
    attacker = np.sort(order[start : start + federation.attacker_patients])
    return hospitals, attacker


def scanner_of(phantom: PhantomSettings, hospital: int, *, seed: int) -> ScannerProfile:
    return ScannerProfile.sample(rng_for(seed, "scanner", hospital), strength=phantom.shift_strength)


def lesion_probability_of(phantom: PhantomSettings, federation: FederationConfig, hospital: int) -> float:
    """Lesion prevalence of a hospital; ``label_skew`` spreads it evenly around the base."""
    k = federation.num_hospitals
    position = 0.0 if k == 1 else 2 * hospital / (k - 1) - 1  # -1 ... 1
    base = phantom.lesion_probability
    return float(np.clip(base + federation.label_skew * position * max(base, 1 - base), 0.0, 1.0))


def _render_patients(
    data: DataConfig, patient_ids: np.ndarray, scanner: ScannerProfile, lesion_probability: float, *, seed: int
) -> Split:
    slices = data.phantom.slices_per_patient
    images, masks, owners, ids = [], [], [], []
    for patient in patient_ids:
        anatomy = PatientAnatomy.sample(
            rng_for(seed, "anatomy", int(patient)), lesion_probability=lesion_probability, num_slices=slices
        )
        scans, labels = render_patient(
            anatomy, scanner, num_slices=slices, size=data.image_size, rng=rng_for(seed, "render", int(patient))
        )
        if data.normalize in ("zscore", "auto"):  # the phantom declares no modality: 'auto' is z-score
            mean = scans.mean(axis=(1, 2), keepdims=True)
            scans = (scans - mean) / (scans.std(axis=(1, 2), keepdims=True) + 1e-6)
        images.append(scans[:, None].astype(np.float32))
        masks.append(_task_masks(labels, data.task))
        owners.append(np.full(slices, patient, dtype=np.int64))
        ids.append(patient * slices + np.arange(slices, dtype=np.int64))
    return Split(np.concatenate(images), np.concatenate(masks), np.concatenate(owners), np.concatenate(ids))


def split_by_patient(federation: FederationConfig, hospital: int, patients: np.ndarray, *, seed: int) -> dict[str, np.ndarray]:
    shuffled = rng_for(seed, "hospital-split", hospital).permutation(patients)
    n = len(shuffled)
    n_train = max(1, int(round(federation.train_fraction * n)))
    n_heldout = max(1, int(round(federation.heldout_fraction * n)))
    n_heldout = min(n_heldout, n - n_train - 1)
    return {
        "train": np.sort(shuffled[:n_train]),
        "heldout": np.sort(shuffled[n_train : n_train + n_heldout]),
        "test": np.sort(shuffled[n_train + n_heldout :]),
    }


def build_hospital(data: DataConfig, federation: FederationConfig, hospital: int, *, seed: int) -> HospitalData:
    """Render one hospital's three splits (what a Flower client builds for itself)."""
    if not 0 <= hospital < federation.num_hospitals:
        raise ValueError(f"hospital {hospital} outside 0..{federation.num_hospitals - 1}")
    return _cached_hospital(data.model_dump_json(), federation.model_dump_json(), seed, hospital)


def forget_rendered_hospitals() -> None:
    """Drop every hospital rendered so far in this process.

    The server renders each hospital once at start-up to keep what it needs (test splits,
    candidates); without this, the cache would keep up to 64 hospitals' whole data in the
    server's memory for the rest of the run.
    """
    _cached_hospital.cache_clear()


@lru_cache(maxsize=64)
def _cached_hospital(data_json: str, federation_json: str, seed: int, hospital: int) -> HospitalData:
    data = DataConfig.model_validate_json(data_json)
    federation = FederationConfig.model_validate_json(federation_json)
    patients = patient_assignment(data.phantom, federation, seed=seed)[0][hospital]
    scanner = scanner_of(data.phantom, hospital, seed=seed)
    prevalence = lesion_probability_of(data.phantom, federation, hospital)
    parts = {
        split: _render_patients(data, ids, scanner, prevalence, seed=seed)
        for split, ids in split_by_patient(federation, hospital, patients, seed=seed).items()
    }
    return HospitalData(hospital, scanner, prevalence, **parts)


def build_attacker_population(data: DataConfig, federation: FederationConfig, *, seed: int) -> Split:
    """The attacker's own scans: disjoint patients, imaged by scanners like the hospitals'.

    Patient j of the attacker is imaged with hospital ``j mod K``'s scanner, so shadow
    models see every acquisition shift the hospitals have.
    """
    patients = patient_assignment(data.phantom, federation, seed=seed)[1]
    if len(patients) == 0:
        return Split(
            np.zeros((0, 1, data.image_size, data.image_size), np.float32),
            np.zeros((0, data.image_size, data.image_size), np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
        )
    k = federation.num_hospitals
    parts = [
        _render_patients(
            data, patients[j : j + 1], scanner_of(data.phantom, j % k, seed=seed), data.phantom.lesion_probability, seed=seed
        )
        for j in range(len(patients))
    ]
    return Split.concatenate(parts)


__all__ = [
    "HospitalData",
    "ORGAN",
    "Split",
    "build_attacker_population",
    "build_hospital",
    "forget_rendered_hospitals",
    "num_classes",
    "patient_assignment",
]
