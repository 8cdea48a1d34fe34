"""Simulated hospital failures: which hospital fails in which round, and how.

The decision is a pure function of the config, the seed, the absolute round and the
hospital, so every run of one config fails the same hospitals in the same rounds, and a
resumed run fails exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import time
from enum import Enum

from fl_mia.config import FailuresConfig
from fl_mia.seeding import rng_for


class Failure(str, Enum):
    NONE = "none"
    CRASH = "crash"
    STRAGGLE = "straggle"


class SimulatedHospitalCrash(RuntimeError):
    """Raised inside a hospital's fit: Flower turns it into an error reply, as for a real crash."""


def planned_failure(cfg: FailuresConfig, *, seed: int, server_round: int, hospital: int) -> Failure:
    """The failure ``hospital`` suffers in ``server_round`` (absolute, 1-based)."""
    if any(entry.hospital == hospital and server_round in entry.rounds for entry in cfg.crashes):
        return Failure.CRASH
    # One draw per (round, hospital) from its own stream: the outcome does not depend on
    # which other hospitals were sampled or on the order they trained in.
    if cfg.crash_probability > 0 and rng_for(seed, "hospital-crash", server_round, hospital).random() < cfg.crash_probability:
        return Failure.CRASH
    if any(entry.hospital == hospital and server_round in entry.rounds for entry in cfg.stragglers):
        return Failure.STRAGGLE
    return Failure.NONE


def simulate_failure(cfg: FailuresConfig, *, seed: int, server_round: int, hospital: int) -> None:
    """Called by a hospital before local training: crash, straggle past the deadline, or return."""
    failure = planned_failure(cfg, seed=seed, server_round=server_round, hospital=hospital)
    if failure is Failure.CRASH:
        raise SimulatedHospitalCrash(f"hospital {hospital} crashed in round {server_round} (failures config)")
    if failure is Failure.STRAGGLE:
        time.sleep(cfg.straggle_seconds())
