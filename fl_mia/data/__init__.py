"""Datasets, partitioning into hospitals and the attacker's population.

The names below load on first use, so importing a light submodule (the data-source
settings the config reads) does not import the renderer, the readers or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "HospitalData": "fl_mia.data.shards",
    "Split": "fl_mia.data.shards",
    "forget_rendered_hospitals": "fl_mia.data.shards",
    "num_classes": "fl_mia.data.shards",
    "build_attacker_population": "fl_mia.data.hospitals",
    "build_hospital": "fl_mia.data.hospitals",
    "input_channels": "fl_mia.data.hospitals",
    "patient_names": "fl_mia.data.hospitals",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fl_mia.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
