"""Local training and evaluation of a segmentation model on one split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fl_mia.config import TrainingConfig
from fl_mia.data import Split
from fl_mia.devices import autocast, model_device
from fl_mia.losses import segmentation_loss
from fl_mia.segmentation_metrics import confusion_counts, hard_predictions, summarize
from fl_mia.seeding import int_seed, torch_generator


@dataclass
class TrainResult:
    train_loss: float  # mean batch loss over the local run
    first_batch_loss: float  # loss on the first batch, before any step (stealth of poisoning)
    steps: int
    num_examples: int


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "nadam":
        return torch.optim.NAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def iterate_batches(num_items: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(num_items, generator=generator) if generator is not None else torch.arange(num_items)
    return list(order.split(batch_size))


def train_local(model: nn.Module, split: Split, cfg: TrainingConfig, *, seed: int, tags: tuple = ()) -> TrainResult:
    """Train ``model`` in place for ``cfg.local_epochs`` epochs over ``split``.

    The shuffling order and any dropout draw from a stream named by ``tags`` under
    ``seed``, so a hospital's round is reproducible wherever it runs.
    """
    torch.manual_seed(int_seed(seed, "train-dropout", *tags))
    device = model_device(model)
    if device.type == "cuda":  # dropout draws on the GPU come from its own generator
        torch.cuda.manual_seed(int_seed(seed, "train-dropout", *tags))
    generator = torch_generator(seed, "train-order", *tags)
    images = torch.from_numpy(split.images)
    masks = torch.from_numpy(split.masks)
    optimizer = make_optimizer(model, cfg)
    model.train()
    losses: list[float] = []
    for _ in range(cfg.local_epochs):
        for index in iterate_batches(len(split), cfg.batch_size, generator):
            if len(index) < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                continue  # BatchNorm cannot normalise a batch of one
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, cfg.amp):
                logits = model(images[index].to(device))
            loss = segmentation_loss(
                logits.float(), masks[index].to(device), dice_weight=cfg.dice_weight, ce_weight=cfg.ce_weight
            )
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return TrainResult(
        train_loss=float(np.mean(losses)) if losses else float("nan"),
        first_batch_loss=losses[0] if losses else float("nan"),
        steps=len(losses),
        num_examples=len(split),
    )


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray | torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """Eval-mode logits ``[N, C, H, W]`` for a stack of images, on the CPU whatever the model's device."""
    model.eval()
    images = torch.as_tensor(images)
    if len(images) == 0:
        return torch.zeros((0,))
    device = model_device(model)
    return torch.cat(
        [model(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    )


@torch.no_grad()
def per_image_losses(model: nn.Module, split: Split, cfg: TrainingConfig, *, batch_size: int = 64) -> np.ndarray:
    """The training loss of every image of ``split`` under ``model`` (eval mode), ``[N]``."""
    logits = predict_logits(model, split.images, batch_size=batch_size)
    return (
        segmentation_loss(
            logits, torch.from_numpy(split.masks), dice_weight=cfg.dice_weight, ce_weight=cfg.ce_weight, reduction="none"
        )
        .cpu()
        .numpy()
    )


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, split: Split, *, num_classes: int, batch_size: int = 64) -> dict[str, float]:
    """Dice and IoU of ``model`` on ``split`` (see :mod:`fl_mia.segmentation_metrics`)."""
    logits = predict_logits(model, split.images, batch_size=batch_size)
    masks = torch.from_numpy(split.masks)
    tp, fp, fn = confusion_counts(hard_predictions(logits), masks, num_classes=num_classes)
    has_foreground = (masks.flatten(1) > 0).any(1).numpy()
    return summarize(tp, fp, fn, has_foreground)
