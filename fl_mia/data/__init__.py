"""Datasets, partitioning into hospitals and the attacker's population."""

from fl_mia.data.federation import (
    HospitalData,
    Split,
    build_attacker_population,
    build_hospital,
    input_channels,
    num_classes,
)

__all__ = [
    "HospitalData",
    "Split",
    "build_attacker_population",
    "build_hospital",
    "input_channels",
    "num_classes",
]
