"""Per-image signals computed from a model's outputs and the candidates' masks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fl_mia.losses import pixel_loss_map, segmentation_loss


def per_image_loss(logits: torch.Tensor, masks: np.ndarray, *, dice_weight: float, ce_weight: float) -> np.ndarray:
    """The hospitals' training loss of every image, ``[N]``."""
    return (
        segmentation_loss(
            logits, torch.as_tensor(masks), dice_weight=dice_weight, ce_weight=ce_weight, reduction="none"
        )
        .cpu()
        .numpy()
        .astype(np.float64)
    )


def log_true_class_probability(logits: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """log p(true class) per pixel, ``[N, H, W]`` (minus the structured loss map)."""
    return -pixel_loss_map(logits, torch.as_tensor(masks))


def log_other_class_probability(logits: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """log (1 − p(true class)) per pixel, computed without cancellation, ``[N, H, W]``."""
    masks = torch.as_tensor(masks).long()
    if logits.shape[1] == 1:
        # For one logit z: 1 − p(y) is sigmoid(−z) if y = 1 and sigmoid(z) if y = 0.
        signed = torch.where(masks == 1, -logits[:, 0], logits[:, 0])
        return F.logsigmoid(signed)
    log_probs = torch.log_softmax(logits, dim=1)
    true_class = F.one_hot(masks, logits.shape[1]).permute(0, 3, 1, 2).bool()
    return torch.logsumexp(log_probs.masked_fill(true_class, float("-inf")), dim=1)


def logit_mean_confidence(logits: torch.Tensor, masks: np.ndarray) -> np.ndarray:
    """LiRA's per-image signal: logit of the mean per-pixel confidence in the true label, ``[N]``.

    φ = log(mean p_y) − log(mean (1 − p_y)); both means are taken in log space so that a
    confident model (1 − p_y ≈ 1e-9) does not round φ to infinity.
    """
    pixels = logits.shape[-1] * logits.shape[-2]
    log_mean_true = torch.logsumexp(log_true_class_probability(logits, masks).flatten(1), dim=1) - np.log(pixels)
    log_mean_other = torch.logsumexp(log_other_class_probability(logits, masks).flatten(1), dim=1) - np.log(pixels)
    return (log_mean_true - log_mean_other).cpu().numpy().astype(np.float64)


def probability_maps(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``[N, C, H, W]`` (sigmoid for one channel, softmax otherwise)."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def mask_channels(masks: np.ndarray, classes: int) -> torch.Tensor:
    """The ground truth as channels: the mask itself (binary) or its one-hot encoding."""
    masks = torch.as_tensor(masks).long()
    if classes == 1:
        return masks[:, None].float()
    return F.one_hot(masks, classes).permute(0, 3, 1, 2).float()
