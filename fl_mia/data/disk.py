"""Hospitals and the attacker's population from a dataset on disk (a :class:`SlicePool`).

The pool's patients are shared out by :mod:`fl_mia.data.partition`, then each hospital's
patients are split into train / held-out / test exactly as the phantom's are
(:func:`fl_mia.data.shards.split_by_patient`), so no split ever cuts a patient.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fl_mia.config import DataConfig, FederationConfig
from fl_mia.data.shards import HospitalData, Split, split_by_patient
from fl_mia.data.partition import PatientTable, assign_patients
from fl_mia.data.pool import SlicePool, pool_of
from fl_mia.data.sources.base import DataError


def task_lookup(data: DataConfig, label_names: list[str]) -> np.ndarray:
    """Dataset class id -> task class (lesion: 0/1; organ_lesion: 0 background, 1 other foreground, 2 lesion)."""
    foreground = label_names[1:]
    if not foreground:
        raise DataError(f"data.path: the dataset at {data.path} declares no foreground label; declare its labels")
    lesion_names = data.lesion_labels or [foreground[-1]]
    unknown = [name for name in lesion_names if name not in foreground]
    if unknown:
        raise DataError(f"data.lesion_labels: {unknown[0]!r} is not a foreground label of the dataset ({', '.join(foreground)})")
    lookup = np.zeros(len(label_names), dtype=np.int64)
    lesion = [label_names.index(name) for name in lesion_names]
    if data.task == "organ_lesion":
        organ = [i for i in range(1, len(label_names)) if i not in lesion]
        if not organ:
            raise DataError(
                f"data.task='organ_lesion' needs an organ label besides the lesion ({', '.join(lesion_names)}); "
                "the dataset has none: use data.task='lesion'"
            )
        lookup[organ] = 1
        lookup[lesion] = 2
    else:
        lookup[lesion] = 1
    return lookup


def patient_table(data: DataConfig, pool: SlicePool) -> PatientTable:
    task_masks = task_lookup(data, pool.label_names)[np.asarray(pool.labels)]
    lesion_class = task_masks.max()
    if lesion_class == 0:
        raise DataError(
            f"data.path: no slice of {data.path} has foreground for data.task={data.task!r}; "
            "check data.lesion_labels and the masks"
        )
    lesion_pixels = np.bincount(
        pool.slice_patient, weights=(task_masks == lesion_class).reshape(len(pool), -1).sum(axis=1), minlength=len(pool.patients)
    )
    return PatientTable(list(pool.patients), list(pool.patient_sites), lesion_pixels, list(pool.without_slices))


@lru_cache(maxsize=8)
def _assignment(data_json: str, federation_json: str, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    data = DataConfig.model_validate_json(data_json)
    federation = FederationConfig.model_validate_json(federation_json)
    table = patient_table(data, pool_of(data))
    return assign_patients(federation, table, seed=seed, patient_regex=data.patient_regex, dataset=data.path)


def assignment(data: DataConfig, federation: FederationConfig, *, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Patient indices of every hospital and of the attacker (pure function of config and data)."""
    return _assignment(data.model_dump_json(), federation.model_dump_json(), seed)


def split_of_patients(data: DataConfig, patients: np.ndarray) -> Split:
    """The pool's slices of these patients."""
    pool = pool_of(data)
    rows = np.flatnonzero(np.isin(pool.slice_patient, patients))
    lookup = task_lookup(data, pool.label_names)
    return Split(
        np.ascontiguousarray(pool.images[rows], dtype=np.float32),
        lookup[np.asarray(pool.labels[rows])],
        pool.slice_patient[rows].astype(np.int64),
        rows.astype(np.int64),
    )


def build_hospital(data: DataConfig, federation: FederationConfig, hospital: int, *, seed: int) -> HospitalData:
    """One hospital's train / held-out / test splits of its patients."""
    return _cached_hospital(data.model_dump_json(), federation.model_dump_json(), seed, hospital)


@lru_cache(maxsize=64)
def _cached_hospital(data_json: str, federation_json: str, seed: int, hospital: int) -> HospitalData:
    data = DataConfig.model_validate_json(data_json)
    federation = FederationConfig.model_validate_json(federation_json)
    patients = assignment(data, federation, seed=seed)[0][hospital]
    parts = {
        split: split_of_patients(data, ids)
        for split, ids in split_by_patient(federation, hospital, patients, seed=seed).items()
    }
    lesion = 1 if data.task == "lesion" else 2
    sick = {int(p) for s in parts.values() for p in np.unique(s.patient_ids[(s.masks.reshape(len(s), -1) == lesion).any(axis=1)])}
    return HospitalData(hospital, None, len(sick) / max(1, len(patients)), **parts)


def build_attacker_population(data: DataConfig, federation: FederationConfig, *, seed: int) -> Split:
    return split_of_patients(data, assignment(data, federation, seed=seed)[1])
