"""A 2-round federation per architecture family, every update attack on (tiny sizes).

Through the real ServerApp federation and ClientApp hospitals, in one process (the tests'
InProcessGrid, no Ray): what differs between architectures is the model work, not the
transport, which tests/test_end_to_end.py covers with Ray. Scans are 32×32, the smallest
size every family builds at (PAN's pyramid needs 64; tests/test_architectures.py checks the
sizes), which keeps these 16 federations a small share of the CI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from clients.client_app import make_client_app
from fl_mia.config.loading import build_config
from fl_mia.app.preflight import preflight
from fl_mia.run_folder import create_run_folder
from server.federation import run_federation
from tests.conftest import tiny_raw
from server.inprocess_grid import InProcessGrid

FAMILIES = {  # encoder, depth, image size
    "Unet": ("resnet18", 3, 32),
    "UnetPlusPlus": ("efficientnet-b0", 3, 32),
    "Linknet": ("resnet34", 3, 32),
    "MAnet": ("mobilenet_v2", 3, 32),
    "FPN": ("resnet18", 3, 32),
    "PSPNet": ("resnet18", 3, 32),
    "DeepLabV3Plus": ("resnet18", 3, 32),
    "PAN": ("resnet18", 3, 64),  # its feature pyramid halves the bottleneck three times more
    "UPerNet": ("resnet18", 3, 32),
    "Segformer": ("mit_b0", 3, 32),
    "DPT": ("tu-vit_tiny_patch16_224", 4, 32),
}


def run_two_rounds(tmp_path, arch: str, *, task: str):
    encoder, depth, size = FAMILIES[arch]
    cfg = preflight(
        build_config(
            tiny_raw(
                data={"task": task, "image_size": size},
                model={"arch": arch, "encoder": encoder, "encoder_depth": depth, "norm": "groupnorm"},
                attacker={"update_attacks": ["returned_loss", "loss_reduction", "loss_log_ratio", "gradient_alignment"],
                          "shadows": {"epochs": 1}},
            )
        )
    )
    run_dir = create_run_folder(cfg.name, runs_root=tmp_path)
    grid = InProcessGrid(make_client_app(cfg), cfg.federation.num_hospitals, seed=cfg.seed)
    context = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    run_federation(grid, context, cfg, run_dir, on_round_end=lambda _progress: None)
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def assert_every_attack_scored(run_dir, metrics):
    assert metrics["rounds_completed"] == 2
    assert 0.0 <= metrics["utility"]["dice"] <= 1.0
    scores = np.load(run_dir / "scores.npz")
    update_scores = [name for name in scores.files if "gradient_alignment" in name]
    assert update_scores, f"no gradient-alignment scores in {scores.files}"
    for name in scores.files:
        if name.startswith("update_matrix."):  # NaN where a hospital was not observed
            assert np.isfinite(scores[name]).any(), name
        else:
            assert np.all(np.isfinite(scores[name])), name


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_two_round_federation_with_update_attacks(tmp_path, arch):
    assert_every_attack_scored(*run_two_rounds(tmp_path, arch, task="lesion"))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus", "Segformer", "PAN"])
def test_organ_lesion_with_every_update_attack(tmp_path, arch):
    assert_every_attack_scored(*run_two_rounds(tmp_path, arch, task="organ_lesion"))
