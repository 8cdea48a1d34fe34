"""Every smp architecture either trains and yields per-sample gradients, or is refused at load
in one line that says why and what to choose instead (docs/architectures.md)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fl_mia.config import ConfigError
from fl_mia.config.loading import build_config
from fl_mia.losses import segmentation_loss
from fl_mia.models import architecture_names, build_experiment_model
from fl_mia.app.preflight import preflight
from fl_mia.attacker.updates import signals
from fl_mia.attacker.updates.signals import gradient_alignment, gradient_alignment_loop
from tests.conftest import tiny_raw

# The encoder each architecture is tested with, its depth and the smallest scans it takes.
WORKING = {
    "Unet": ("resnet18", 3, 32),
    "UnetPlusPlus": ("resnet18", 3, 32),
    "MAnet": ("resnet18", 3, 32),
    "Linknet": ("resnet18", 3, 32),
    "FPN": ("resnet18", 3, 32),
    "PSPNet": ("resnet18", 3, 32),
    "DeepLabV3": ("resnet18", 3, 32),
    "DeepLabV3Plus": ("resnet18", 3, 32),
    "PAN": ("resnet18", 3, 64),  # its feature pyramid halves the bottleneck three times more
    "UPerNet": ("resnet18", 3, 32),
    "Segformer": ("mit_b0", 3, 32),
    "DPT": ("tu-vit_tiny_patch16_224", 4, 32),
}
# Tens of seconds per case on two CPU cores (a 35 M-parameter DPT): run with the slow tests.
SLOW_ON_CPU = {"DPT"}

# (arch, encoder, depth) that smp cannot build or run, and a word the refusal must contain.
REFUSED = [
    ("DPT", "resnet18", 4, "timm vision-transformer"),
    ("DPT", "tu-vit_tiny_patch16_224", 3, "encoder_depth=4"),
    ("UnetPlusPlus", "mit_b0", 3, "choose another encoder"),
    ("Linknet", "mit_b0", 3, "choose another encoder"),
    ("FPN", "mit_b0", 3, "encoder_depth=5"),
]


def arch_cfg(arch: str, encoder: str, depth: int, *, task: str = "lesion", image_size: int = 32):
    return build_config(
        tiny_raw(
            data={"task": task, "image_size": image_size},
            model={"arch": arch, "encoder": encoder, "encoder_depth": depth, "norm": "groupnorm"},
        )
    )


def test_every_registered_architecture_is_covered():
    assert set(WORKING) == set(architecture_names())


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_ON_CPU else a for a in sorted(WORKING)]
)
@pytest.mark.parametrize("task", ["lesion", "organ_lesion"])
def test_architecture_trains_and_gives_per_sample_gradients(arch, task):
    encoder, depth, size = WORKING[arch]
    cfg = preflight(arch_cfg(arch, encoder, depth, task=task, image_size=size))
    torch.manual_seed(0)
    model = build_experiment_model(cfg.model, cfg.data)
    classes = 1 if task == "lesion" else 3
    images = torch.randn(3, 1, size, size)
    masks = torch.randint(0, 2 if task == "lesion" else classes, (3, size, size))
    masks = masks.float() if task == "lesion" else masks
    model.train()
    logits = model(images)
    assert logits.shape == (3, classes, size, size)
    segmentation_loss(logits, masks).backward()
    assert all(p.grad is not None for p in model.parameters()), "a parameter gets no gradient"
    model(images[:1])  # a batch of one (the last batch of a shard) must train as well
    model.zero_grad(set_to_none=True)

    update = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    vectorised = gradient_alignment(model, [update], images[:2].numpy(), masks[:2].numpy(), dice_weight=1, ce_weight=1)
    reference = gradient_alignment_loop(model, update, images[:2].numpy(), masks[:2].numpy(), dice_weight=1, ce_weight=1)
    assert np.all(np.isfinite(vectorised))
    np.testing.assert_allclose(vectorised[:, 0], reference, atol=1e-4)


@pytest.mark.parametrize(("arch", "encoder", "depth", "reason"), REFUSED)
def test_unbuildable_combination_is_refused_at_load_in_one_line(arch, encoder, depth, reason):
    with pytest.raises(ConfigError) as refused:
        preflight(arch_cfg(arch, encoder, depth))
    message = str(refused.value)
    assert "\n" not in message
    assert reason in message
    assert "model." in message or "model:" in message  # names the field or the section


def test_pan_keeps_no_norm_that_would_normalise_a_single_value():
    cfg = arch_cfg("PAN", "resnet18", 3, image_size=64)
    model = build_experiment_model(cfg.model, cfg.data)
    seen = []

    def record(module, inputs):
        shape = inputs[0].shape
        per_group = module.num_channels // module.num_groups
        seen.append(per_group * shape[-1] * shape[-2])

    for module in model.modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.register_forward_pre_hook(record)
    model.train()
    model(torch.randn(1, 1, 64, 64))  # would raise "Expected more than 1 value per channel" before
    assert seen and min(seen) > 1


def test_image_too_small_for_the_architecture_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"model: PAN .*32x32") as refused:
        preflight(arch_cfg("PAN", "resnet18", 3, image_size=32))
    assert "\n" not in str(refused.value)


class DataDependentNet(torch.nn.Module):
    """A model whose forward branches on a tensor's value: torch.func.vmap cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        out = self.conv(x)
        return out * 2 if float(out.mean()) > 0 else out


def test_gradient_alignment_falls_back_to_a_loop_and_warns_once(caplog):
    torch.manual_seed(0)
    model = DataDependentNet()
    images = torch.randn(5, 1, 8, 8).numpy()
    masks = (torch.rand(5, 8, 8) > 0.5).float().numpy()
    update = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    signals._fallback_reasons_logged.discard("DataDependentNet")
    with caplog.at_level(logging.WARNING, logger=signals.__name__):
        first = gradient_alignment(model, [update], images, masks, dice_weight=1, ce_weight=1, chunk_size=2)
        gradient_alignment(model, [update], images, masks, dice_weight=1, ce_weight=1, chunk_size=2)
    reference = gradient_alignment_loop(model, update, images, masks, dice_weight=1, ce_weight=1)
    np.testing.assert_allclose(first[:, 0], reference, atol=1e-5)
    warnings = [r for r in caplog.records if "one candidate at a time" in r.getMessage()]
    assert len(warnings) == 1
