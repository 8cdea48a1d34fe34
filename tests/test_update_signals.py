"""Update-based membership signals on a tiny hospital round, without Flower."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from sklearn.metrics import roc_auc_score

from fl_mia.config import TrainingConfig
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital
from fl_mia.devices import torch_threads
from fl_mia.models import build_model, get_weights, set_weights
from fl_mia.training import train_local
from fl_mia.attacker.updates.signals import (
    ALL_SIGNALS,
    gradient_alignment,
    gradient_alignment_loop,
    candidate_losses,
    loss_signals,
    update_vector,
)
from tests.conftest import tiny_raw


@pytest.fixture(scope="module")
def hospital_round():
    """A hospital trains 40 images for 20 epochs from a lightly pre-trained model."""
    cfg = build_config(tiny_raw(
        data={"image_size": 32, "phantom": {"num_patients": 700, "slices_per_patient": 1}},
        federation={"num_hospitals": 1, "patients_per_hospital": 680, "train_fraction": 0.06,
                    "heldout_fraction": 0.85, "attacker_patients": 0},
    ))
    hospital = build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed)
    torch.manual_seed(0)
    model = build_model(cfg.model, in_channels=1, classes=1)
    warmup = hospital.test.subset(np.arange(32))
    train_local(model, warmup, TrainingConfig(lr=2e-3, local_epochs=3), seed=0)
    sent = get_weights(model)
    train_local(model, hospital.train, TrainingConfig(lr=2e-3, local_epochs=20), seed=1)
    return cfg, hospital, model, sent, get_weights(model)


def round_signals(
    model: nn.Module,
    *,
    sent: list[np.ndarray],
    returned: list[np.ndarray],
    images: np.ndarray,
    masks: np.ndarray,
    dice_weight: float,
    ce_weight: float,
    with_gradient_alignment: bool = True,
) -> dict[str, np.ndarray]:
    """Every signal for one hospital and round. ``model`` is scratch space (its weights are overwritten)."""
    set_weights(model, returned)
    returned_losses = candidate_losses(model, images, masks, dice_weight=dice_weight, ce_weight=ce_weight)
    set_weights(model, sent)
    sent_losses = candidate_losses(model, images, masks, dice_weight=dice_weight, ce_weight=ce_weight)
    signals = loss_signals(sent_losses, returned_losses)
    if with_gradient_alignment:
        signals["gradient_alignment"] = gradient_alignment(
            model, [update_vector(model, sent, returned)], images, masks, dice_weight=dice_weight, ce_weight=ce_weight
        )[:, 0]
    return signals


def signals_for(model, sent, returned, images, masks):
    return round_signals(model, sent=sent, returned=returned, images=images, masks=masks, dice_weight=1.0, ce_weight=1.0)


def test_update_signals_separate_members_from_non_members(hospital_round):
    _, hospital, model, sent, returned = hospital_round
    members = hospital.train
    non_members = hospital.heldout.subset(np.arange(len(members)))
    images = np.concatenate([members.images, non_members.images])
    masks = np.concatenate([members.masks, non_members.masks])
    labels = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    scores = signals_for(model, sent, returned, images, masks)
    assert set(scores) == set(ALL_SIGNALS)
    aucs = {name: roc_auc_score(labels, s) for name, s in scores.items()}
    # Loss-based signals must separate; gradient alignment is weak on phantoms, whose
    # per-image gradients share most of their direction (see the next test for where it must work).
    assert min(aucs[name] for name in ("returned_loss", "loss_reduction", "loss_log_ratio")) > 0.7, aucs


def test_gradient_alignment_separates_when_per_image_gradients_differ():
    """One full-batch SGD step on 8 random-noise images: the update is their mean gradient,
    and a member's gradient is part of it while a non-member's is nearly orthogonal."""
    torch.manual_seed(3)
    from fl_mia.config import ModelConfig

    model = build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)
    generator = torch.Generator().manual_seed(4)
    images = torch.randn(32, 1, 32, 32, generator=generator).numpy()
    masks = (torch.rand(32, 32, 32, generator=generator) > 0.7).long().numpy()
    sent = get_weights(model)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    from fl_mia.losses import segmentation_loss

    segmentation_loss(model(torch.as_tensor(images[:8])), torch.as_tensor(masks[:8])).backward()
    optimizer.step()
    returned = get_weights(model)
    scores = signals_for(model, sent, returned, images, masks)["gradient_alignment"]
    labels = np.r_[np.ones(8), np.zeros(24)]
    assert roc_auc_score(labels, scores) > 0.95


def test_control_held_out_members_give_chance_auc(hospital_round):
    _, hospital, model, sent, returned = hospital_round
    pool = hospital.heldout  # none of these was trained on
    half = len(pool) // 2
    labels = np.r_[np.ones(half), np.zeros(len(pool) - half)]  # "members" that are not
    scores = signals_for(model, sent, returned, pool.images, pool.masks)
    for name, s in scores.items():
        assert abs(roc_auc_score(labels, s) - 0.5) < 0.05, name


def test_vectorised_alignment_equals_the_per_candidate_loop(hospital_round):
    _, hospital, model, sent, returned = hospital_round
    set_weights(model, sent)
    update = update_vector(model, sent, returned)
    other = {k: torch.flip(v, dims=[0]) for k, v in update.items()}
    images, masks = hospital.train.images[:6], hospital.train.masks[:6]
    both = gradient_alignment(model, [update, other], images, masks, dice_weight=1.0, ce_weight=1.0, chunk_size=4)
    loop = gradient_alignment_loop(model, update, images, masks, dice_weight=1.0, ce_weight=1.0)
    loop_other = gradient_alignment_loop(model, other, images, masks, dice_weight=1.0, ce_weight=1.0)
    assert both.shape == (6, 2)
    assert np.allclose(both[:, 0], loop, atol=1e-4) and np.allclose(both[:, 1], loop_other, atol=1e-4)


def test_alignment_scores_do_not_depend_on_the_thread_count(hospital_round):
    """A cell run in a Ray cluster (1 CPU, so 1 thread) must score what it scores run locally
    (every core): a threaded skinny matrix product split its sums differently and moved scores."""
    _, hospital, model, sent, returned = hospital_round
    set_weights(model, sent)
    update = update_vector(model, sent, returned)
    images, masks = hospital.train.images[:16], hospital.train.masks[:16]
    scores = []
    for threads in (1, 2, 3):
        with torch_threads(threads):
            scores.append(gradient_alignment(model, [update], images, masks, dice_weight=1.0, ce_weight=1.0))
    assert all(np.array_equal(scores[0], other) for other in scores[1:])
