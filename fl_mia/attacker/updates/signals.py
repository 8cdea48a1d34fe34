"""Per-candidate membership signals from one hospital's round: the model the server sent
(θ_k) and the model it got back (θ'_k).

All signals point the same way: higher = more likely that the candidate was in the
hospital's training data this round.

- ``returned_loss``: −L(x; θ'_k), the prediction attack on the returned model;
- ``loss_reduction``: L(x; θ_k) − L(x; θ'_k);
- ``loss_log_ratio``: log L(x; θ_k) − log L(x; θ'_k), scale-free across candidates;
- ``gradient_alignment``: cos(∇L(x; θ_k), θ_k − θ'_k). Local training moves the weights
  down the members' gradients, so a member's gradient at the sent model points along the
  update. Computed for a chunk of candidates at once with ``torch.func`` (vmap of grad);
  where a model or loss cannot be vectorised (data-dependent control flow, ``.item()``),
  the same chunks are computed one candidate at a time instead, with a warning logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fl_mia.attacker.predictions.output_signals import per_image_loss
from fl_mia.attacker.updates.settings import LOSS_SIGNALS
from fl_mia.devices import model_device, torch_threads
from fl_mia.losses import segmentation_loss
from fl_mia.training import predict_logits

_log = logging.getLogger(__name__)
_fallback_reasons_logged: set[str] = set()

ALL_SIGNALS = (*LOSS_SIGNALS, "gradient_alignment")


@torch.no_grad()
def candidate_losses(
    model: nn.Module, images: np.ndarray, masks: np.ndarray, *, dice_weight: float, ce_weight: float
) -> np.ndarray:
    """Per-image training loss of every candidate under ``model`` (eval mode), ``[N]``."""
    return per_image_loss(predict_logits(model, images), masks, dice_weight=dice_weight, ce_weight=ce_weight)


def loss_signals(sent_losses: np.ndarray, returned_losses: np.ndarray) -> dict[str, np.ndarray]:
    """The three loss-based signals from the candidates' losses before and after the round."""
    eps = 1e-8
    return {
        "returned_loss": -returned_losses,
        "loss_reduction": sent_losses - returned_losses,
        "loss_log_ratio": np.log(sent_losses + eps) - np.log(returned_losses + eps),
    }


def update_vector(model: nn.Module, sent: list[np.ndarray], returned: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """θ_sent − θ_returned for every trainable parameter (buffers such as BN statistics excluded)."""
    names = list(model.state_dict().keys())
    trainable = dict(model.named_parameters())
    return {
        name: torch.as_tensor(s - r, dtype=torch.float32)
        for name, s, r in zip(names, sent, returned)
        if name in trainable
    }


# Per-sample gradients of one chunk are held at once: chunk × parameters floats. Keep that under
# ~1 GB, so a large model (DPT: 35M parameters) takes a few candidates at a time, not 32.
PER_SAMPLE_GRADIENT_FLOATS = 256 * 2**20
# Beyond a few dozen candidates a chunk only adds memory traffic: on 2 quiet CPU cores, with the
# quickstart's and threats suite's model (878k parameters), chunks of 32 took 1.16 s for 92
# scans of 64×64 (128: 1.7-1.9 s) and 5.4-5.5 s for 1006 scans of 32×32 (128: 6.0-6.5 s).
MAX_GRADIENT_CHUNK = 32


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def gradient_alignment(
    model: nn.Module,
    updates: list[dict[str, torch.Tensor]],
    images: np.ndarray,
    masks: np.ndarray,
    *,
    dice_weight: float,
    ce_weight: float,
    chunk_size: int | None = None,
) -> np.ndarray:
    """cos(∇_θ L(x; θ), update_u) for every candidate x and update u, ``[N, U]``.

    ``model`` must hold the weights that produced the updates (the model the server sent);
    hospitals that received the same model share one gradient pass. Per-sample gradients
    come from ``vmap(grad(...))`` over a chunk of candidates, so memory grows with
    ``chunk_size × parameters``, not with the candidate count (default: up to
    ``MAX_GRADIENT_CHUNK`` candidates, fewer for a model too large to hold that many gradients
    in about 1 GB).
    """
    model.eval()  # BatchNorm must use its running statistics, not the chunk's
    names = list(updates[0])
    params = {name: p.detach() for name, p in model.named_parameters() if name in updates[0]}
    frozen = {name: p.detach() for name, p in model.named_parameters() if name not in updates[0]}
    buffers = dict(model.named_buffers())
    device = model_device(model)
    # Per parameter, the updates as rows [U, numel]: dot products and norms are summed parameter
    # by parameter, so a chunk's per-sample gradients are never copied into one [B, P] matrix
    # (that copy took a sixth of the alignment's time at the threats suite's size).
    update_rows = {name: torch.stack([u[name].flatten() for u in updates]).to(device) for name in names}
    update_norms = torch.stack([rows.square().sum(1) for rows in update_rows.values()]).sum(0).sqrt()  # [U]
    total_parameters = sum(rows.shape[1] for rows in update_rows.values())
    if chunk_size is None:
        chunk_size = max(1, min(MAX_GRADIENT_CHUNK, PER_SAMPLE_GRADIENT_FLOATS // max(1, total_parameters)))

    def loss_of_one(p: dict[str, torch.Tensor], image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, ({**p, **frozen}, buffers), (image[None],))
        return segmentation_loss(logits, mask[None], dice_weight=dice_weight, ce_weight=ce_weight)

    vectorised = vmap(grad(loss_of_one), in_dims=(None, 0, 0))
    one_at_a_time = _looped(grad(loss_of_one))
    per_sample_grad = vectorised
    images_t, masks_t = torch.as_tensor(images).to(device), torch.as_tensor(masks).to(device)
    scores = []
    for part in _chunks(len(images_t), chunk_size):
        try:
            grads = per_sample_grad(params, images_t[part], masks_t[part])
        except RuntimeError as error:
            if per_sample_grad is one_at_a_time or "vmap" not in str(error):
                raise
            _log_fallback_once(model, error)
            per_sample_grad = one_at_a_time
            grads = per_sample_grad(params, images_t[part], masks_t[part])
        # One thread: a matrix product this skinny ([B, numel] × [numel, U]) is split along numel
        # across threads, so its rounding, and the scores, changed with the thread count (a cell
        # run in a Ray cluster, given 1 CPU, scored differently from the same cell run locally).
        # Single-threaded it costs ~10 ms more per chunk of 32, against ~0.4 s of gradients.
        with torch_threads(1):
            dots = sum(grads[name].flatten(1) @ update_rows[name].T for name in names)  # [B, U]
        norms = torch.stack([grads[name].flatten(1).square().sum(1) for name in names]).sum(0).sqrt()  # [B]
        cosine = dots / (norms[:, None] * update_norms[None] + 1e-12)
        scores.append(cosine.detach().cpu())
    return torch.cat(scores).numpy() if scores else np.zeros((0, len(updates)))


def _looped(per_sample: Callable) -> Callable:
    """``vmap``'s contract (a dict of stacked gradients) from one call per candidate."""

    def stacked(params: dict[str, torch.Tensor], images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        grads = [per_sample(params, image, mask) for image, mask in zip(images, masks)]
        return {name: torch.stack([g[name] for g in grads]) for name in params}

    return stacked


def _log_fallback_once(model: nn.Module, error: RuntimeError) -> None:
    reason = type(model).__name__
    if reason in _fallback_reasons_logged:
        return
    _fallback_reasons_logged.add(reason)
    _log.warning(
        "gradient_alignment: %s cannot be vectorised with torch.func.vmap (%s); "
        "computing per-sample gradients one candidate at a time (same values, slower)",
        reason,
        str(error).splitlines()[0][:120],
    )


def gradient_alignment_loop(
    model: nn.Module,
    update: dict[str, torch.Tensor],
    images: np.ndarray,
    masks: np.ndarray,
    *,
    dice_weight: float,
    ce_weight: float,
) -> np.ndarray:
    """Reference implementation, one backward pass per candidate (for tests and the benchmark)."""
    model.eval()
    params = dict(model.named_parameters())
    device = model_device(model)
    update_flat = torch.cat([update[name].flatten() for name in update]).to(device)
    scores = []
    for image, mask in zip(torch.as_tensor(images).to(device), torch.as_tensor(masks).to(device)):
        model.zero_grad(set_to_none=True)
        segmentation_loss(model(image[None]), mask[None], dice_weight=dice_weight, ce_weight=ce_weight).backward()
        gradient = torch.cat([params[name].grad.flatten() for name in update])
        scores.append(float(torch.dot(gradient, update_flat) / (gradient.norm() * update_flat.norm() + 1e-12)))
    model.zero_grad(set_to_none=True)
    return np.array(scores)
