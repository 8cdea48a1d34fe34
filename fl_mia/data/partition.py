"""Patients of a dataset from disk shared out to hospitals and the attacker.

A registry of partitioners by ``federation.partition``. They work on a table with one row
per patient, so no partition ever cuts a patient. ``flwr-datasets``' partitioners
(IidPartitioner, SizePartitioner, DirichletPartitioner) would do the same on that table, but
they need a Hugging Face ``datasets.Dataset`` (pyarrow and the ``datasets`` stack, an extra
dependency of several hundred MB) to shuffle a few hundred integers, and their Dirichlet
resampling draws per class label, not per stratum of patients; NumPy does it in a few lines
with the run's seeded generators.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fl_mia.config import FederationConfig
from fl_mia.data.sources.base import DataError, patient_of
from fl_mia.seeding import rng_for

# As federation.patients_per_hospital: train (2 at a 0.5 share), held-out and test (1 each).
MIN_PATIENTS_PER_HOSPITAL = 4
ATTACKER_SITE = "attacker"


@dataclass
class PatientTable:
    """One row per patient of the pool: its name, site ('' if none) and lesion burden (pixels)."""

    names: list[str]
    sites: list[str]
    lesion_pixels: np.ndarray
    without_slices: list[str] = field(default_factory=list)  # in the dataset, but no slice of theirs was kept


def _too_few(federation: FederationConfig, total: int) -> DataError:
    k, wanted = federation.num_hospitals, federation.attacker_patients
    available = max(0, total - wanted)
    drawn = min(total, wanted)
    return DataError(
        f"data.path: the dataset has {total} patient(s) and the attacker's draw (federation.attacker_patients={wanted}) "
        f"takes {drawn}, which leaves {available} patients for {k} hospitals, which need at least "
        f"{k * MIN_PATIENTS_PER_HOSPITAL} ({MIN_PATIENTS_PER_HOSPITAL} each for their train/held-out/test splits); lower "
        "federation.attacker_patients or federation.num_hospitals, or add patients"
    )


def _iid(federation: FederationConfig, table: PatientTable, remaining: np.ndarray, *, seed: int) -> list[np.ndarray]:
    return [np.sort(part) for part in np.array_split(remaining, federation.num_hospitals)]


def _size_skew(federation: FederationConfig, table: PatientTable, remaining: np.ndarray, *, seed: int) -> list[np.ndarray]:
    sizes = federation.hospital_sizes()
    if sum(sizes) > len(remaining):
        raise DataError(
            f"federation.patients_per_hospital={federation.patients_per_hospital} needs {sum(sizes)} patients but the "
            f"dataset leaves {len(remaining)} after the attacker's; lower the sizes or federation.attacker_patients"
        )
    bounds = np.cumsum([0, *sizes])
    return [np.sort(remaining[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def lesion_strata(lesion_pixels: np.ndarray) -> np.ndarray:
    """Stratum of each patient: 0 without lesion, then terciles of lesion burden (1 small .. 3 large)."""
    strata = np.zeros(len(lesion_pixels), dtype=np.int64)
    sick = lesion_pixels > 0
    if sick.any():
        edges = np.quantile(lesion_pixels[sick], [1 / 3, 2 / 3])
        strata[sick] = 1 + np.searchsorted(edges, lesion_pixels[sick], side="right")
    return strata


def _dirichlet(federation: FederationConfig, table: PatientTable, remaining: np.ndarray, *, seed: int) -> list[np.ndarray]:
    k = federation.num_hospitals
    rng = rng_for(seed, "dirichlet-partition")
    strata = lesion_strata(table.lesion_pixels[remaining])
    # As DirichletPartitioner does: draw again until every hospital is big enough to split.
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(k)]
        for stratum in np.unique(strata):
            members = remaining[strata == stratum]
            shares = rng.dirichlet(np.full(k, federation.dirichlet_alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).round().astype(int)
            for hospital, chunk in enumerate(np.split(members, cuts)):
                parts[hospital].extend(chunk.tolist())
        if min(len(p) for p in parts) >= MIN_PATIENTS_PER_HOSPITAL:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise DataError(
        f"federation.dirichlet_alpha={federation.dirichlet_alpha:g}: no draw in 1000 gives every hospital "
        f"{MIN_PATIENTS_PER_HOSPITAL} patients; raise the alpha or lower federation.num_hospitals"
    )


def read_manifest(
    federation: FederationConfig, table: PatientTable, *, patient_regex: str | None, dataset: Path | None
) -> dict[str, str]:
    """Site of each patient named by the manifest (or by the dataset's own sites when there is no manifest)."""
    path = federation.manifest
    if path is None:
        if not any(table.sites):
            raise DataError("federation.partition='manifest' needs federation.manifest (a CSV case,site) or a dataset with sites")
        return {name: site for name, site in zip(table.names, table.sites)}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"federation.manifest: {path} does not exist; give a CSV with columns case,site")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"case", "site"} <= set(rows[0]):
        raise DataError(f"{path}: needs a header with columns case,site (one row per case)")
    known = set(table.names)
    sites: dict[str, str] = {}
    for row in rows:
        case = row["case"].strip()
        patient = case if case in known else patient_of(case, patient_regex)
        if patient in table.without_slices:
            raise DataError(
                f"{path}: case {row['case']!r} has no slice left once slicing keeps foreground slices and a share of empty "
                f"ones; remove the row, or raise empty_slice_fraction in [data.msd] or [data.nnunet] (1.0 keeps every slice)"
            )
        if patient not in known:
            raise DataError(f"{path}: case {row['case']!r} is not in the dataset at {dataset}; remove the row or add the case")
        sites[patient] = row["site"].strip()
    return sites


def _by_manifest(
    federation: FederationConfig, table: PatientTable, *, seed: int, patient_regex: str | None, dataset: Path | None
) -> tuple[list[np.ndarray], np.ndarray]:
    site_of = read_manifest(federation, table, patient_regex=patient_regex, dataset=dataset)
    where = federation.manifest or dataset
    index = {name: i for i, name in enumerate(table.names)}
    hospital_sites = sorted({site for site in site_of.values() if site and site != ATTACKER_SITE})
    if len(hospital_sites) != federation.num_hospitals:
        raise DataError(
            f"{where}: {len(hospital_sites)} sites {hospital_sites[:8]} but federation.num_hospitals is "
            f"{federation.num_hospitals}; set num_hospitals to the number of sites"
        )
    hospitals = []
    for site in hospital_sites:
        members = np.sort([index[name] for name, s in site_of.items() if s == site]).astype(np.int64)
        if len(members) < MIN_PATIENTS_PER_HOSPITAL:
            raise DataError(
                f"{where}: site {site!r} has {len(members)} patient(s); its train/held-out/test splits need "
                f"{MIN_PATIENTS_PER_HOSPITAL}: merge it with another site or add patients"
            )
        hospitals.append(members)
    attacker = np.sort([index[name] for name, s in site_of.items() if s == ATTACKER_SITE]).astype(np.int64)
    return hospitals, attacker


# A partitioner: (federation, table, *, seed, patient_regex, dataset) -> (hospitals' rows, attacker's rows).
Partitioner = Callable[..., tuple[list[np.ndarray], np.ndarray]]


def _after_the_attacker(share_out: Callable[..., list[np.ndarray]]) -> Partitioner:
    """A partitioner of the patients left once the attacker drew its own at random."""

    def partition(
        federation: FederationConfig, table: PatientTable, *, seed: int, patient_regex: str | None, dataset: Path | None
    ) -> tuple[list[np.ndarray], np.ndarray]:
        order = rng_for(seed, "patient-assignment").permutation(len(table.names))
        wanted = federation.attacker_patients
        if len(order) - wanted < federation.num_hospitals * MIN_PATIENTS_PER_HOSPITAL:
            raise _too_few(federation, len(order))
        attacker, remaining = np.sort(order[:wanted]), order[wanted:]
        return share_out(federation, table, remaining, seed=seed), attacker

    return partition


PARTITIONERS: dict[str, Partitioner] = {
    "iid": _after_the_attacker(_iid),
    "size_skew": _after_the_attacker(_size_skew),
    "dirichlet": _after_the_attacker(_dirichlet),
    "manifest": _by_manifest,
}


def assign_patients(
    federation: FederationConfig, table: PatientTable, *, seed: int, patient_regex: str | None, dataset: Path | None
) -> tuple[list[np.ndarray], np.ndarray]:
    """Row indices (into ``table``) of every hospital's patients and of the attacker's.

    ``patient_regex`` maps a manifest's case ids to patients; ``dataset`` (data.path) names the data in errors.
    """
    return PARTITIONERS[federation.partition](
        federation, table, seed=seed, patient_regex=patient_regex, dataset=dataset
    )
