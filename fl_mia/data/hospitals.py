"""Hospitals and the attacker's population, from the phantom or from a dataset on disk.

The one entry point clients, server and attacker use (through :mod:`fl_mia.data`): it picks
the phantom's renderer (:mod:`fl_mia.data.shards`) or the disk pool
(:mod:`fl_mia.data.disk`) by ``data.source``, so the phantom's code path stays as it was.
"""

from __future__ import annotations

from fl_mia.config import DataConfig, FederationConfig
import fl_mia.data.disk as disk
import fl_mia.data.shards as phantom
from fl_mia.data.shards import HospitalData, Split


def build_hospital(data: DataConfig, federation: FederationConfig, hospital: int, *, seed: int) -> HospitalData:
    """One hospital's three splits (what a Flower client builds for itself)."""
    if not 0 <= hospital < federation.num_hospitals:
        raise ValueError(f"hospital {hospital} outside 0..{federation.num_hospitals - 1}")
    module = phantom if data.source == "phantom" else disk
    return module.build_hospital(data, federation, hospital, seed=seed)


def build_attacker_population(data: DataConfig, federation: FederationConfig, *, seed: int) -> Split:
    """The attacker's own scans: patients disjoint from every hospital."""
    module = phantom if data.source == "phantom" else disk
    return module.build_attacker_population(data, federation, seed=seed)


def input_channels(data: DataConfig) -> int:
    """Input channels of the model: 1 for the phantom, the dataset's channel count from disk."""
    return 1 if data.source == "phantom" else disk.pool_of(data).channels


def patient_names(data: DataConfig) -> list[str] | None:
    """The dataset's patient ids by patient index (``p14``, ``case_023``), for what users read.

    ``None`` for the phantom: its patients are numbered, and the number is their id.
    """
    return None if data.source == "phantom" else list(disk.pool_of(data).patients)
