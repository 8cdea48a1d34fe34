"""DP-SGD noise is the hospital's secret: a server that knows the experiment seed cannot regenerate it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from clients.dp_state import SECRET_ENVIRONMENT_VARIABLE, SECRET_NODE_CONFIG_KEY, train_dp_sgd
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital
from fl_mia.defences.dp_sgd import train_local_dp
from fl_mia.models import build_model, get_weights
from tests.conftest import tiny_raw

TAGS = (1, 0)  # round 1, hospital 0


def dp_cfg():
    return build_config(tiny_raw(defences={"dp_sgd": {"enabled": True, "noise_multiplier": 1.0}}))


def sent_model(cfg):
    torch.manual_seed(0)
    return build_model(cfg.model, in_channels=1, classes=1)


def hospital_update(cfg, split, *, node_config=None) -> list[np.ndarray]:
    """What hospital 0 returns after one DP-SGD round, with a fresh node state (a new run)."""
    model = sent_model(cfg)
    train_dp_sgd(model, split, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, node_state=RecordDict(), node_config=node_config or {}, partition_id=0, tags=TAGS)
    return get_weights(model)


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def setting():
    cfg = dp_cfg()
    return cfg, build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed).train


def test_server_knowing_the_seed_cannot_regenerate_the_noise(setting, monkeypatch):
    cfg, split = setting
    monkeypatch.delenv(SECRET_ENVIRONMENT_VARIABLE, raising=False)
    returned = hospital_update(cfg, split)
    # The server's best guesses: everything it holds (the seed, the config, the round and
    # hospital tags, the data if it had it) with the seeds the code used to derive from them.
    for guess in (cfg.seed, 0, 1):
        model = sent_model(cfg)
        train_local_dp(model, split, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, history=[], secret=guess, tags=TAGS)
        assert not same(get_weights(model), returned), f"the update was regenerated from secret {guess}"
    # Nor is the update a function of what the server holds: a second run differs by its noise.
    assert not same(hospital_update(cfg, split), returned)


def test_a_hospital_side_secret_makes_dp_runs_reproducible(setting, monkeypatch):
    cfg, split = setting
    monkeypatch.setenv(SECRET_ENVIRONMENT_VARIABLE, "kept-by-the-hospitals")
    first, again = hospital_update(cfg, split), hospital_update(cfg, split)
    assert same(first, again)
    monkeypatch.setenv(SECRET_ENVIRONMENT_VARIABLE, "another-secret")
    assert not same(hospital_update(cfg, split), first)
    # A SuperNode's own --node-config wins over the environment.
    from_node = hospital_update(cfg, split, node_config={SECRET_NODE_CONFIG_KEY: "node-secret"})
    assert same(from_node, hospital_update(cfg, split, node_config={SECRET_NODE_CONFIG_KEY: "node-secret"}))
    assert not same(from_node, first)


def test_training_losses_stay_on_the_hospital_under_dp_sgd(setting, monkeypatch):
    from clients.client_app import hospital_client

    cfg, _ = setting
    client = hospital_client(cfg, 0, RecordDict(), {})
    _, _, metrics = client.fit(get_weights(sent_model(cfg)), {"server_round": 1})
    assert "train_loss" not in metrics and "first_batch_loss" not in metrics
    assert "dp_epsilon" in metrics
    plain = hospital_client(build_config(tiny_raw()), 0, RecordDict(), {})
    _, _, metrics = plain.fit(get_weights(sent_model(cfg)), {"server_round": 1})
    assert "train_loss" in metrics  # without DP-SGD the server sees it, as before
