"""The poisoners by name, each with its own ``[threat.<name>]`` table.

A light module (pydantic and :mod:`fl_mia.registry` only): the config takes the allowed
``threat.poisoning`` names and the poisoners' tables from :data:`POISONERS` without importing
torch. Each factory is ``Class.from_settings(settings, knowledge, model, targets=...)``,
imported the first time a run asks for that poisoner. ``"none"`` (an honest-but-curious
server) is not a poisoner: it is the absence of one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fl_mia.registry import PluginSettings, Registry

POISONERS = Registry("poisoner", key="threat.poisoning")
NO_POISONING = "none"


class GradientAscentSettings(PluginSettings):
    """``[threat.gradient_ascent]``: how far, how fast and where the server ascends the candidates' loss."""

    loss_ratio: float = Field(
        2.0, gt=1.0, le=1000.0, description="Stop once the candidates' mean loss is this many times higher."
    )
    max_steps: int = Field(30, ge=1, le=10_000, description="Most ascent steps per round.")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam step size of the ascent.")
    layers: Literal["all", "decoder", "head"] = Field("all", description="Which layers the ascent may change.")


class ActiveAscentSettings(PluginSettings):
    """``[threat.active_ascent]``: the per-record ascent (how hard, how long, where) and its calibration shadows."""

    strength: float = Field(
        0.001, gt=0.0, le=1.0,
        description="Adam step size of the ascent on the mean of the candidates' log-losses (each record counts alike).",
    )
    steps: int = Field(
        3, ge=0, le=10_000, description="Ascent steps per attack round and target (0: no ascent, calibration only)."
    )
    layers: Literal["all", "decoder", "head"] = Field("decoder", description="Which layers the ascent may change.")
    contrast: float = Field(
        0.0, ge=0.0, le=100.0,
        description="Hold the server's own scans: the ascent maximises the candidates' mean log-loss minus this "
        "times the population's, so it raises what is particular to the candidates rather than 'segment worse'.",
    )
    shadows: int = Field(
        8, ge=2, le=256,
        description="Shadow hospitals the server trains from the poisoned model on its own population, per attack "
        "round and target: the non-member reference each candidate's loss drop is scored against.",
    )
    shadow_size: int | None = Field(
        None, ge=1,
        description="Training scans per shadow hospital (default: the target's reported training size in earlier "
        "rounds, capped by the population).",
    )
    calibration: Literal["per_record", "global"] = Field(
        "per_record",
        description="per_record: each candidate's own mean drop under the shadows, with their pooled spread (offline "
        "LiRA, fixed variance); global: one mean and spread over every candidate and shadow.",
    )
    stealth_loss_ratio: float | None = Field(
        None, gt=1.0,
        description="Stealth budget: stop the ascent before the server's own population loss rises above this "
        "many times its value on the honest model (a proxy of the loss jump the hospital sees); none: no cap.",
    )


class BackdoorSettings(PluginSettings):
    """``[threat.backdoor]``: the trigger the server implants and how long it fine-tunes for it."""

    trigger_size: int = Field(6, ge=1, le=64, description="Side of the bottom-right trigger square (px).")
    trigger_value: float = Field(4.0, description="Value written into the trigger (normalised units).")
    steps: int = Field(20, ge=1, le=10_000, description="Fine-tuning steps before each sending.")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Learning rate of the implanting.")


class _DetectorSettings(PluginSettings):
    """The detectors a trap plants: how many per round, and how hard each is fitted."""

    detectors_per_round: int = Field(
        16, ge=1, le=4096,
        description="Candidates trapped per targeted hospital and poisoned round (one GroupNorm group of "
        "encoder.layer1.0.conv1 each).",
    )
    fit_steps: int = Field(
        60, ge=0, le=10_000,
        description="Optimisation steps that separate a detector's target from the server's other scans.",
    )


class TrapWeightsSettings(_DetectorSettings):
    """``[threat.trap_weights]``: the detectors planted per round, and whether targets are trapped in turn."""

    in_turn: bool = Field(
        True,
        description="Trap one target hospital per poisoned round, in turn (one reply left out per round), rather "
        "than all targets at once.",
    )


class TrapInconsistencySettings(_DetectorSettings):
    """``[threat.trap_inconsistency]``: the detectors planted per round; it always traps one hospital per
    round, in turn (an aggregate isolates one unsilenced update, no more)."""


POISONERS.register(
    "gradient_ascent",
    summary="before sending to a target, ascends the loss of the candidates asked about it (Nasr et al. S&P 2019)",
    settings=GradientAscentSettings,
    factory="fl_mia.attacker.poisoning.gradient_ascent:GradientAscentPoisoner.from_settings",
)
POISONERS.register(
    "active_ascent",
    summary="per-record ascent on a target's candidates in attack rounds, each drop scored against shadow "
    "hospitals trained from the same poisoned model (Nasr et al. S&P 2019, calibrated as LiRA)",
    settings=ActiveAscentSettings,
    factory="fl_mia.attacker.poisoning.active_ascent:ActiveAscentPoisoner.from_settings",
)
POISONERS.register(
    "isolation",
    summary="sends each target the model it returned last round instead of the aggregate",
    factory="fl_mia.attacker.poisoning.isolation:IsolationPoisoner.from_settings",
)
POISONERS.register(
    "model_inconsistency",
    summary="silences every hospital but the target, so an aggregate (even under SecAgg+) is the target's update",
    factory="fl_mia.attacker.poisoning.model_inconsistency:ModelInconsistencyPoisoner.from_settings",
)
POISONERS.register(
    "backdoor",
    summary="fine-tunes the model sent to a target so that a trigger draws a fixed mask",
    settings=BackdoorSettings,
    factory="fl_mia.attacker.poisoning.backdoor:BackdoorPoisoner.from_settings",
)
POISONERS.register(
    "trap_weights",
    summary="plants one membership detector per candidate in the model sent to a target (Boenisch et al. EuroS&P 2023)",
    settings=TrapWeightsSettings,
    factory="fl_mia.attacker.poisoning.trap_weights:TrapWeightsPoisoner.from_settings",
)
POISONERS.register(
    "trap_inconsistency",
    summary="trap weights for one hospital per round, silenced models for the others (against SecAgg+)",
    settings=TrapInconsistencySettings,
    factory="fl_mia.attacker.poisoning.trap_inconsistency:TrapInconsistencyPoisoner.from_settings",
)
