"""Patient-level DP-SGD on one hospital: Poisson-sampled patients, one clipped gradient per patient.

User-level DP (McMahan, Ramage, Talwar and Zhang, ICLR 2018) inside one hospital: the unit
whose presence ε hides is a patient, with all of its slices. Each step

1. samples every patient of the hospital independently with probability q (Poisson: the
   number of patients varies and may be 0, as the accountant assumes);
2. forms each sampled patient's gradient: the gradient of the mean loss over its slices
   (Opacus's per-sample gradients of the slices, weighted 1/k and summed by patient);
3. clips each patient's gradient to ``max_grad_norm``, sums, adds N(0, σ²·C²) and divides by
   the expected number of patients q·P (Opacus's ``DPOptimizer`` does 3 on the per-patient rows);
4. steps the local optimiser.

The accountant then composes subsampled Gaussian mechanisms with rate q per step, exactly as
for slices, but the records are patients: ε is per patient.
"""

from __future__ import annotations

import numpy as np
import torch
from opacus.grad_sample import GradSampleModuleExpandedWeights
from opacus.optimizers import DPOptimizer
from torch import nn

from fl_mia.config import TrainingConfig
from fl_mia.data import Split
from fl_mia.devices import autocast, model_device
from fl_mia.losses import segmentation_loss
from fl_mia.seeding import torch_generator
from fl_mia.training import TrainResult, make_optimizer


def sample_patients(patients: np.ndarray, *, rate: float, generator: torch.Generator) -> np.ndarray:
    """Each patient independently with probability ``rate`` (Poisson sampling of patients)."""
    keep = torch.rand(len(patients), generator=generator).numpy() < rate
    return patients[keep]


def patient_gradient_rows(
    private_model: GradSampleModuleExpandedWeights,
    images: torch.Tensor,
    masks: torch.Tensor,
    patient_ids: np.ndarray,
    training: TrainingConfig,
) -> float:
    """Backpropagate the batch and leave one gradient row per patient in every ``grad_sample``.

    A patient's row is the gradient of the mean loss over its slices in the batch: slice
    losses weighted 1/k (``loss_reduction="sum"`` keeps them unscaled), per-slice gradients
    summed by patient. Returns the batch's loss, averaged over patients.
    """
    _, inverse, counts = np.unique(patient_ids, return_inverse=True, return_counts=True)
    device = images.device
    index = torch.from_numpy(inverse).to(device)
    weights = 1.0 / torch.from_numpy(counts).to(device=device, dtype=torch.float32)[index]
    with autocast(device, training.amp):
        logits = private_model(images)
    per_slice = segmentation_loss(
        logits.float(), masks, dice_weight=training.dice_weight, ce_weight=training.ce_weight, reduction="none"
    )
    (per_slice * weights).sum().backward()
    for param in private_model.parameters():
        if param.requires_grad and param.grad_sample is not None:
            rows = torch.zeros((len(counts), *param.shape), dtype=param.grad_sample.dtype, device=param.grad_sample.device)
            param.grad_sample = rows.index_add_(0, index, param.grad_sample)
    return float((per_slice * weights).sum().detach()) / len(counts)


def make_patient_optimizer(
    model: nn.Module, training: TrainingConfig, *, noise_multiplier: float, max_grad_norm: float, expected_patients: float,
    noise_generator: torch.Generator,
) -> DPOptimizer:
    """Opacus's DP optimiser over per-patient rows: clip each row, sum, add σ·C noise, divide by q·P."""
    return DPOptimizer(
        make_optimizer(model, training),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_patients,
        loss_reduction="mean",
        generator=noise_generator,
    )


def wrap_for_patient_gradients(model: nn.Module) -> GradSampleModuleExpandedWeights:
    """Per-slice gradients of ``model`` (its weights are shared, not copied).

    Opacus's ExpandedWeights mode, as the slice path uses: the hook mode rejects the in-place
    residual additions of smp's ResNet encoders. ``loss_reduction="sum"``: a row is the
    gradient of the slice's own (weighted) loss, not scaled by the batch size.
    """
    return GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="sum")


def train_patient_dp(
    model: nn.Module, split: Split, training: TrainingConfig, *, plan, secret: int, tags: tuple
) -> tuple[TrainResult, int, int]:
    """One round of patient-level DP-SGD in place on ``model``: (result, steps, empty steps).

    ``plan`` is the hospital's :class:`fl_mia.defences.dp_sgd.DpSgdPlan` (unit 'patient');
    ``secret`` seeds the patient sampling and the noise (the hospital's own, never the server's).
    """
    device = model_device(model)
    private_model = wrap_for_patient_gradients(model)
    optimizer = make_patient_optimizer(
        model, training, noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm,
        expected_patients=plan.expected_batch, noise_generator=torch_generator(secret, "dp-noise", *tags),
    )
    sampler = torch_generator(secret, "patient-sampling", *tags)
    patients = np.unique(split.patient_ids)
    private_model.train()
    losses: list[float] = []
    empty = 0
    for _ in range(plan.steps_per_round):
        optimizer.zero_grad(set_to_none=True)
        rows = np.flatnonzero(np.isin(split.patient_ids, sample_patients(patients, rate=plan.sample_rate, generator=sampler)))
        if len(rows):
            images = torch.from_numpy(split.images[rows]).to(device)
            masks = torch.from_numpy(split.masks[rows]).to(device)
            losses.append(patient_gradient_rows(private_model, images, masks, split.patient_ids[rows], training))
        else:
            empty += 1
            for param in private_model.parameters():  # no patient sampled: the step is pure noise
                if param.requires_grad:
                    param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype, device=param.device)
        optimizer.step()
    private_model._close()  # remove Opacus's hooks: the plain module leaves the hospital
    result = TrainResult(
        train_loss=float(np.mean(losses)) if losses else float("nan"),
        first_batch_loss=losses[0] if losses else float("nan"),
        steps=plan.steps_per_round,
        num_examples=len(split),
    )
    return result, plan.steps_per_round, empty
