"""``[privacy]``: membership inference run by the server after training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fl_mia.config.base import Section


class PrivacyConfig(Section):
    """Membership inference run by the server after training (attacks on predictions)."""

    enabled: bool = Field(True, description="Run the membership inference step after training.")
    attacks: list[str] = Field(
        default_factory=lambda: ["loss", "label_only"],
        description="Attacks on the final global model, by registry name: loss, learned_type1, learned_type2, "
        "loss_map, lira_offline, lira_online, rmia, label_only.",
    )
    per_round_attacks: list[str] = Field(
        default_factory=lambda: ["loss"],
        description="Attacks (a subset of privacy.attacks) also scored on every round's global model.",
    )
    candidates_per_hospital: int | None = Field(
        None,
        ge=1,
        description="Members drawn per hospital (and as many non-members); default: as many as both pools allow.",
    )
    match_lesion_area: bool = Field(
        False,
        description="Draw members and non-members with the same mix of lesion-free, small- and large-lesion scans, so that the mask alone cannot tell them apart (metrics.json privacy.candidate_set.lesion_area_auc shows how much it could).",
    )
    shadow_epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Epochs of each shadow model over its data; default: federation.rounds × training.local_epochs.",
    )
    shadow_mode: Literal["central", "federated", "as_target"] = Field(
        "central",
        description="How shadow models train: 'central' (one model, shadow_epochs epochs), 'federated' (a FedAvg "
        "federation of shadow hospitals with the target's rounds, sampling and local epochs; shadow_epochs is not "
        "used), 'as_target' (federated, plus the target's DP-SGD and output hardening when it uses them).",
    )
    shadow_models: int = Field(
        4, ge=2, le=256, description="Shadow models K of LiRA (and reference models of RMIA), each trained on a random half (even numbers balance IN/OUT)."
    )
    lira_global_variance: Literal["auto", "always", "never"] = Field(
        "auto", description="LiRA: one pooled variance for all candidates ('auto': when shadow_models < 64)."
    )
    rmia_offline_a: float = Field(
        0.3, ge=0.0, le=1.0,
        description="RMIA offline: Pr(x) ≈ ½((1 + a)·Pr_OUT(x) + (1 − a)) from OUT-only reference models (Zarifzadeh et al. 2024).",
    )
    rmia_gamma: float = Field(1.0, gt=0.0, description="RMIA: x dominates z when LR(x) / LR(z) > gamma.")
    attack_epochs: int = Field(
        30, ge=1, le=1000, description="Epochs of the learned attack classifiers (output map, loss map)."
    )
    attack_lr: float = Field(1e-3, gt=0.0, le=1.0, description="Learning rate of the learned attack classifiers.")
    loss_map_patch: int = Field(
        16, ge=4, le=512, description="Side of the square patches the loss-map attack classifies (pixels)."
    )
    label_only_queries: int = Field(
        8, ge=0, le=256, description="Label-only attack: noisy copies of each candidate queried besides the clean one."
    )
    label_only_noise: float = Field(
        0.1, ge=0.0, le=10.0, description="Label-only attack: std of the Gaussian noise added to the (z-scored) image."
    )

    @field_validator("attacks", "per_round_attacks")
    @classmethod
    def _registered(cls, value: list[str]) -> list[str]:
        # Whether each name is a registered attack is checked by the preflight (fl_mia.preflight).
        if len(set(value)) != len(value):
            raise ValueError("lists an attack twice")
        return value

    @model_validator(mode="after")
    def _per_round_subset(self) -> "PrivacyConfig":
        extra = [name for name in self.per_round_attacks if name not in self.attacks]
        if extra:
            raise ValueError(f"per_round_attacks names {extra[0]!r}, which is not in privacy.attacks")
        return self
