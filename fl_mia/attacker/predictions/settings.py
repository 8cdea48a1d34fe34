"""Attacks on predictions by name, each with its own settings table (``[attacker.<name>]``).

A light module (pydantic and :mod:`fl_mia.registry` only): the config takes the allowed
names of ``attacker.prediction_attacks`` and the attacks' tables from ``PREDICTION_ATTACKS``
without importing torch. Each factory, imported on first use, is called as
``factory(settings, seed=..., classes=..., shadow_models=...)`` and returns an unfitted
:class:`~fl_mia.attacker.predictions.base.MembershipAttack`; it takes the keywords it uses
and ignores the others. A further attack (a plug-in, a test double) is added with
``PREDICTION_ATTACKS.register`` before the config is loaded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fl_mia.registry import PluginSettings, Registry

PREDICTION_ATTACKS = Registry("prediction attack", key="attacker.prediction_attacks")


class LearnedSettings(PluginSettings):
    """A classifier trained on the shadow model's output maps."""

    epochs: int = Field(30, ge=1, le=1000, description="Epochs of the attack classifier.")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Learning rate of the attack classifier.")


class LossMapSettings(LearnedSettings):
    """A classifier trained on patches of the shadow model's per-pixel loss."""

    patch: int = Field(16, ge=4, le=512, description="Side of the square patches the classifier reads (pixels).")


class LiraSettings(PluginSettings):
    """Likelihood-ratio attack from Gaussians fitted on the shadow models' confidences."""

    global_variance: Literal["auto", "always", "never"] = Field(
        "auto", description="One pooled variance for all candidates ('auto': when attacker.shadows.models < 64)."
    )


class RmiaSettings(PluginSettings):
    """Relative membership inference against population scans (Zarifzadeh et al. 2024)."""

    offline_a: float = Field(
        0.3, ge=0.0, le=1.0,
        description="Offline: Pr(x) ≈ ½((1 + a)·Pr_OUT(x) + (1 − a)) from OUT-only reference models.",
    )
    gamma: float = Field(1.0, gt=0.0, description="x dominates z when LR(x) / LR(z) > gamma.")


class LabelOnlySettings(PluginSettings):
    """Agreement of the served hard masks with the true ones, under noisy queries."""

    queries: int = Field(8, ge=0, le=256, description="Noisy copies of each candidate queried besides the clean one.")
    noise: float = Field(0.1, ge=0.0, le=10.0, description="Std of the Gaussian noise added to the (z-scored) image.")


_MODULE = "fl_mia.attacker.predictions"
PREDICTION_ATTACKS.register(
    "loss", summary="the candidate's loss against a threshold calibrated on a shadow model",
    factory=f"{_MODULE}.loss_threshold:LossThresholdAttack.from_settings",
)
PREDICTION_ATTACKS.register(
    "learned_type1", summary="a classifier on the output map", settings=LearnedSettings,
    factory=f"{_MODULE}.learned:OutputMapAttack.without_mask",
)
PREDICTION_ATTACKS.register(
    "learned_type2", summary="a classifier on the output map and the true mask", settings=LearnedSettings,
    factory=f"{_MODULE}.learned:OutputMapAttack.with_mask",
)
PREDICTION_ATTACKS.register(
    "loss_map", summary="a classifier on patches of the per-pixel loss", settings=LossMapSettings,
    factory=f"{_MODULE}.learned:LossMapAttack.from_settings",
)
PREDICTION_ATTACKS.register(
    "lira_offline", summary="LiRA from OUT shadow models only", settings=LiraSettings,
    factory=f"{_MODULE}.lira:LiRAAttack.offline_from_settings",
)
PREDICTION_ATTACKS.register(
    "lira_online", summary="LiRA from IN and OUT shadow models", settings=LiraSettings,
    factory=f"{_MODULE}.lira:LiRAAttack.online_from_settings",
)
PREDICTION_ATTACKS.register(
    "rmia", summary="relative membership inference against population scans", settings=RmiaSettings,
    factory=f"{_MODULE}.rmia:RMIAAttack.from_settings",
)
PREDICTION_ATTACKS.register(
    "label_only", summary="agreement of the served hard masks under noisy queries", settings=LabelOnlySettings,
    factory=f"{_MODULE}.label_only:LabelOnlyAttack.from_settings",
)
