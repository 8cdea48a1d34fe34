"""Differential privacy: DP-SGD with Opacus on a hospital, and client-level central DP."""

import math

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from opacus.accountants import RDPAccountant

from clients.dp_state import train_dp_sgd
from fl_mia.config import ConfigError
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital
from fl_mia.defences.accounting import central_dp_epsilon
from fl_mia.defences.dp_sgd import plan_for, train_local_dp
from fl_mia.models import build_model
from tests.conftest import tiny_raw


def dp_cfg(**dp):
    # The slice path (Opacus's make_private); the patient path is tests/test_patient_dp.py.
    return build_config(tiny_raw(defences={"dp_sgd": {"enabled": True, "unit": "slice", **dp}}))


@pytest.fixture(scope="module")
def hospital():
    cfg = dp_cfg()
    return build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed)


def fresh_model(cfg):
    torch.manual_seed(0)
    return build_model(cfg.model, in_channels=1, classes=1)


def test_epsilon_over_rounds_equals_opacus_accountant_stepped_by_hand(hospital):
    cfg = dp_cfg(noise_multiplier=1.1)
    state = RecordDict()
    model = fresh_model(cfg)
    for server_round in (1, 2):
        _, privacy = train_dp_sgd(model, hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, node_state=state, tags=(server_round, 0))
    plan = plan_for(cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, num_train=len(hospital.train))
    reference = RDPAccountant()
    for _ in range(2 * plan.steps_per_round):  # every step of both rounds
        reference.step(noise_multiplier=1.1, sample_rate=plan.sample_rate)
    assert privacy["dp_steps_total"] == 2 * plan.steps_per_round
    assert privacy["dp_epsilon"] == pytest.approx(reference.get_epsilon(delta=plan.delta), rel=1e-9)
    one_round = RDPAccountant()
    for _ in range(plan.steps_per_round):
        one_round.step(noise_multiplier=1.1, sample_rate=plan.sample_rate)
    assert privacy["dp_epsilon"] > one_round.get_epsilon(delta=plan.delta) * 1.2  # not the last round alone


def test_target_epsilon_is_spent_over_all_rounds_not_one(hospital):
    cfg = dp_cfg(target_epsilon=4.0, noise_multiplier=None)
    state = RecordDict()
    model = fresh_model(cfg)
    epsilons = [train_dp_sgd(model, hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, node_state=state, tags=(r, 0))[1]["dp_epsilon"] for r in (1, 2)]
    assert epsilons[0] < epsilons[1] <= 4.0
    assert epsilons[1] == pytest.approx(4.0, rel=0.02)  # opacus solves σ to within its tolerance


def test_parameters_leave_without_the_opacus_prefix_and_change(hospital):
    cfg = dp_cfg()
    model = fresh_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_local_dp(model, hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, history=[], secret=0, tags=(1, 0))
    after = model.state_dict()
    assert list(after) == list(before) and not any(k.startswith("_module.") for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_poisson_batches_include_empty_ones_and_still_step(hospital):
    # 2 images, batch size 1: sample rate 1/2, so about a quarter of the batches are empty.
    cfg = build_config(tiny_raw(training={"batch_size": 1, "local_epochs": 6}, defences={"dp_sgd": {"enabled": True, "unit": "slice"}}))
    split = hospital.train.subset(np.arange(2))
    outcome = train_local_dp(fresh_model(cfg), split, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, history=[], secret=3, tags=(1, 0))
    assert outcome.result.steps == 12  # every step is accounted, empty or not
    assert outcome.empty_batches > 0
    assert outcome.history == [(1.0, 0.5, 12)]


def test_dp_sgd_with_batchnorm_is_rejected_at_load():
    with pytest.raises(ConfigError, match="model.norm"):
        build_config(tiny_raw(model={"norm": "batchnorm"}, defences={"dp_sgd": {"enabled": True}}))


def test_central_dp_epsilon_is_the_rdp_accountant_over_rounds():
    reference = RDPAccountant()
    for _ in range(10):
        reference.step(noise_multiplier=0.8, sample_rate=0.5)
    assert central_dp_epsilon(noise_multiplier=0.8, sample_rate=0.5, rounds=10, delta=1e-3) == pytest.approx(
        reference.get_epsilon(delta=1e-3), rel=1e-9
    )
    assert math.isinf(central_dp_epsilon(noise_multiplier=0.0, sample_rate=1.0, rounds=3, delta=1e-3))


def test_server_clipping_with_secagg_is_rejected_at_load():
    with pytest.raises(ConfigError, match="server_clipping"):
        build_config(tiny_raw(defences={"secagg": {"enabled": True}, "central_dp": {"mode": "server_clipping"}}))


def test_defence_report_takes_each_hospitals_last_epsilon_and_says_whom_it_protects_against():
    from server.defences import RunShape, privacy_section

    cfg = build_config(tiny_raw(defences={"dp_sgd": {"enabled": True}, "central_dp": {"mode": "client_clipping"}}))
    fits = {
        (1, 0): {"dp_epsilon": 1.0, "dp_delta": 0.1, "dp_noise_multiplier": 1.0},
        (2, 0): {"dp_epsilon": 1.5, "dp_delta": 0.1, "dp_noise_multiplier": 1.0},
        (1, 1): {"dp_epsilon": 2.0, "dp_delta": 0.2, "dp_noise_multiplier": 1.0},
    }
    shape = RunShape(num_hospitals=cfg.federation.num_hospitals, sampled_per_round=cfg.sampled_per_round(), rounds=cfg.federation.rounds)
    section = privacy_section(cfg.defences, shape, fits)
    assert section["active"] == ["central_dp:client_clipping", "dp_sgd:patient"]
    assert section["dp_sgd"]["epsilon_per_hospital"] == {"0": 1.5, "1": 2.0}
    assert section["dp_sgd"]["epsilon_max"] == 2.0
    assert "NOT the server" in section["central_dp"]["protects_against"]
    assert section["central_dp"]["epsilon"]["value"] == pytest.approx(
        central_dp_epsilon(noise_multiplier=0.5, sample_rate=1.0, rounds=2, delta=1e-3)
    )
    assert section["central_dp"]["epsilon"]["unit"] == "hospital" and section["dp_sgd"]["epsilon"]["unit"] == "patient"
    assert section["dp_sgd"]["epsilon"]["value"] == 2.0 and section["dp_sgd"]["epsilon"]["delta"] == 0.2


def test_resumed_hospital_rebuilds_its_accountant_from_the_checkpointed_steps(hospital):
    """A resume starts fresh nodes: the step count the server kept must give the same ε."""
    cfg = dp_cfg(noise_multiplier=1.0)
    kept = RecordDict()
    _, first = train_dp_sgd(fresh_model(cfg), hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, node_state=kept, tags=(1, 0))
    _, uninterrupted = train_dp_sgd(fresh_model(cfg), hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, node_state=kept, tags=(2, 0))
    _, resumed = train_dp_sgd(
        fresh_model(cfg), hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, node_state=RecordDict(), tags=(2, 0),
        prior_steps=first["dp_steps_total"],
    )
    assert resumed["dp_steps_total"] == uninterrupted["dp_steps_total"]
    assert resumed["dp_epsilon"] == pytest.approx(uninterrupted["dp_epsilon"], rel=1e-9)
    assert resumed["dp_epsilon"] > first["dp_epsilon"]


def test_default_delta_is_well_below_one_over_n_and_epsilon_is_also_reported_at_1e_5(hospital):
    from fl_mia.defences.accounting import REFERENCE_DELTA, default_delta, epsilon_of

    assert default_delta(32) == 1e-5 and default_delta(1_000_000) == 1e-7
    cfg = dp_cfg(noise_multiplier=1.0)
    plan = plan_for(cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, num_train=len(hospital.train))
    assert plan.delta <= 1 / (10 * len(hospital.train))
    _, privacy = train_dp_sgd(fresh_model(cfg), hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, node_state=RecordDict(), tags=(1, 0))
    history = [(1.0, plan.sample_rate, plan.steps_per_round)]
    assert privacy["dp_epsilon_at_reference_delta"] == pytest.approx(epsilon_of(history, delta=REFERENCE_DELTA), rel=1e-9)
    # A configured δ = 1/n reports less ε than δ = 1e-5 for the same noise: both are kept.
    loose = dp_cfg(noise_multiplier=1.0, delta=1 / len(hospital.train))
    _, loose_privacy = train_dp_sgd(fresh_model(loose), hospital.train, loose.defences.dp_sgd, loose.training, rounds=loose.federation.rounds, node_state=RecordDict(), tags=(1, 0))
    assert loose_privacy["dp_epsilon"] < loose_privacy["dp_epsilon_at_reference_delta"] == pytest.approx(
        privacy["dp_epsilon_at_reference_delta"], rel=1e-9
    )


def test_defence_report_gives_epsilon_at_the_reference_delta():
    from server.defences import RunShape, privacy_section

    cfg = build_config(tiny_raw(defences={"dp_sgd": {"enabled": True}, "central_dp": {"mode": "client_clipping"}}))
    fits = {(1, 0): {"dp_epsilon": 1.0, "dp_epsilon_at_reference_delta": 3.0}, (1, 1): {"dp_epsilon": 2.0, "dp_epsilon_at_reference_delta": 4.0}}
    shape = RunShape(num_hospitals=cfg.federation.num_hospitals, sampled_per_round=cfg.sampled_per_round(), rounds=cfg.federation.rounds)
    section = privacy_section(cfg.defences, shape, fits)
    assert section["dp_sgd"]["epsilon_max_at_reference_delta"] == 4.0 and section["dp_sgd"]["reference_delta"] == 1e-5
    assert section["central_dp"]["epsilon_at_reference_delta"] == pytest.approx(
        central_dp_epsilon(noise_multiplier=0.5, sample_rate=1.0, rounds=2, delta=1e-5)
    )
    assert section["central_dp"]["epsilon_at_reference_delta"] > section["central_dp"]["epsilon"]["value"]
