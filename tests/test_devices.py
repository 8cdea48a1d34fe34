"""simulation.device and training.amp: where tensors go, and CPU results unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_mia.config import ConfigError
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital
from fl_mia.devices import model_device, process_device
from fl_mia.models import build_experiment_model, get_weights
from fl_mia.app.preflight import preflight
from fl_mia.training import predict_logits, train_local
from fl_mia.attacker.updates.signals import gradient_alignment
from tests.conftest import tiny_raw

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_cuda_without_gpus_for_the_hospitals_is_refused_at_load():
    with pytest.raises(ConfigError, match="gpus_per_client") as refused:
        build_config(tiny_raw(simulation={"device": "cuda"}))
    assert "\n" not in str(refused.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_on_a_machine_without_one_is_refused_by_the_preflight():
    cfg = build_config(tiny_raw(simulation={"device": "cuda", "gpus_per_client": 0.5}))
    with pytest.raises(ConfigError, match="no CUDA device"):
        preflight(cfg)


def test_auto_keeps_hospitals_on_the_cpu_unless_ray_gives_them_a_gpu():
    cfg = build_config(tiny_raw(simulation={"device": "auto", "gpus_per_client": 0}))
    assert process_device(cfg.simulation, role="hospital") == torch.device("cpu")
    cpu = build_config(tiny_raw(simulation={"device": "cpu"}))
    assert process_device(cpu.simulation, role="server") == torch.device("cpu")
    expected_server = "cuda" if torch.cuda.is_available() else "cpu"
    assert process_device(cfg.simulation, role="server").type == expected_server


def test_bf16_autocast_trains_and_differs_from_full_precision():
    results = {}
    for amp in ("off", "bf16"):
        cfg = build_config(tiny_raw(training={"amp": amp}))
        torch.manual_seed(0)
        model = build_experiment_model(cfg.model, cfg.data)
        result = train_local(model, build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed).train, cfg.training, seed=0)
        assert np.isfinite(result.train_loss)
        results[amp] = get_weights(model)
    assert any(not np.array_equal(a, b) for a, b in zip(results["off"], results["bf16"]))


def train_and_score(device: str):
    cfg = build_config(tiny_raw())
    torch.manual_seed(0)
    model = build_experiment_model(cfg.model, cfg.data, device=device)
    split = build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed).train
    result = train_local(model, split, cfg.training, seed=0)
    logits = predict_logits(model, split.images)
    update = {name: torch.ones_like(p) for name, p in model.named_parameters()}
    alignment = gradient_alignment(model, [update], split.images[:3], split.masks[:3], dice_weight=1, ce_weight=1)
    return model, result, logits, alignment


@needs_cuda
def test_training_and_attack_scoring_run_on_the_gpu_and_match_the_cpu():
    gpu_model, gpu_result, gpu_logits, gpu_alignment = train_and_score("cuda")
    assert model_device(gpu_model).type == "cuda"
    assert gpu_logits.device.type == "cpu"  # results come back to the CPU
    _, cpu_result, cpu_logits, cpu_alignment = train_and_score("cpu")
    assert gpu_result.train_loss == pytest.approx(cpu_result.train_loss, rel=0.05)
    np.testing.assert_allclose(gpu_alignment, cpu_alignment, atol=0.05)
