"""Ray resources for the hospitals, checked before Ray starts.

Flower's simulation cannot place an actor that asks for more than the machine has; it
then logs "ActorPool is empty" and the process never exits. Checking first turns that
silent hang into a one-line error.
"""

from __future__ import annotations

import os

import torch

from fl_mia.config import ConfigError, SimulationConfig


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ray_cluster_address(cfg: SimulationConfig) -> str | None:
    """The running Ray cluster to join: ``simulation.ray_address``, else ``RAY_ADDRESS``, else none.

    ``RAY_ADDRESS=local`` (Ray's own word for "start a new local instance", set for suite cells
    run as Ray tasks) means none: the run starts its private Ray with its own CPU count.
    """
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


def check_resources(cfg: SimulationConfig, *, num_hospitals: int) -> None:
    if ray_cluster_address(cfg) is not None:
        # A cluster's resources are the cluster's, not this machine's: Ray places the
        # actors on whichever node has room, so the local checks below would be wrong.
        return
    cpus = cfg.total_cpus or available_cpus()
    if cfg.total_cpus is not None and cfg.total_cpus > available_cpus():
        raise ConfigError(
            f"simulation.total_cpus: {cfg.total_cpus} CPUs asked but this machine has {available_cpus()}; lower it"
        )
    if cfg.cpus_per_client > cpus:
        raise ConfigError(
            f"simulation.cpus_per_client: {cfg.cpus_per_client:g} CPUs per hospital but only {cpus} available; "
            "lower it (hospitals then take turns)"
        )
    if cfg.gpus_per_client > 0 and not torch.cuda.is_available():
        raise ConfigError("simulation.gpus_per_client: this machine has no GPU; set it to 0")
    if cfg.gpus_per_client > max(torch.cuda.device_count(), 0) and torch.cuda.is_available():
        raise ConfigError(
            f"simulation.gpus_per_client: {cfg.gpus_per_client:g} GPUs per hospital but the machine has "
            f"{torch.cuda.device_count()}; lower it"
        )


def backend_config(cfg: SimulationConfig) -> dict:
    client_resources = {"num_cpus": cfg.cpus_per_client, "num_gpus": cfg.gpus_per_client}
    address = ray_cluster_address(cfg)
    if address is not None:
        # Joining a cluster: Ray refuses num_cpus/num_gpus then (the cluster has its own).
        return {
            "client_resources": client_resources,
            "init_args": {"address": address, "log_to_driver": False},
        }
    cpus = cfg.total_cpus or available_cpus()
    return {
        "client_resources": client_resources,
        "init_args": {
            "num_cpus": cpus,
            "num_gpus": torch.cuda.device_count() if cfg.gpus_per_client > 0 else 0,
            "include_dashboard": False,
            "log_to_driver": False,  # actor chatter (shutdown warnings) stays out of the console
        },
    }
