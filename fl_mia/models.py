"""Segmentation models by name, from segmentation-models-pytorch, and their weights as arrays."""

from __future__ import annotations

import inspect
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from fl_mia.config import ExperimentConfig, ModelConfig


@lru_cache(maxsize=1)
def architecture_names() -> tuple[str, ...]:
    """smp's architectures by class name (Unet, UnetPlusPlus, FPN, DeepLabV3Plus, ...)."""
    return tuple(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


@lru_cache(maxsize=1)
def encoder_names() -> tuple[str, ...]:
    return tuple(smp.encoders.get_encoder_names())


def _architecture(name: str) -> type[nn.Module]:
    for cls in smp.MODEL_ARCHITECTURES_MAPPING.values():
        if cls.__name__ == name:
            return cls
    raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(architecture_names())}")


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the field when smp cannot build this model."""
    if cfg.arch not in architecture_names():
        raise ValueError(f"model.arch: unknown architecture {cfg.arch!r}; choose one of {', '.join(architecture_names())}")
    if cfg.encoder not in encoder_names():
        raise ValueError(
            f"model.encoder: unknown encoder {cfg.encoder!r}; choose an smp encoder such as "
            "resnet18, resnet34, mobilenet_v2, efficientnet-b0 (all: smp.encoders.get_encoder_names())"
        )
    if cfg.encoder_weights_path is not None and not cfg.encoder_weights_path.is_file():
        raise ValueError(f"model.encoder_weights_path: no such file {cfg.encoder_weights_path}")
    if cfg.encoder_weights_path is not None:
        _read_weights_file(cfg)  # fail at load, not inside a Ray actor halfway through the run


def build_experiment_model(cfg: ExperimentConfig) -> nn.Module:
    """The experiment's model: the data's channels in, one output per class of its task."""
    from fl_mia.data import input_channels, num_classes

    return build_model(cfg.model, in_channels=input_channels(cfg), classes=num_classes(cfg.data.task))


def default_decoder_channels(depth: int) -> list[int]:
    """Unet-family decoder widths: 16 at the last stage, doubling towards the bottleneck."""
    return [16 * 2 ** (depth - 1 - stage) for stage in range(depth)]


def build_model(cfg: ModelConfig, *, in_channels: int, classes: int) -> nn.Module:
    """An smp model with random encoder weights (or the user's local file); never downloads."""
    check_model_config(cfg)
    cls = _architecture(cfg.arch)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs: dict = {"encoder_name": cfg.encoder, "encoder_weights": None, "in_channels": in_channels, "classes": classes}
    if "encoder_depth" in accepted:
        kwargs["encoder_depth"] = cfg.encoder_depth
    if "decoder_channels" in accepted and accepted["decoder_channels"].annotation != "int":
        default = accepted["decoder_channels"].default
        if isinstance(default, (tuple, list)):
            kwargs["decoder_channels"] = cfg.decoder_channels or default_decoder_channels(cfg.encoder_depth)
    try:
        model = cls(**kwargs)
    except (ValueError, KeyError, AssertionError, TypeError) as error:
        raise ValueError(
            f"model: smp cannot build {cfg.arch} with encoder {cfg.encoder} at depth {cfg.encoder_depth}: {error}"
        ) from None
    _drop_unused_encoder_stages(model, in_channels=in_channels)
    if cfg.encoder_weights_path is not None:
        _load_encoder_weights(model, cfg)
    if cfg.norm == "groupnorm":
        # Opacus's fixer swaps every BatchNorm for GroupNorm (what DP-SGD needs as well).
        from opacus.validators import ModuleValidator

        model = ModuleValidator.fix(model)
    else:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = cfg.bn_momentum
    return model


def _drop_unused_encoder_stages(model: nn.Module, *, in_channels: int) -> None:
    """Replace encoder stages that a shallow ``encoder_depth`` never calls by ``nn.Identity``.

    smp keeps e.g. a ResNet's layer3/layer4 at depth 3: 10 of resnet18's 11 M parameters
    that get no gradient yet would be sent, averaged and secure-aggregated every round, and
    that Opacus rejects. A probe pass finds them by their missing gradients.
    """
    was_training = model.training
    model.eval()
    model(torch.zeros(2, in_channels, 64, 64)).sum().backward()
    for name, child in list(model.encoder.named_children()):
        params = list(child.parameters())
        if params and all(p.grad is None for p in params):
            setattr(model.encoder, name, nn.Identity())
    model.zero_grad(set_to_none=True)
    model.train(was_training)


def _read_weights_file(cfg: ModelConfig) -> dict:
    try:
        state = torch.load(cfg.encoder_weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for unreadable files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"model.encoder_weights_path: cannot read {cfg.encoder_weights_path} ({message}); "
            "save it with torch.save(model.encoder.state_dict(), path)"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"model.encoder_weights_path: {cfg.encoder_weights_path} holds a {type(state).__name__}, not a state dict; "
            "save it with torch.save(model.encoder.state_dict(), path)"
        )
    return state


def _load_encoder_weights(model: nn.Module, cfg: ModelConfig) -> None:
    state = _read_weights_file(cfg)
    expected = model.encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
    if not isinstance(state, dict) or len(usable) < len(expected):
        raise ValueError(
            f"model.encoder_weights_path: {cfg.encoder_weights_path} holds {len(usable)} of the "
            f"{len(expected)} tensors of a depth-{cfg.encoder_depth} {cfg.encoder} encoder; save model.encoder.state_dict()"
        )
    expected.update(usable)
    model.encoder.load_state_dict(expected)


# --- weights as lists of numpy arrays (Flower's wire format) --------------------------------


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Every state-dict entry, BatchNorm buffers included, in state-dict order."""
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    state = model.state_dict()
    if len(weights) != len(state):
        raise ValueError(f"got {len(weights)} arrays for a model with {len(state)} state entries")
    new_state = OrderedDict()
    for (key, current), array in zip(state.items(), weights):
        if tuple(array.shape) != tuple(current.shape):
            raise ValueError(f"{key}: shape {tuple(array.shape)} does not match the model's {tuple(current.shape)}")
        # Averaged integer buffers (BatchNorm's num_batches_tracked) come back as floats.
        new_state[key] = torch.as_tensor(np.asarray(array)).to(current.dtype)
    model.load_state_dict(new_state, strict=True)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
