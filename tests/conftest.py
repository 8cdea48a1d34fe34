"""Shared fixtures: tiny experiments that train in seconds on two CPU cores."""

from __future__ import annotations

import pytest
import torch

from fl_mia.config import ExperimentConfig
from fl_mia.config.loading import build_config

torch.set_num_threads(1)


def tiny_raw(**sections) -> dict:
    raw = {
        "name": "tiny",
        "seed": 0,
        "data": {"image_size": 32, "phantom": {"num_patients": 60, "slices_per_patient": 2}},
        "federation": {"num_hospitals": 2, "patients_per_hospital": 8, "attacker_patients": 8, "rounds": 2},
        "model": {"arch": "Unet", "encoder": "resnet18", "encoder_depth": 3, "norm": "groupnorm"},
        "training": {"local_epochs": 1, "batch_size": 4},
    }
    _merge(raw, sections)
    return raw


def _merge(base: dict, overlay: dict) -> None:
    """Tables merge key by key (``data={"phantom": {...}}`` keeps the other data keys); values replace."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@pytest.fixture
def tiny_cfg() -> ExperimentConfig:
    return build_config(tiny_raw())


@pytest.fixture(scope="session")
def uninterrupted_three_rounds(tmp_path_factory):
    """The tiny config run for 3 rounds without a stop: what every stopped-and-resumed run of it
    must end equal to (the kill, Ctrl-C and suite-resume tests share this one Ray run). Server
    momentum is on, so a resume must also restore the server's momentum buffer from the checkpoint."""
    from fl_mia.app.experiment import run_experiment

    raw = tiny_raw(federation={"rounds": 3, "server_momentum": 0.5})
    return raw, run_experiment(build_config(raw), out=tmp_path_factory.mktemp("uninterrupted") / "run")
