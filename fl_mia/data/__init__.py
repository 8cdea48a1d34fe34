"""Datasets, partitioning into hospitals and the attacker's population."""

from fl_mia.data.federation import (
    FederatedData,
    HospitalData,
    Split,
    build_attacker_population,
    build_federation,
    build_hospital,
    num_classes,
)

__all__ = [
    "FederatedData",
    "HospitalData",
    "Split",
    "build_attacker_population",
    "build_federation",
    "build_hospital",
    "num_classes",
]
