"""Checks that need more than the schema: a model, a dataset, a poisoner's preconditions.

:mod:`fl_mia.config` is a leaf (pydantic types, registered names and cross-field rules only).
What can only be known by building something — does smp build this model, does the trap fit
into the encoder, does the threat make sense under the defences — is checked here, once per experiment, by whoever starts it: the CLI (``fl-mia run``, sweeps,
suites), the ServerApp under ``flwr run``. Hospitals never run it: they receive a config
the server has already checked.
"""

from __future__ import annotations

from pathlib import Path

from fl_mia.config import ConfigError, ExperimentConfig
from fl_mia.config.loading import load_config


def _model_builds(cfg: ExperimentConfig) -> None:
    from fl_mia.models import check_model_runs

    check_model_runs(cfg.model, cfg.data)  # builds it and checks a forward pass at the configured image size


def _threat_fits_the_defences(cfg: ExperimentConfig) -> None:
    poisoning, secagg = cfg.threat.poisoning, cfg.defences.secagg.enabled
    if poisoning == "isolation" and secagg:
        # Under SecAgg+ the server never holds a hospital's own model, only the sum: it has
        # nothing to send back, and sending the aggregate delta as a model would be nonsense.
        raise ValueError(
            "threat.poisoning=isolation needs each hospital's own returned model, which SecAgg+ hides; "
            "use model_inconsistency under secagg, or turn defences.secagg.enabled off"
        )
    if poisoning in ("model_inconsistency", "trap_inconsistency"):
        from fl_mia.models import build_experiment_model
        from fl_mia.attacker.poisoning.model_inconsistency import silencing_keys

        silencing_keys(build_experiment_model(cfg.model, cfg.data))  # the decoder must have a norm layer to silence
    if poisoning == "trap_inconsistency" and secagg:
        from fl_mia.attacker.poisoning.trap_inconsistency import reconstruction_step

        # A fired detector's weights move by about training.lr per Adam step. The reconstructed
        # update carries SecAgg+'s rounding times max_weight / n (a hospital's share of the
        # weights): a step within a hundredth of lr leaves room for that factor.
        s = cfg.defences.secagg
        step = reconstruction_step(clipping_range=s.clipping_range, quantization_range=s.quantization_range)
        if step > cfg.training.lr / 100:
            raise ValueError(
                f"defences.secagg.quantization_range={s.quantization_range} is too coarse for trap_inconsistency: one "
                f"quantisation step ({step:.2g}, from clipping_range={s.clipping_range:g}) must stay below training.lr/100 "
                f"({cfg.training.lr / 100:.2g}) for the detectors' changes to outlast SecAgg+'s rounding; raise it"
            )


def _trap_fits_the_model(cfg: ExperimentConfig) -> None:
    if cfg.threat.poisoning not in ("trap_weights", "trap_inconsistency"):
        return
    from fl_mia.models import build_model
    from fl_mia.attacker.poisoning.trap_site import check_capacity

    # Also checks the model has the trap's site (a ResNet-family encoder with GroupNorm).
    detectors = cfg.threat.poisoner_settings().detectors_per_round
    check_capacity(build_model(cfg.model, in_channels=1, classes=1), detectors, poisoner=cfg.threat.poisoning)


def _device_exists(cfg: ExperimentConfig) -> None:
    if cfg.simulation.device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError("simulation.device='cuda' but torch finds no CUDA device on this machine; use 'auto' or 'cpu'")


def _dataset_loads(cfg: ExperimentConfig) -> None:
    if cfg.data.source == "phantom":
        return
    from fl_mia.data import build_attacker_population, build_hospital

    # Reads (or decodes and caches) the dataset and shares it out once, here, so that a
    # broken file or a too-small site fails in one line before any hospital starts.
    for k in range(cfg.federation.num_hospitals):
        build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed)
    build_attacker_population(cfg.data, cfg.federation, seed=cfg.seed)


CHECKS = (_device_exists, _dataset_loads, _model_builds, _threat_fits_the_defences, _trap_fits_the_model)


def preflight(cfg: ExperimentConfig, *, source: str = "config") -> ExperimentConfig:
    """Run every check that needs models or registries; :class:`ConfigError` in one line."""
    for check in CHECKS:
        try:
            check(cfg)
        except ValueError as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"{source}: {error}") from None
    return cfg


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment file and run the preflight: what every entry point starts with."""
    return preflight(load_config(path, overrides), source=str(path))
