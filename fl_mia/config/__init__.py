"""Typed experiment configuration: one TOML file = one experiment (the schema only).

One module per section. It imports nothing else of fl_mia but the plug-in families' settings
modules (pydantic models and the registry, no torch), from which each family's allowed names and
its plug-ins' own tables come. Values and cross-field rules are checked by pydantic at load, so
a bad value fails with the name of its field. Reading files, ``extends`` and ``--set`` live in
:mod:`fl_mia.config.loading`; checks that need a model or a poisoner's preconditions run once in
:mod:`fl_mia.app.preflight`.
"""


from fl_mia.config.attacker_config import SOURCE_INFERENCE_MAX_HOSPITALS, AttackerConfig, ShadowSettings
from fl_mia.config.base import ConfigError, Section
from fl_mia.config.data_config import DataConfig
from fl_mia.config.defences_config import (
    CentralDpConfig,
    ConsistencyConfig,
    DefencesConfig,
    DpSgdConfig,
    OutputConfig,
    SecAggConfig,
    check_defences,
)
from fl_mia.config.experiment_config import ExperimentConfig
from fl_mia.config.federation_config import FederationConfig
from fl_mia.config.referee_config import RefereeConfig
from fl_mia.config.runtime_config import FailuresConfig, ScheduledFailure, SimulationConfig
from fl_mia.config.threat_config import ThreatConfig
from fl_mia.config.training_config import ModelConfig, TrainingConfig

__all__ = [
    "SOURCE_INFERENCE_MAX_HOSPITALS",
    "AttackerConfig",
    "CentralDpConfig",
    "ConfigError",
    "ConsistencyConfig",
    "DataConfig",
    "DefencesConfig",
    "DpSgdConfig",
    "ExperimentConfig",
    "FailuresConfig",
    "FederationConfig",
    "ModelConfig",
    "OutputConfig",
    "RefereeConfig",
    "ScheduledFailure",
    "SecAggConfig",
    "ShadowSettings",
    "Section",
    "SimulationConfig",
    "ThreatConfig",
    "TrainingConfig",
    "check_defences",
]
