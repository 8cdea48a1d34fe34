"""Segmentation models by name, from segmentation-models-pytorch, and their weights as arrays."""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from fl_mia.config import DataConfig, ModelConfig


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


# --- what an architecture needs of its encoder --------------------------------------------
# Each rule returns why smp cannot build (or run) the architecture as configured and what to
# choose instead, or None. Checked at load, so that a refusal is one line from the CLI, not
# an exception inside a hospital's Ray actor.


def _dpt_needs_a_timm_vit(cfg: ModelConfig) -> str | None:
    if cfg.encoder.startswith("tu-"):
        return None
    return (
        f"model.encoder: DPT takes only timm vision-transformer encoders ('tu-' names such as "
        f"tu-vit_tiny_patch16_224), not {cfg.encoder}; choose such an encoder or another arch (Unet, FPN, Segformer)"
    )


def _dpt_needs_depth_4(cfg: ModelConfig) -> str | None:
    if cfg.encoder_depth == 4:
        return None
    return f"model.encoder_depth: DPT reads four transformer stages; set model.encoder_depth=4, not {cfg.encoder_depth}"


ARCHITECTURE_RULES: dict[str, tuple] = {
    "DPT": (_dpt_needs_a_timm_vit, _dpt_needs_depth_4),
}


def _architecture_kwargs(cfg: ModelConfig) -> dict:
    """Constructor arguments an architecture's head needs at the configured encoder depth."""
    if cfg.arch == "FPN":
        # FPN's head upsamples its finest pyramid level by a fixed 4, which is right only when
        # that level is the stride-4 stage of a depth-5 encoder. Its pyramid is always the last
        # four encoder stages, so at depth d the finest is at stride 2**(d-3).
        return {"upsampling": 2 ** (cfg.encoder_depth - 3)}
    if cfg.arch == "DPT":
        # timm ViTs are built for one image size (224 for most); scans come in others.
        return {"dynamic_img_size": True}
    return {}


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the field when smp cannot build this model."""
    if cfg.arch not in architecture_names():
        raise ValueError(f"model.arch: unknown architecture {cfg.arch!r}; choose one of {', '.join(architecture_names())}")
    if cfg.encoder not in encoder_names() and not cfg.encoder.startswith("tu-"):
        raise ValueError(
            f"model.encoder: unknown encoder {cfg.encoder!r}; choose an smp encoder such as "
            "resnet18, resnet34, mobilenet_v2, efficientnet-b0 (all: smp.encoders.get_encoder_names())"
        )
    for rule in ARCHITECTURE_RULES.get(cfg.arch, ()):
        refusal = rule(cfg)
        if refusal is not None:
            raise ValueError(refusal)
    if cfg.encoder_weights_path is not None and not cfg.encoder_weights_path.is_file():
        raise ValueError(f"model.encoder_weights_path: no such file {cfg.encoder_weights_path}")
    if cfg.encoder_weights_path is not None:
        _read_weights_file(cfg)  # fail at load, not inside a Ray actor halfway through the run


def build_experiment_model(model: ModelConfig, data: DataConfig, *, device: torch.device | str = "cpu") -> nn.Module:
    """The experiment's model: the data's channels in, one output per class of its task.

    Built on the CPU (the same seeded initialisation everywhere), then moved to ``device``.
    """
    from fl_mia.data import input_channels, num_classes

    built = build_model(model, in_channels=input_channels(data), classes=num_classes(data.task), image_size=data.image_size)
    return built.to(device)


_MODELS_THAT_RAN: set[tuple] = set()


def check_model_runs(model_cfg: ModelConfig, data: DataConfig) -> None:
    """Build the experiment's model and pass two blank scans through it; ``ValueError`` in one line.

    What only a forward pass reveals (a head whose output is not the input's size, an encoder
    too deep for the image) is found here, at load, instead of in a hospital's first round.
    A shape that passed once in this process is not built again: a suite's cells mostly share
    one model, and building it per cell made loading a 50-cell suite take ~10 s. A local
    weights file is read every time (it may have changed).
    """
    from fl_mia.data import input_channels, num_classes

    size, classes = data.image_size, num_classes(data.task)
    shape = (model_cfg.model_dump_json(), input_channels(data), classes, size)
    if model_cfg.encoder_weights_path is None and shape in _MODELS_THAT_RAN:
        return
    described = f"model: {model_cfg.arch} with encoder {model_cfg.encoder} at depth {model_cfg.encoder_depth}"
    try:
        model = build_experiment_model(model_cfg, data)  # its probe pass runs at the configured image size
    except (RuntimeError, AssertionError) as error:  # build_model's own ValueErrors are one line already
        first_line = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ValueError(
            f"{described} cannot segment {size}x{size} scans ({first_line}); "
            "try a smaller model.encoder_depth or a larger data.image_size (a multiple of 32)"
        ) from None
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, input_channels(data), size, size))
    except (RuntimeError, ValueError, AssertionError) as error:
        first_line = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ValueError(
            f"{described} cannot segment {size}x{size} scans ({first_line}); "
            "try a smaller model.encoder_depth or a larger data.image_size (a multiple of 32)"
        ) from None
    if tuple(output.shape) != (2, classes, size, size):
        raise ValueError(
            f"{described} returns maps of shape {tuple(output.shape[1:])} for {size}x{size} scans, "
            f"not ({classes}, {size}, {size}); choose another architecture or encoder_depth"
        )
    _MODELS_THAT_RAN.add(shape)


def default_decoder_channels(depth: int) -> list[int]:
    """Unet-family decoder widths: 16 at the last stage, doubling towards the bottleneck."""
    return [16 * 2 ** (depth - 1 - stage) for stage in range(depth)]


def build_model(cfg: ModelConfig, *, in_channels: int, classes: int, image_size: int = 64) -> nn.Module:
    """An smp model with random encoder weights (or the user's local file); never downloads.

    ``image_size`` is the side of the scans it will see: which normalisation layers would
    normalise a single value (see :func:`_probe_and_prune`) depends on it.
    """
    check_model_config(cfg)
    cls = _architecture(cfg.arch)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs: dict = {"encoder_name": cfg.encoder, "encoder_weights": None, "in_channels": in_channels, "classes": classes}
    if "encoder_depth" in accepted:
        kwargs["encoder_depth"] = cfg.encoder_depth
    kwargs.update(_architecture_kwargs(cfg))
    if "decoder_channels" in accepted and accepted["decoder_channels"].annotation != "int":
        default = accepted["decoder_channels"].default
        if isinstance(default, (tuple, list)):
            kwargs["decoder_channels"] = cfg.decoder_channels or default_decoder_channels(cfg.encoder_depth)
    try:
        model = cls(**kwargs)
    except (ValueError, KeyError, AssertionError, TypeError) as error:
        raise ValueError(
            f"model: smp cannot build {cfg.arch} with encoder {cfg.encoder} at depth {cfg.encoder_depth}: "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}; choose another encoder "
            "(resnet18, resnet34, efficientnet-b0, mobilenet_v2) or architecture (see docs/architectures.md)"
        ) from None
    _probe_and_prune(model, in_channels=in_channels, image_size=image_size)
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


def model_to_load(cfg: ModelConfig, *, in_channels: int, classes: int, image_size: int = 64) -> nn.Module:
    """A model of this shape for weights the caller loads into it before use (a hospital's).

    Flower builds a new client for every message a hospital gets (properties, fit, evaluate),
    and :func:`build_model`'s probe pass, pruning and GroupNorm swap cost ~0.2 s each time: a
    quarter of a small hospital's round. So the model is built once per process and each caller
    gets its own copy. Its initial weights are the first build's, not a fresh draw: never use it
    where the initialisation matters (shadow and reference models train from scratch).
    """
    return copy.deepcopy(_model_template(cfg.model_dump_json(), in_channels, classes, image_size))


@lru_cache(maxsize=4)
def _model_template(model_json: str, in_channels: int, classes: int, image_size: int) -> nn.Module:
    return build_model(ModelConfig.model_validate_json(model_json), in_channels=in_channels, classes=classes, image_size=image_size)


def _probe_and_prune(model: nn.Module, *, in_channels: int, image_size: int) -> None:
    """One probe pass on blank scans; then remove what it shows to be dead or degenerate.

    - Encoder stages that a shallow ``encoder_depth`` never calls become ``nn.Identity``:
      smp keeps e.g. a ResNet's layer3/layer4 at depth 3, 10 of resnet18's 11 M parameters
      that get no gradient yet would be sent, averaged and secure-aggregated every round,
      and that Opacus rejects. They are found by their missing gradients.
    - Normalisation layers that would normalise a single value per image become
      ``nn.Identity``: a norm after a global average pool (PAN's FPA and GAU blocks), or at
      the 1x1 bottom of PAN's pyramid on small scans. There a GroupNorm maps every input to
      its bias (the branch is silent) and fails outright on a batch of one ("Expected more
      than 1 value per channel when training"); a BatchNorm normalises across the few images
      of a batch, and fails on a batch of one. smp drops the norm for the same reason in
      PSPNet's 1x1 pooling branch.
    """
    degenerate: list[str] = []

    def record_if_degenerate(name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            shape = inputs[0].shape
            values_per_sample = shape[-1] * shape[-2] if len(shape) == 4 else 1
            if isinstance(module, nn.GroupNorm):
                values_per_sample *= module.num_channels // module.num_groups
            if values_per_sample == 1:
                degenerate.append(name)

        return hook

    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    handles = [
        module.register_forward_pre_hook(record_if_degenerate(name))
        for name, module in model.named_modules()
        if isinstance(module, norms)
    ]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(2, in_channels, image_size, image_size)).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    _replace_unused(model.encoder)
    for name in dict.fromkeys(degenerate):
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, nn.Identity())
    model.zero_grad(set_to_none=True)
    model.train(was_training)


def _replace_unused(encoder: nn.Module) -> None:
    """Swap the encoder's stages whose parameters all got no gradient for ``nn.Identity``.

    Only whole stages: the encoder's children, and those of a timm encoder's wrapped model
    (``encoder.model``). Deeper, a block's caller may pass it more than one argument
    (EfficientNet's blocks take a drop-connect rate), which ``nn.Identity`` does not accept.
    """
    parents = [encoder]
    if isinstance(getattr(encoder, "model", None), nn.Module):
        parents.append(encoder.model)
    for parent in parents:
        for name, child in list(parent.named_children()):
            params = list(child.parameters())
            if params and all(p.grad is None for p in params):
                setattr(parent, name, nn.Identity())


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
