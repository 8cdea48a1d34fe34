"""``[attacker]``: what the server runs to learn membership, and each attack's own table."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, create_model, field_validator, model_validator

from fl_mia.attacker.predictions.settings import PREDICTION_ATTACKS
from fl_mia.attacker.updates.settings import UPDATE_SIGNALS
from fl_mia.config.base import Section, plugin_table_fields

# Above this many hospitals source inference is off unless asked for: scoring every candidate
# on every update costs candidates × hospitals per round, and candidates grow with hospitals.
SOURCE_INFERENCE_MAX_HOSPITALS = 8

_BOTH_LIRAS = "attacker.lira_offline.global_variance and attacker.lira_online.global_variance"
_LEARNED = "attacker.learned_type1.{0}, attacker.learned_type2.{0} and attacker.loss_map.{0}"


def _listing(registry) -> str:
    return "; ".join(f"{plugin.name}: {plugin.summary}" for plugin in registry)


def _registered(registry, names: list[str], what: str) -> list[str]:
    """``names`` if each is registered once; pydantic already names the field, so the registry's prefix goes."""
    if len(set(names)) != len(names):
        raise ValueError(f"lists {what} twice")
    for name in names:
        try:
            registry.check(name)
        except ValueError as error:
            raise ValueError(str(error).removeprefix(f"{registry.key}: ")) from None
    return names


class ShadowSettings(Section):
    """How the attacker trains its shadow (and reference) models."""

    epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Epochs of each shadow model over its data; default: federation.rounds × training.local_epochs.",
    )
    mode: Literal["central", "federated", "as_target"] = Field(
        "central",
        description="How shadow models train: 'central' (one model, attacker.shadows.epochs epochs), 'federated' (a "
        "FedAvg federation of shadow hospitals with the target's rounds, sampling and local epochs; epochs is not "
        "used), 'as_target' (federated, plus the target's DP-SGD and output hardening when it uses them).",
    )
    models: int = Field(
        4, ge=2, le=256,
        description="Shadow models K of LiRA (and reference models of RMIA), each trained on a random half (even numbers balance IN/OUT).",
    )


class _AttackerSection(Section):
    """The attacker: prediction attacks, update signals, shadow models, and each attack's table."""

    moved_keys: ClassVar[dict[str, str]] = {
        "privacy.attacks": "attacker.prediction_attacks",
        "privacy.per_round_attacks": "attacker.per_round_attacks",
        "privacy.shadow_epochs": "attacker.shadows.epochs",
        "privacy.shadow_mode": "attacker.shadows.mode",
        "privacy.shadow_models": "attacker.shadows.models",
        "privacy.lira_global_variance": _BOTH_LIRAS,
        "privacy.rmia_offline_a": "attacker.rmia.offline_a",
        "privacy.rmia_gamma": "attacker.rmia.gamma",
        "privacy.attack_epochs": _LEARNED.format("epochs"),
        "privacy.attack_lr": _LEARNED.format("lr"),
        "privacy.loss_map_patch": "attacker.loss_map.patch",
        "privacy.label_only_queries": "attacker.label_only.queries",
        "privacy.label_only_noise": "attacker.label_only.noise",
        "threat.update_attacks": "attacker.update_attacks (a list of update signals; [] turns them off)",
        "threat.gradient_alignment": "attacker.update_attacks (list gradient_alignment, or leave it out)",
        "threat.source_inference": "attacker.source_inference",
    }

    prediction_attacks: list[str] = Field(
        default_factory=lambda: ["loss", "label_only"],
        description=f"Attacks on the final global model, by registered name ({_listing(PREDICTION_ATTACKS)}).",
    )
    per_round_attacks: list[str] = Field(
        default_factory=lambda: ["loss"],
        description="Attacks (a subset of attacker.prediction_attacks) also scored on every round's global model.",
    )
    update_attacks: list[str] = Field(
        default_factory=lambda: list(UPDATE_SIGNALS.names()),
        description="Signals scored on each hospital's update, by registered name "
        f"({_listing(UPDATE_SIGNALS)}); [] scores no update.",
    )
    source_inference: bool | None = Field(
        None,
        description="Score every candidate on every hospital's update, so the server also guesses which hospital "
        "each scan came from (metrics.json privacy.source_inference). Off: each update is scored only on the "
        "candidates asked about its hospital (the membership scores are the same; the cost stays proportional to "
        f"the hospitals trained per round). Unset: on up to {SOURCE_INFERENCE_MAX_HOSPITALS} hospitals, off above.",
    )
    shadows: ShadowSettings = Field(default_factory=ShadowSettings)

    @field_validator("prediction_attacks", "per_round_attacks")
    @classmethod
    def _registered_attacks(cls, value: list[str]) -> list[str]:
        return _registered(PREDICTION_ATTACKS, value, "an attack")

    @field_validator("update_attacks")
    @classmethod
    def _registered_signals(cls, value: list[str]) -> list[str]:
        return _registered(UPDATE_SIGNALS, value, "an update signal")

    @model_validator(mode="after")
    def _per_round_subset(self) -> "_AttackerSection":
        extra = [name for name in self.per_round_attacks if name not in self.prediction_attacks]
        if extra:
            raise ValueError(f"per_round_attacks names {extra[0]!r}, which is not in attacker.prediction_attacks")
        return self

    def scores_every_candidate(self, num_hospitals: int) -> bool:
        """Whether update attacks score every candidate on every update (source inference)."""
        if self.source_inference is not None:
            return self.source_inference
        return num_hospitals <= SOURCE_INFERENCE_MAX_HOSPITALS

    def attack_settings(self, name: str):
        """The table of prediction attack ``name`` (None: the attack has no knobs)."""
        plugin = PREDICTION_ATTACKS.get(name)
        if plugin.settings is None:
            return None
        table = getattr(self, name, None)  # an attack registered after the schema was built has no table
        return table if table is not None else plugin.settings()


# One table per registered attack with settings, keyed by the attack's name.
AttackerConfig = create_model(
    "AttackerConfig",
    __base__=_AttackerSection,
    __module__=__name__,
    __doc__=_AttackerSection.__doc__,
    **plugin_table_fields(PREDICTION_ATTACKS),
)
