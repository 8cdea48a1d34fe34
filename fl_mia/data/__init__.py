"""Datasets, partitioning into hospitals and the attacker's population."""

from fl_mia.data.shards import HospitalData, Split, forget_rendered_hospitals, num_classes
from fl_mia.data.hospitals import build_attacker_population, build_hospital, input_channels

__all__ = [
    "HospitalData",
    "Split",
    "build_attacker_population",
    "build_hospital",
    "forget_rendered_hospitals",
    "input_channels",
    "num_classes",
]
