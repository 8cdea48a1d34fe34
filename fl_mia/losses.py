"""Segmentation loss that can return one value per image.

smp's ``DiceLoss`` averages over the batch; membership inference needs a loss per image,
so the soft Dice and the (binary) cross-entropy are computed per image here and reduced
only on request.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

_SMOOTH = 1.0


def soft_dice_loss_per_image(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 − soft Dice per image, averaged over foreground classes. Shape ``[B]``.

    ``logits`` is ``[B, 1, H, W]`` (binary, sigmoid) or ``[B, C, H, W]`` (softmax, class 0
    is background and left out of the average).
    """
    if logits.shape[1] == 1:
        probs = torch.sigmoid(logits[:, 0]).flatten(1)
        target = masks.flatten(1).to(probs.dtype)
        intersection = (probs * target).sum(1)
        return 1 - (2 * intersection + _SMOOTH) / (probs.sum(1) + target.sum(1) + _SMOOTH)
    probs = torch.softmax(logits, dim=1).flatten(2)[:, 1:]
    # One-hot by comparison, not F.one_hot: the same 0/1 values, but F.one_hot reads the
    # masks' values to check them, which torch.func.vmap (per-sample gradients) cannot trace.
    classes = torch.arange(logits.shape[1], device=masks.device)[None, :, None, None]
    target = (masks.long()[:, None] == classes).flatten(2)[:, 1:].to(probs.dtype)
    intersection = (probs * target).sum(2)
    dice = (2 * intersection + _SMOOTH) / (probs.sum(2) + target.sum(2) + _SMOOTH)
    return 1 - dice.mean(1)


def cross_entropy_per_image(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pixel-averaged BCE (one channel) or CE (several) per image. Shape ``[B]``."""
    if logits.shape[1] == 1:
        pixel = F.binary_cross_entropy_with_logits(logits[:, 0], masks.to(logits.dtype), reduction="none")
    else:
        pixel = F.cross_entropy(logits, masks.long(), reduction="none")
    return pixel.flatten(1).mean(1)


def pixel_loss_map(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel −log p(true class), ``[B, H, W]`` (the structured loss map of Segmentations-Leak)."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], masks.to(logits.dtype), reduction="none")
    return F.cross_entropy(logits, masks.long(), reduction="none")


def segmentation_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """``dice_weight · (1 − soft Dice) + ce_weight · (B)CE``, per image or batch-averaged."""
    per_image = dice_weight * soft_dice_loss_per_image(logits, masks) + ce_weight * cross_entropy_per_image(
        logits, masks
    )
    return per_image if reduction == "none" else per_image.mean()
