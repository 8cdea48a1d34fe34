"""Dice and IoU of hard predictions: per image, lesion images only, and pooled.

Per-image Dice credits an all-empty prediction with 1 on every image whose mask is empty,
so on phantoms with ~20% lesion-free slices an untrained model already scores ~0.2. The
pooled figure (counts summed over all images) and the lesion-images-only mean do not have
that floor; all three are reported.
"""

from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch


def hard_predictions(logits: torch.Tensor) -> torch.Tensor:
    """Class index per pixel, ``[B, H, W]``: threshold 0 for one logit channel, argmax otherwise."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


def confusion_counts(predicted: torch.Tensor, masks: torch.Tensor, *, num_classes: int) -> tuple[np.ndarray, ...]:
    """tp, fp, fn per image and foreground class (smp.metrics.get_stats), each ``[B, C_fg]``."""
    if num_classes == 1:
        # smp reads dim 1 as the class axis: a binary map needs an explicit channel.
        tp, fp, fn, _ = smp.metrics.get_stats(predicted.long()[:, None], masks.long()[:, None], mode="binary")
    else:
        tp, fp, fn, _ = smp.metrics.get_stats(predicted.long(), masks.long(), mode="multiclass", num_classes=num_classes)
        tp, fp, fn = tp[:, 1:], fp[:, 1:], fn[:, 1:]  # background is not a structure to segment
    return tp.numpy(), fp.numpy(), fn.numpy()


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # Empty mask and empty prediction agree perfectly: score 1, not 0/0.
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 1.0)


def dice_iou_per_image(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, averaged over foreground classes. Each ``[B]``."""
    dice = _ratio(2 * tp, 2 * tp + fp + fn).mean(1)
    iou = _ratio(tp, tp + fp + fn).mean(1)
    return dice, iou


def summarize(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, has_foreground: np.ndarray) -> dict[str, float]:
    """Utility figures over a set of images (counts ``[N, C_fg]``, ``has_foreground`` ``[N]``)."""
    dice, iou = dice_iou_per_image(tp, fp, fn)
    tp_sum, fp_sum, fn_sum = tp.sum(0), fp.sum(0), fn.sum(0)
    return {
        "dice": float(dice.mean()) if len(dice) else float("nan"),
        "iou": float(iou.mean()) if len(iou) else float("nan"),
        "dice_pooled": float(_ratio(2 * tp_sum, 2 * tp_sum + fp_sum + fn_sum).mean()),
        "iou_pooled": float(_ratio(tp_sum, tp_sum + fp_sum + fn_sum).mean()),
        "dice_lesion_images": float(dice[has_foreground].mean()) if has_foreground.any() else float("nan"),
        "num_images": int(len(dice)),
    }
