"""Hospitals and the attacker's population, from the phantom or from a dataset on disk.

The one entry point clients, server and attacker use (through :mod:`fl_mia.data`): it picks
the phantom's renderer (:mod:`fl_mia.data.shards`) or the disk pool
(:mod:`fl_mia.data.disk`) by ``data.source``, so the phantom's code path stays as it was.
"""

from __future__ import annotations

from fl_mia.config import ExperimentConfig
import fl_mia.data.disk as disk
import fl_mia.data.shards as federation
from fl_mia.data.shards import HospitalData, Split


def build_hospital(cfg: ExperimentConfig, hospital: int) -> HospitalData:
    """One hospital's three splits (what a Flower client builds for itself)."""
    if not 0 <= hospital < cfg.federation.num_hospitals:
        raise ValueError(f"hospital {hospital} outside 0..{cfg.federation.num_hospitals - 1}")
    module = federation if cfg.data.source == "phantom" else disk
    return module.build_hospital(cfg, hospital)


def build_attacker_population(cfg: ExperimentConfig) -> Split:
    """The attacker's own scans: patients disjoint from every hospital."""
    module = federation if cfg.data.source == "phantom" else disk
    return module.build_attacker_population(cfg)


def input_channels(cfg: ExperimentConfig) -> int:
    """Input channels of the model: 1 for the phantom, the dataset's channel count from disk."""
    return 1 if cfg.data.source == "phantom" else disk.pool_of(cfg).channels
