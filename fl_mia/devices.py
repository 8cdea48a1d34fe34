"""Where a process runs its tensors, from ``simulation.device``, decided in that process.

A hospital's Ray actor sees only the GPU Ray assigned to it (Ray sets ``CUDA_VISIBLE_DEVICES``
for an actor that reserves ``gpus_per_client``), so ``cuda`` there is its own GPU, shared with
other hospitals when ``gpus_per_client`` is a fraction. The server's privacy step (attacks,
shadow models, update attacks, trap fitting, poisoning) runs on the server process's device.

Models are built on the CPU (their seeded initialisation is the same everywhere) and then
moved; inputs are NumPy arrays moved batch by batch to the model's device, and results come
back to the CPU. With ``device = "cpu"`` nothing moves, so CPU runs are bit-identical to
runs made before devices existed.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
from torch import nn

from fl_mia.config import SimulationConfig

Role = Literal["hospital", "server"]


def process_device(simulation: SimulationConfig, *, role: Role) -> torch.device:
    """The device this process computes on.

    ``auto``: CUDA when torch finds a device — for hospitals only when Ray reserved GPUs for
    them (``gpus_per_client > 0``), otherwise the actors would crowd onto GPUs nobody gave
    them; ``cpu``: always the CPU; ``cuda``: the process's (first visible) GPU.
    """
    if simulation.device == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if simulation.device == "cuda":
        if not available:
            raise RuntimeError("simulation.device='cuda' but torch finds no CUDA device in this process")
        return torch.device("cuda")
    if role == "hospital" and simulation.gpus_per_client == 0:
        return torch.device("cpu")
    return torch.device("cuda") if available else torch.device("cpu")


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def autocast(device: torch.device, amp: str):
    """bf16 mixed precision for the forward pass when ``training.amp = "bf16"``; else nothing."""
    if amp == "off":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` CPU threads, then restore the process's count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
