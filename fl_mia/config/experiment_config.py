"""One experiment: every section, and the rules that span sections."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, model_validator

from fl_mia.config.attacker_config import AttackerConfig
from fl_mia.config.base import Section, raise_on_moved_keys
from fl_mia.config.data_config import DataConfig
from fl_mia.config.defences_config import DefencesConfig, check_defences
from fl_mia.config.federation_config import FederationConfig
from fl_mia.config.referee_config import RefereeConfig
from fl_mia.config.runtime_config import FailuresConfig, SimulationConfig
from fl_mia.config.threat_config import ThreatConfig
from fl_mia.config.training_config import ModelConfig, TrainingConfig


class ExperimentConfig(Section):
    """One experiment: data, federation, model, training and simulation settings."""

    name: str = Field("experiment", min_length=1, description="Run name; the run folder starts with it.")
    seed: int = Field(0, ge=0, description="Seed of every random choice of the run.")
    data: DataConfig = Field(default_factory=DataConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    threat: ThreatConfig = Field(default_factory=ThreatConfig)
    failures: FailuresConfig = Field(default_factory=FailuresConfig)
    defences: DefencesConfig = Field(default_factory=DefencesConfig)
    attacker: AttackerConfig = Field(default_factory=AttackerConfig)
    referee: RefereeConfig = Field(default_factory=RefereeConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_moved_keys(cls, raw: Any) -> Any:
        raise_on_moved_keys(raw, cls.all_moved_keys())
        return raw

    @classmethod
    def all_moved_keys(cls) -> dict[str, str]:
        """Every section's moved keys (old dotted key → where it lives now)."""
        moved: dict[str, str] = dict(cls.moved_keys)
        for field in cls.model_fields.values():
            moved.update(getattr(field.annotation, "moved_keys", {}))
        return moved

    @model_validator(mode="after")
    def _pool_fills_hospitals(self) -> "ExperimentConfig":
        needed = sum(self.federation.hospital_sizes()) + self.federation.attacker_patients
        # A dataset from disk is counted by the preflight, once it has been read.
        if self.data.source == "phantom" and needed > self.data.phantom.num_patients:
            raise ValueError(
                f"federation.num_hospitals={self.federation.num_hospitals} hospitals need {needed} patients "
                f"(with federation.attacker_patients) but data.phantom.num_patients is {self.data.phantom.num_patients}: "
                "use fewer or smaller hospitals, or a larger pool"
            )
        if self.data.source == "phantom" and self.federation.partition not in ("iid", "size_skew"):
            raise ValueError(
                f"federation.partition={self.federation.partition!r} needs a dataset from disk; "
                "the phantom's hospitals come from patients_per_hospital and federation.label_skew"
            )
        check_defences(
            self.defences, num_hospitals=self.federation.num_hospitals, sampled=self.sampled_per_round(), norm=self.model.norm
        )
        return self

    @model_validator(mode="after")
    def _targets_exist(self) -> "ExperimentConfig":
        k = self.federation.num_hospitals
        bad = [t for t in self.threat.target_hospitals if not 0 <= t < k]
        if bad:
            raise ValueError(f"threat.target_hospitals: {bad} outside 0..{k - 1} (federation.num_hospitals = {k})")
        if self.threat.poisoning != "none" and not (self.referee.enabled and self.attacker.prediction_attacks):
            raise ValueError(
                f"threat.poisoning={self.threat.poisoning} needs the attacker's candidate set: "
                "set referee.enabled = true with at least one attacker.prediction_attacks entry"
            )
        if self.threat.poisoning != "none" and self.federation.attacker_patients < 2:
            raise ValueError("threat.poisoning needs attacker data: set federation.attacker_patients >= 2")
        late = [r for r in self.threat.poison_rounds or [] if r > self.federation.rounds]
        if late:
            raise ValueError(f"threat.poison_rounds: round {late[0]} is after the last round (federation.rounds)")
        if self.threat.poisoning in ("trap_weights", "trap_inconsistency"):
            self._trap_weights_fit_the_model()
        if self.threat.poisoning == "trap_inconsistency":
            self._trap_inconsistency_leaves_training_rounds()
        return self

    def _trap_weights_fit_the_model(self) -> None:
        # The trap reads "this parameter never moved" as "its detector never fired".
        poisoning = self.threat.poisoning
        if self.training.weight_decay != 0:
            raise ValueError(
                f"threat.poisoning={poisoning}: training.weight_decay must be 0 (decay moves every weight and hides the trap)"
            )
        if not self.attacker.update_attacks:
            raise ValueError(f"threat.poisoning={poisoning} reads the hospitals' updates: list signals in attacker.update_attacks")
        # Whether the model has the trap's site and room for its detectors: fl_mia.app.preflight.

    def _trap_inconsistency_leaves_training_rounds(self) -> None:
        # It traps one hospital per round, always in turn: an aggregate isolates one unsilenced update.
        threat = self.threat
        trapped = set(threat.poison_rounds) if threat.poison_rounds is not None else set(range(1, self.federation.rounds + 1))
        if threat.compensate and trapped >= set(range(1, self.federation.rounds + 1)):
            raise ValueError(
                "threat.poison_rounds: trap_inconsistency keeps the previous global model in every trapped round, so "
                "trapping every round leaves the model untrained; list only the trap rounds, after the training rounds"
            )

    @model_validator(mode="after")
    def _failures_name_real_hospitals_and_rounds(self) -> "ExperimentConfig":
        k, rounds = self.federation.num_hospitals, self.federation.rounds
        for kind in ("crashes", "stragglers"):
            for entry in getattr(self.failures, kind):
                if entry.hospital >= k:
                    raise ValueError(
                        f"failures.{kind}: hospital {entry.hospital} does not exist "
                        f"(federation.num_hospitals={k}, ids 0..{k - 1})"
                    )
                late = [r for r in entry.rounds if r > rounds]
                if late:
                    raise ValueError(
                        f"failures.{kind}: round {late[0]} of hospital {entry.hospital} is after "
                        f"the last round (federation.rounds={rounds})"
                    )
        return self

    def sampled_per_round(self) -> int:
        """Hospitals sampled each round (what the server's strategy asks for)."""
        return max(1, int(round(self.federation.fraction_fit * self.federation.num_hospitals)))

    def to_toml_dict(self) -> dict[str, Any]:
        """Plain dict with only TOML-representable values (None dropped, paths as text)."""
        return _drop_none(json.loads(self.model_dump_json()))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    return value
