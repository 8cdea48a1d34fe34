"""``[threat]``: what the server does, honest-but-curious or poisoning."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from fl_mia.attacker.poisoning.settings import NO_POISONING, POISONERS
from fl_mia.config.base import Section, plugin_table_fields


# Each poisoner's knobs live in its own table, [threat.<poisoner>]; the flat keys they replace are errors.
_MOVED_POISONER_KEYS = {
    **{f"threat.ascent_{key}": f"threat.gradient_ascent.{key}" for key in ("loss_ratio", "max_steps", "lr", "layers")},
    **{f"threat.backdoor_{key}": f"threat.backdoor.{key}" for key in ("trigger_size", "trigger_value", "steps", "lr")},
    "threat.trap_detectors_per_round": "threat.trap_weights.detectors_per_round or threat.trap_inconsistency.detectors_per_round",
    "threat.trap_fit_steps": "threat.trap_weights.fit_steps or threat.trap_inconsistency.fit_steps",
    "threat.trap_in_turn": "threat.trap_weights.in_turn",
}


class ThreatSettings(Section):
    """What the server does: honest-but-curious FedAvg, or a poisoning strategy (the keys every poisoner shares)."""

    moved_keys: ClassVar[dict[str, str]] = _MOVED_POISONER_KEYS

    poisoning: str = Field(
        NO_POISONING,
        description=f"{NO_POISONING!r}: honest-but-curious server; otherwise the registered poisoner the server runs "
        "(docs/threat-models.md; its own knobs in [threat.<poisoner>]).",
    )
    target_hospitals: list[int] = Field(
        [0], description="Hospitals the poisoning targets (model_inconsistency: the one whose update it isolates)."
    )
    poison_rounds: list[int] | None = Field(
        None, description="Rounds in which the server poisons (default: every round)."
    )
    compensate: bool = Field(
        True,
        description="Aggregate a poisoned hospital as global + its own update, so the poison does not reach the global model.",
    )

    @field_validator("poisoning")
    @classmethod
    def _registered_poisoner(cls, value: str) -> str:
        if value != NO_POISONING and value not in POISONERS:
            raise ValueError(f"unknown poisoner {value!r}; choose from {', '.join((NO_POISONING, *POISONERS.names()))}")
        return value

    @field_validator("poison_rounds")
    @classmethod
    def _positive_rounds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(r < 1 for r in value):
            raise ValueError("rounds are numbered from 1")
        return value

    @model_validator(mode="after")
    def _active_ascent_after_training(self) -> "ThreatSettings":
        # Its ascent and calibration need a useful model; attacking round 1 measures an untrained one.
        if self.poisoning == "active_ascent" and (self.poison_rounds is None or 1 in self.poison_rounds):
            raise ValueError(
                "threat.poison_rounds: active_ascent attacks chosen rounds after ordinary training rounds; "
                "list them, e.g. poison_rounds = [8, 9, 10] of 10"
            )
        return self

    def poisoner_settings(self) -> BaseModel | None:
        """The active poisoner's own table (``None``: honest server, or a poisoner without knobs)."""
        if self.poisoning == NO_POISONING:
            return None
        settings = POISONERS.get(self.poisoning).settings
        if settings is None:
            return None
        # A poisoner registered after this schema was built has no table here: it runs on its defaults.
        return getattr(self, self.poisoning, None) or settings()

    @property
    def threat_model(self) -> str:
        return "honest-but-curious" if self.poisoning == NO_POISONING else f"malicious ({self.poisoning})"

    def poisons(self, server_round: int) -> bool:
        return self.poisoning != NO_POISONING and (self.poison_rounds is None or server_round in self.poison_rounds)


def _threat_config() -> Any:
    """The ``[threat]`` section: the shared keys, then one table per poisoner with settings, from the registry."""
    return create_model(
        "ThreatConfig",
        __base__=ThreatSettings,
        __module__=__name__,
        __doc__="What the server does: honest-but-curious FedAvg, or a poisoning strategy with its own table.",
        **plugin_table_fields(POISONERS),
    )


ThreatConfig = _threat_config()
