"""``[threat]``: what the server does, honest-but-curious or poisoning."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fl_mia.config.base import Section


class ThreatConfig(Section):
    """What the server does: honest-but-curious FedAvg, or a poisoning strategy."""

    poisoning: Literal[
        "none", "gradient_ascent", "isolation", "model_inconsistency", "backdoor", "trap_weights", "trap_inconsistency"
    ] = Field(
        "none",
        description="'none': honest-but-curious server; otherwise the malicious strategy it runs "
        "('trap_inconsistency': trap weights for one hospital per round, silenced models for the others, against SecAgg+).",
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
    ascent_loss_ratio: float = Field(
        2.0, gt=1.0, le=1000.0, description="gradient_ascent: stop once the candidates' mean loss is this many times higher."
    )
    ascent_max_steps: int = Field(30, ge=1, le=10_000, description="gradient_ascent: most ascent steps per round.")
    ascent_lr: float = Field(1e-3, gt=0.0, le=1.0, description="gradient_ascent: Adam step size of the ascent.")
    ascent_layers: Literal["all", "decoder", "head"] = Field(
        "all", description="gradient_ascent: which layers the ascent may change."
    )
    backdoor_trigger_size: int = Field(6, ge=1, le=64, description="backdoor: side of the bottom-right trigger square (px).")
    backdoor_trigger_value: float = Field(4.0, description="backdoor: value written into the trigger (normalised units).")
    backdoor_steps: int = Field(20, ge=1, le=10_000, description="backdoor: fine-tuning steps before each sending.")
    backdoor_lr: float = Field(1e-3, gt=0.0, le=1.0, description="backdoor: learning rate of the implanting.")
    trap_detectors_per_round: int = Field(
        16, ge=1, le=4096,
        description="trap_weights, trap_inconsistency: candidates trapped per targeted hospital and poisoned round (one GroupNorm group of encoder.layer1.0.conv1 each).",
    )
    trap_in_turn: bool = Field(
        True,
        description="trap_weights: trap one target hospital per poisoned round, in turn (one reply left out per round), rather than all targets at once (trap_inconsistency always traps in turn).",
    )
    trap_fit_steps: int = Field(
        60, ge=0, le=10_000, description="trap_weights, trap_inconsistency: optimisation steps that separate a detector's target from the server's other scans."
    )
    @field_validator("poison_rounds")
    @classmethod
    def _positive_rounds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(r < 1 for r in value):
            raise ValueError("rounds are numbered from 1")
        return value

    @property
    def threat_model(self) -> str:
        return "honest-but-curious" if self.poisoning == "none" else f"malicious ({self.poisoning})"

    def poisons(self, server_round: int) -> bool:
        return self.poisoning != "none" and (self.poison_rounds is None or server_round in self.poison_rounds)
