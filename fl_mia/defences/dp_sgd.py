"""Sample-level DP-SGD on one hospital with Opacus, accounted over every round.

* GroupNorm instead of BatchNorm (``model.norm = "groupnorm"``, ``ModuleValidator.fix``);
* per-image losses (:func:`fl_mia.losses.segmentation_loss` computes Dice per image, unlike
  smp's ``DiceLoss``, which mixes the images of a batch);
* Poisson sampling (``poisson_sampling=True``): batch sizes vary and may be empty; an empty
  batch still takes a noisy step, as the analysis assumes;
* the model that leaves the client is the unwrapped module, without ``_module.`` prefixes;
* the accountant's history is handed in and returned, so the caller can keep it across
  rounds (Flower rebuilds the client object for every message: the hospital keeps it in
  the node's ``context.state``) and ε covers the whole training.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fl_mia.devices import autocast, model_device
from fl_mia.config import DpSgdConfig, TrainingConfig
from fl_mia.data import Split
from fl_mia.defences.accounting import History, default_delta, epsilon_of, noise_for_epsilon
from fl_mia.losses import segmentation_loss
from fl_mia.seeding import int_seed, torch_generator
from fl_mia.training import TrainResult, make_optimizer


@dataclass
class DpSgdPlan:
    """What one hospital's DP-SGD does each round, fixed for the whole run."""

    sample_rate: float
    steps_per_round: int
    total_steps: int
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str


def plan_for(dp: DpSgdConfig, training: TrainingConfig, *, rounds: int, num_train: int) -> DpSgdPlan:
    """Sample rate, steps and noise of a hospital with ``num_train`` training images.

    With a target ε the noise is solved once for every step of every round
    (what ``make_private_with_epsilon`` does for the epochs it is given), assuming the
    hospital takes part in every round — conservative when ``fraction_fit`` < 1.
    """
    batches = max(1, math.ceil(num_train / training.batch_size))
    sample_rate = 1.0 / batches  # Opacus's DPDataLoader: 1 / len(data_loader)
    steps_per_round = batches * training.local_epochs
    total_steps = steps_per_round * rounds
    delta = dp.delta if dp.delta is not None else default_delta(num_train)
    if dp.target_epsilon is not None:
        noise = noise_for_epsilon(
            target_epsilon=dp.target_epsilon, delta=delta, sample_rate=sample_rate, steps=total_steps, accountant=dp.accountant
        )
    else:
        noise = float(dp.noise_multiplier)
    return DpSgdPlan(sample_rate, steps_per_round, total_steps, noise, dp.max_grad_norm, delta, dp.accountant)


def train_local_dp(
    model: nn.Module,
    split: Split,
    dp: DpSgdConfig,
    training: TrainingConfig,
    *,
    rounds: int,
    history: History,
    secret: int,
    tags: tuple = (),
) -> "DpSgdRound":
    """One round of DP-SGD in place on ``model``; ``history`` is the accountant's history so far.

    ``secret`` seeds every random choice of the round — the Poisson batches, dropout and the
    Gaussian noise — and must be the hospital's own (see clients/dp_state.py): the guarantee
    assumes the server can neither subtract the noise nor tell which scans each step sampled,
    and the server holds the experiment seed.
    """
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not DP-SGD compatible ({errors[0]}); set model.norm = 'groupnorm'")
    plan = plan_for(dp, training, rounds=rounds, num_train=len(split))
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False  # in-place ReLU breaks Opacus's backward hooks; weights are unchanged
    device = model_device(model)
    _freeze_unused(model, torch.from_numpy(split.images[:1]).to(device))
    torch.manual_seed(int_seed(secret, "train-dropout", *tags))
    dataset = TensorDataset(torch.from_numpy(split.images), torch.from_numpy(split.masks))
    loader = DataLoader(dataset, batch_size=training.batch_size, generator=torch_generator(secret, "train-order", *tags))
    optimizer = make_optimizer(model, training)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        engine = PrivacyEngine(accountant=plan.accountant)
    engine.accountant.history = list(history)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*full_backward_hook.*")
        private_model, private_optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode="ew",
            noise_generator=torch_generator(secret, "dp-noise", *tags),
        )
    private_model.train()
    losses: list[float] = []
    steps = empty = 0
    for _ in range(training.local_epochs):
        for images, masks in private_loader:
            private_optimizer.zero_grad(set_to_none=True)
            if len(images):
                images, masks = images.to(device), masks.to(device)
                with autocast(device, training.amp):
                    logits = private_model(images)
                loss = segmentation_loss(
                    logits.float(), masks, dice_weight=training.dice_weight, ce_weight=training.ce_weight
                )
                loss.backward()
                losses.append(float(loss.detach()))
            else:
                empty += 1
                _zero_grad_samples(private_model)  # an empty Poisson batch: the step is pure noise
            private_optimizer.step()
            steps += 1
    private_model._close()  # remove Opacus's hooks: the plain module leaves the client
    new_history = list(engine.accountant.history)
    epsilon = epsilon_of(new_history, delta=plan.delta, accountant=plan.accountant)
    result = TrainResult(
        train_loss=float(np.mean(losses)) if losses else float("nan"),
        first_batch_loss=losses[0] if losses else float("nan"),
        steps=steps,
        num_examples=len(split),
    )
    return DpSgdRound(result, new_history, epsilon, plan, empty)


@dataclass
class DpSgdRound:
    result: TrainResult
    history: History  # the accountant's history after this round (all rounds so far)
    epsilon: float  # ε after all rounds so far, at plan.delta
    plan: DpSgdPlan
    empty_batches: int


def history_to_record(history: History) -> dict[str, list]:
    """The accountant's history as a Flower ConfigRecord-able dict (lists of numbers)."""
    return {
        "noise_multiplier": [float(n) for n, _, _ in history],
        "sample_rate": [float(q) for _, q, _ in history],
        "steps": [int(s) for _, _, s in history],
    }


def history_from_record(record) -> History:
    if record is None:
        return []
    return list(zip(record["noise_multiplier"], record["sample_rate"], record["steps"]))


def _freeze_unused(model: nn.Module, probe: torch.Tensor) -> None:
    """Stop gradients to parameters the forward pass never uses (smp keeps the encoder's
    deeper stages at ``encoder_depth`` < 5); Opacus would wait for their per-image gradients."""
    model.zero_grad(set_to_none=True)
    model.train()
    model(probe).float().sum().backward()
    for param in model.parameters():
        if param.grad is None:
            param.requires_grad_(False)
    model.zero_grad(set_to_none=True)


def _zero_grad_samples(private_model: nn.Module) -> None:
    for param in private_model.parameters():
        if param.requires_grad:
            param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype)
