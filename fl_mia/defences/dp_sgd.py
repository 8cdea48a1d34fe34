"""DP-SGD on one hospital with Opacus, per patient or per slice, accounted over every round.

The unit (``defences.dp_sgd.unit``) is what one clipped gradient is and so what ε protects:
'patient' (default; :mod:`fl_mia.defences.patient_dp_sgd`) samples and clips whole patients,
'slice' samples and clips single slices (Opacus's ``make_private``; a patient's ε is then only
bounded by group privacy over its slices, :func:`group_privacy`). Both paths share:

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

    sample_rate: float  # Poisson rate of one unit (patient or slice) per step
    steps_per_round: int
    total_steps: int
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str
    unit: str = "slice"  # what ε protects: "patient" or "slice"
    units: int = 0  # patients (or slices) the hospital trains on
    expected_batch: float = 0.0  # expected units per step: the noisy sum is divided by it


def plan_for(
    dp: DpSgdConfig, training: TrainingConfig, *, rounds: int, num_train: int, num_patients: int | None = None
) -> DpSgdPlan:
    """Sample rate, steps and noise of a hospital with ``num_train`` slices of ``num_patients`` patients.

    Slice unit: Opacus's batches (rate 1 / batches). Patient unit: rate = expected patients per
    step / patients (``dp.patients_per_step``, default the patients that ``training.batch_size``
    slices hold on average), with as many steps per epoch as it takes to expect every patient once.
    With a target ε the noise is solved once for every step of every round
    (what ``make_private_with_epsilon`` does for the epochs it is given), assuming the
    hospital takes part in every round — conservative when ``fraction_fit`` < 1.
    """
    if dp.unit == "patient":
        if not num_patients:
            raise ValueError("defences.dp_sgd.unit = 'patient' needs the hospital's patient ids (num_patients)")
        units = num_patients
        expected = dp.patients_per_step or max(1, round(training.batch_size * num_patients / max(num_train, 1)))
        expected = min(expected, num_patients)
        sample_rate = expected / num_patients
        batches = math.ceil(num_patients / expected)
    else:
        units = num_train
        batches = max(1, math.ceil(num_train / training.batch_size))
        sample_rate = 1.0 / batches  # Opacus's DPDataLoader: 1 / len(data_loader)
    steps_per_round = batches * training.local_epochs
    total_steps = steps_per_round * rounds
    delta = dp.delta if dp.delta is not None else default_delta(units)
    if dp.target_epsilon is not None:
        noise = noise_for_epsilon(
            target_epsilon=dp.target_epsilon, delta=delta, sample_rate=sample_rate, steps=total_steps, accountant=dp.accountant
        )
    else:
        noise = float(dp.noise_multiplier)
    return DpSgdPlan(
        sample_rate, steps_per_round, total_steps, noise, dp.max_grad_norm, delta, dp.accountant,
        unit=dp.unit, units=units, expected_batch=sample_rate * units,
    )


def plan_for_split(dp: DpSgdConfig, training: TrainingConfig, *, rounds: int, split: Split) -> DpSgdPlan:
    """:func:`plan_for` a hospital's training split (its patient ids are the hospital's own)."""
    return plan_for(dp, training, rounds=rounds, num_train=len(split), num_patients=len(np.unique(split.patient_ids)))


def group_privacy(epsilon: float, delta: float, *, group_size: int) -> tuple[float, float]:
    """(ε, δ) for a group of ``group_size`` records from an (ε, δ) guarantee for one record.

    The textbook bound (Dwork and Roth 2014, Thm 2.2 and its (ε, δ) form): k·ε and
    k·e^((k−1)ε)·δ. It is what slice-level DP-SGD says about a patient with k slices; its δ
    grows so fast that it is often vacuous (capped at 1 here: no guarantee at all).
    """
    k = max(int(group_size), 1)
    group_delta = min(1.0, k * math.exp(min((k - 1) * epsilon, 700.0)) * delta)
    return k * epsilon, group_delta


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
    plan = plan_for_split(dp, training, rounds=rounds, split=split)
    prepare_for_dp(model, split)
    torch.manual_seed(int_seed(secret, "train-dropout", *tags))
    if plan.unit == "patient":
        from fl_mia.defences.patient_dp_sgd import train_patient_dp

        result, steps, empty = train_patient_dp(model, split, training, plan=plan, secret=secret, tags=tags)
        new_history = _composed(history, plan, steps)
        epsilon = epsilon_of(new_history, delta=plan.delta, accountant=plan.accountant)
        return DpSgdRound(result, new_history, epsilon, plan, empty)
    device = model_device(model)
    dataset = TensorDataset(torch.from_numpy(split.images), torch.from_numpy(split.masks))
    loader = DataLoader(dataset, batch_size=training.batch_size, generator=torch_generator(secret, "train-order", *tags))
    optimizer = make_optimizer(model, training)
    from opacus import PrivacyEngine  # here, not at the top: a hospital without DP never imports Opacus
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


def prepare_for_dp(model: nn.Module, split: Split) -> None:
    """Check the model takes per-unit gradients; make ReLUs out of place; freeze unused weights."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not DP-SGD compatible ({errors[0]}); set model.norm = 'groupnorm'")
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False  # in-place ReLU breaks Opacus's backward hooks; weights are unchanged
    _freeze_unused(model, torch.from_numpy(split.images[:1]).to(model_device(model)))


def _composed(history: History, plan: DpSgdPlan, steps: int) -> History:
    """The accountant's history with this round's ``steps`` (same σ and rate: one entry grows)."""
    history = list(history)
    if history and (history[-1][0], history[-1][1]) == (plan.noise_multiplier, plan.sample_rate):
        noise, rate, before = history[-1]
        return history[:-1] + [(noise, rate, int(before) + steps)]
    return history + [(plan.noise_multiplier, plan.sample_rate, steps)]


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
