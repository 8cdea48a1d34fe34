"""``[model]`` and ``[training]``: the architecture and each hospital's local recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fl_mia.config.base import Section


class ModelConfig(Section):
    """segmentation-models-pytorch architecture, encoder and normalisation."""

    arch: str = Field("Unet", description="smp architecture name, e.g. Unet, UnetPlusPlus, FPN, DeepLabV3Plus.")
    encoder: str = Field("resnet18", description="Any smp encoder name, e.g. resnet18, mobilenet_v2.")
    encoder_depth: int = Field(3, ge=3, le=5, description="Encoder stages used (fewer = faster, smaller).")
    decoder_channels: list[int] | None = Field(
        None, description="Decoder widths (Unet family); default: 16 at the last stage, doubling towards the bottleneck."
    )
    norm: Literal["batchnorm", "groupnorm"] = Field(
        "batchnorm", description="GroupNorm is needed for DP-SGD and avoids averaging running statistics."
    )
    bn_momentum: float = Field(
        0.1, gt=0.0, le=1.0, description="BatchNorm momentum (some smp encoders ship 0.01, which lags in FL)."
    )
    encoder_weights_path: Path | None = Field(
        None, description="Local file of encoder weights (state dict); nothing is ever downloaded."
    )


class TrainingConfig(Section):
    """Local training on each hospital."""

    local_epochs: int = Field(1, ge=1, le=1000, description="Epochs over the training shard per round.")
    batch_size: int = Field(8, ge=1, le=1024, description="Images per local batch.")
    optimizer: Literal["adam", "nadam", "sgd"] = Field("adam", description="Local optimiser, fresh each round.")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Local learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay.")
    dice_weight: float = Field(1.0, ge=0.0, description="Weight of the soft Dice term of the loss.")
    ce_weight: float = Field(1.0, ge=0.0, description="Weight of the BCE/CE term of the loss.")
    amp: Literal["off", "bf16"] = Field(
        "off", description="Mixed precision of the forward pass: 'bf16' autocasts on the process's device."
    )

    @model_validator(mode="after")
    def _some_loss(self) -> "TrainingConfig":
        if self.dice_weight == 0 and self.ce_weight == 0:
            raise ValueError("dice_weight and ce_weight are both 0: the loss would be constant")
        return self
