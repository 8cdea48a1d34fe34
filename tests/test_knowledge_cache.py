"""The attacker's knowledge shared by a suite's cells: content-addressed, equal to a solo run's."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fl_mia.attacker.knowledge_cache import KNOWLEDGE_CACHE_ENV, content_key
from fl_mia.config.loading import build_config
from fl_mia.data import Split, build_hospital
from server.federation import make_shadow_store
from tests.conftest import tiny_raw


@pytest.fixture(scope="module")
def cfg():
    return build_config(tiny_raw(attacker={"shadows": {"epochs": 2}}))


@pytest.fixture(scope="module")
def data(cfg):
    return build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed).train


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if torch.is_floating_point(p)])


def test_a_second_cell_loads_the_first_cells_shadow_which_equals_one_trained_alone(cfg, data, tmp_path, monkeypatch):
    monkeypatch.setenv(KNOWLEDGE_CACHE_ENV, str(tmp_path / "knowledge"))
    first = make_shadow_store(cfg, tmp_path / "a" / "shadows")
    trained = first.train("reference", data)
    second = make_shadow_store(cfg, tmp_path / "b" / "shadows")
    loaded = second.train("reference", data)
    assert "reference" in first.train_seconds and second.train_seconds == {}, "the second cell trained again"
    assert (tmp_path / "b" / "shadows" / "reference.pt").is_file()  # each run folder stays complete
    monkeypatch.delenv(KNOWLEDGE_CACHE_ENV)
    alone = make_shadow_store(cfg, tmp_path / "alone" / "shadows").train("reference", data)
    assert torch.equal(flat(loaded), flat(trained)) and torch.equal(flat(alone), flat(trained))


def test_training_or_loading_a_shadow_leaves_the_run_the_same_random_stream(cfg, data, tmp_path, monkeypatch):
    """A cell that loads its shadows from the suite must draw what a cell that trained them draws
    afterwards (a poisoner's initialisation, say): both leave torch's generator where it was."""
    monkeypatch.setenv(KNOWLEDGE_CACHE_ENV, str(tmp_path / "knowledge"))
    after = {}
    for cell in ("trains", "loads"):
        torch.manual_seed(123)
        store = make_shadow_store(cfg, tmp_path / cell / "shadows")
        store.train("reference", data)
        after[cell] = (torch.get_rng_state(), "reference" in store.train_seconds)
    assert after["trains"][1] and not after["loads"][1]
    torch.manual_seed(123)
    assert torch.equal(after["trains"][0], after["loads"][0]) and torch.equal(after["trains"][0], torch.get_rng_state())


def test_the_key_covers_the_images_not_only_their_ids(cfg, data, tmp_path, monkeypatch):
    monkeypatch.setenv(KNOWLEDGE_CACHE_ENV, str(tmp_path / "knowledge"))
    make_shadow_store(cfg, None).train("reference", data)
    brighter = Split(data.images + 1.0, data.masks, data.patient_ids, data.image_ids)  # same ids, other pixels
    other = make_shadow_store(cfg, None)
    other.train("reference", brighter)
    assert "reference" in other.train_seconds, "a shadow of other images was read from the cache"
    other_seed = make_shadow_store(cfg.model_copy(update={"seed": 1}), None)
    other_seed.train("reference", data)
    assert "reference" in other_seed.train_seconds
    assert len(list((tmp_path / "knowledge" / "shadows").glob("*.pt"))) == 3
    assert content_key("r", np.zeros(3)) != content_key("r", np.zeros((3, 1))) != content_key("s", np.zeros(3))


def test_a_suite_points_its_cells_at_its_knowledge_folder_and_restores_the_environment(tmp_path, monkeypatch):
    from fl_mia.app.suite import load_suite, run_suite
    from fl_mia.run_folder import set_status, write_json, write_toml

    monkeypatch.delenv(KNOWLEDGE_CACHE_ENV, raising=False)
    write_toml(tmp_path / "base.toml", tiny_raw())
    (tmp_path / "suite.toml").write_text('config = "base.toml"\nseeds = [0, 1]\n')
    seen = []

    def run(cfg, *, out):
        seen.append(os.environ.get(KNOWLEDGE_CACHE_ENV))
        out.mkdir(parents=True)
        write_toml(out / "config.toml", cfg.to_toml_dict())
        write_json(out / "metrics.json", {"experiment": cfg.name, "seed": cfg.seed})
        set_status(out, "complete", wall_time_s=0.01)

    suite = load_suite(tmp_path / "suite.toml")
    run_suite(suite, out=tmp_path / "out", run=run, resume_run=run)
    assert seen == [str((tmp_path / "out" / "knowledge").resolve())] * 2
    assert KNOWLEDGE_CACHE_ENV not in os.environ
    run_suite(suite, out=tmp_path / "solo", run=run, resume_run=run, share_knowledge=False)
    assert seen[2:] == [None, None]
