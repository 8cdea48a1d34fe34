"""The hospital side under ``flwr run``: the experiment is read once per run, not once per message."""

from __future__ import annotations

import tomli_w

import clients.client_app as client_app
from tests.conftest import tiny_raw


def test_the_experiment_is_read_and_validated_once_per_run_config(tmp_path, monkeypatch):
    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps(tiny_raw()))
    reads = []
    read = client_app.experiment_from_run_config
    monkeypatch.setattr(client_app, "experiment_from_run_config", lambda run_config: reads.append(run_config) or read(run_config))
    client_app._experiment_of_run.cache_clear()
    run_config = {"experiment": str(path), "set.federation.rounds": 3}

    first = client_app.experiment_of_run(run_config)
    for _ in range(5):  # every message of the run: a fresh client object and the mods
        assert client_app.experiment_of_run(dict(run_config)) is first
    assert len(reads) == 1 and first.federation.rounds == 3

    other = client_app.experiment_of_run({**run_config, "set.federation.rounds": 2})  # another run
    assert other.federation.rounds == 2 and len(reads) == 2
    client_app._experiment_of_run.cache_clear()


def test_a_hospital_gets_its_sections_not_the_experiment():
    from fl_mia.config.loading import build_config

    cfg = build_config(tiny_raw())
    hospital = client_app.hospital_client(cfg, 1)
    assert hospital.partition_id == 1 and hospital.hospital.index == 1
    assert hospital.training is cfg.training and hospital.dp_sgd is cfg.defences.dp_sgd
    assert not hasattr(hospital, "cfg")
