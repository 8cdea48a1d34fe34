"""Trap weights without Ray: detectors fire for trained candidates only, and fail under DP-SGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from sklearn.metrics import roc_auc_score

from fl_mia.config.loading import build_config
from fl_mia.data import build_attacker_population
from fl_mia.data.shards import build_hospital
from fl_mia.defences.dp_sgd import train_local_dp
from fl_mia.models import build_experiment_model, get_weights, set_weights
from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.poisoning.registry import make_poisoner
from fl_mia.attacker.poisoning.trap_weights import TrapSite, detector_inputs
from server.federation import draw_candidates
from fl_mia.training import train_local
from strategies.malicious import PoisoningFedAvg
from tests.conftest import tiny_raw
from tests.test_poisoning_strategies import manager

TRAP = {"poisoning": "trap_weights", "target_hospitals": [0], "trap_weights": {"detectors_per_round": 16}}


def trap_cfg(**sections):
    return build_config(
        tiny_raw(
            federation={"num_hospitals": 2, "patients_per_hospital": 16, "attacker_patients": 12, "rounds": 2},
            training={"local_epochs": 2, "batch_size": 4},
            threat=TRAP,
            **sections,
        )
    )


@pytest.fixture(scope="module")
def setting():
    """A tiny federation, a global model trained a little on the attacker's data, and the trap."""
    cfg = trap_cfg()
    candidates, ledger = draw_candidates(cfg)
    population = build_attacker_population(cfg.data, cfg.federation, seed=cfg.seed)
    torch.manual_seed(0)
    model = build_experiment_model(cfg.model, cfg.data)
    train_local(model, population, cfg.training, seed=1, tags=("global",))
    knowledge = AttackerKnowledge(
        population=population, candidates=candidates, training=cfg.training, shadows=None, seed=0
    )
    return cfg, candidates, ledger.is_member(), get_weights(model), knowledge


def trap_round(setting, train, server_round=1):
    """Arm the trap for hospital 0, let ``train`` run local training, return the armed traces."""
    cfg, candidates, is_member, global_weights, knowledge = setting
    poisoner = make_poisoner(cfg.threat, knowledge, build_experiment_model(cfg.model, cfg.data))
    sent = poisoner.poison(server_round=server_round, hospital=0, global_weights=global_weights)
    model = build_experiment_model(cfg.model, cfg.data)
    set_weights(model, sent)
    train(model)
    trace = poisoner.update_signals(server_round=server_round, hospital=0, sent=sent, returned=get_weights(model))
    armed = np.isfinite(trace["trap_trace"])
    return trace["trap_trace"][armed], is_member[armed], poisoner, sent


def test_detectors_fire_for_trained_candidates_and_never_for_the_others(setting):
    cfg = setting[0]
    hospital = build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed)
    trace, member, poisoner, _ = trap_round(setting, lambda m: train_local(m, hospital.train, cfg.training, seed=0, tags=(1, 0)))
    assert member.sum() >= 4 and (~member).sum() >= 4
    assert (trace[member] > 0).mean() >= 0.9
    assert (trace[~member] == 0).all()  # exact: a closed ReLU passes no gradient and Adam moves nothing
    assert roc_auc_score(member, trace) >= 0.95
    assert poisoner.report()["trap"]["detectors_not_separating"] == 0


def test_no_detector_fires_when_none_of_the_candidates_is_trained_on(setting):
    cfg = setting[0]
    unseen = build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed).test  # the hospital's own scanner, no candidate among them
    trace, _, _, _ = trap_round(setting, lambda m: train_local(m, unseen, cfg.training, seed=0, tags=(1, 0)))
    assert (trace == 0).mean() >= 0.9


def test_dp_sgd_noise_moves_every_detector_and_the_trap_no_longer_separates(setting):
    cfg = trap_cfg(defences={"dp_sgd": {"enabled": True, "noise_multiplier": 4.0, "max_grad_norm": 0.5}})
    hospital = build_hospital(cfg.data, cfg.federation, 0, seed=cfg.seed)
    trace, member, _, _ = trap_round(
        setting, lambda m: train_local_dp(m, hospital.train, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, history=[], secret=0, tags=(1, 0))
    )
    assert (trace > 0).all()
    assert abs(roc_auc_score(member, trace) - 0.5) <= 0.25


def test_the_trap_changes_only_what_it_says(setting):
    cfg, _, _, global_weights, knowledge = setting
    scratch = build_experiment_model(cfg.model, cfg.data)
    poisoner = make_poisoner(cfg.threat, knowledge, scratch)
    sent = poisoner.poison(server_round=1, hospital=0, global_weights=global_weights)
    keys = list(scratch.state_dict())
    changed = {k for k, a, b in zip(keys, sent, global_weights) if not np.array_equal(a, b)}
    assert changed == {
        "encoder.conv1.weight", "encoder.bn1.weight", "encoder.bn1.bias",
        "encoder.layer1.0.conv1.weight", "encoder.layer1.0.bn1.weight", "encoder.layer1.0.bn1.bias",
    }
    armed = len(poisoner.armed[(1, 0)])
    per_group = 2
    bn_weight = sent[keys.index("encoder.layer1.0.bn1.weight")]
    assert np.array_equal(bn_weight[armed * per_group :], global_weights[keys.index("encoder.layer1.0.bn1.weight")][armed * per_group :])
    # The constant feature really is constant, whatever the scan.
    model = build_experiment_model(cfg.model, cfg.data)
    set_weights(model, sent)
    features = detector_inputs(model, TrapSite.of(model), knowledge.candidates.images[:4])
    assert torch.allclose(features[:, 0], torch.ones_like(features[:, 0]))
    assert poisoner.poison(server_round=1, hospital=1, global_weights=global_weights) is None  # not a target


def test_trapped_reply_is_left_out_of_the_aggregate(setting):
    cfg, _, _, global_weights, knowledge = setting
    directory = {1001: 0, 2002: 1}
    strategy = PoisoningFedAvg(
        poisoner=make_poisoner(cfg.threat, knowledge, build_experiment_model(cfg.model, cfg.data)), threat=cfg.threat, directory=directory, keep_weights=True,
        initial_parameters=ndarrays_to_parameters(global_weights),
    )
    hospitals = manager(directory)
    proxies = {directory[proxy.node_id]: proxy for proxy in hospitals.all().values()}
    instructions = strategy.configure_fit(1, ndarrays_to_parameters(global_weights), hospitals)
    sent = {directory[p.node_id]: parameters_to_ndarrays(ins.parameters) for p, ins in instructions}
    results = [
        (proxies[h], FitRes(Status(Code.OK, ""), ndarrays_to_parameters(sent[h]), 10, {"partition_id": h}))
        for h in (0, 1)
    ]
    kept = strategy.prepare_for_aggregation(1, results)
    assert [proxy.node_id for proxy, _ in kept] == [2002]



def test_targets_are_trapped_one_per_round_in_turn(setting):
    cfg, _, _, global_weights, knowledge = setting
    trap = cfg.threat.trap_weights.model_copy(update={"detectors_per_round": 2})
    threat = cfg.threat.model_copy(update={"target_hospitals": [0, 1], "trap_weights": trap})
    poisoner = make_poisoner(threat, knowledge, build_experiment_model(cfg.model, cfg.data))
    sent = {
        (r, h): poisoner.poison(server_round=r, hospital=h, global_weights=global_weights)
        for r in (3, 4, 5) for h in (0, 1)
    }
    trapped = {pair for pair, weights in sent.items() if weights is not None}
    assert trapped == {(3, 0), (4, 1), (5, 0)} == poisoner.poisoned_pairs()
    restored = make_poisoner(threat, knowledge, build_experiment_model(cfg.model, cfg.data))
    restored.load_state_dict(poisoner.state_dict())  # a resume continues the turns
    assert restored.poison(server_round=6, hospital=1, global_weights=global_weights) is not None


def test_stealth_compares_exactly_the_trapped_replies():
    from fl_mia.attacker.poisoning.threat_summary import stealth

    rows = [
        {"round": r, "hospital": h, "first_batch_loss": 2.0 if (r, h) in {(1, 0), (2, 1)} else 1.0}
        for r in (1, 2) for h in (0, 1)
    ]
    assert stealth(rows, poisoned={0, 1}, rounds={1, 2}, pairs={(1, 0), (2, 1)})["ratio"] == 2.0
    assert stealth(rows, poisoned={0, 1}, rounds={1, 2})["ratio"] is None  # no untouched hospital by hospital alone


def test_detectors_fitted_together_equal_each_fitted_alone():
    """One product with every other patch per step serves all of a round's detectors: same filters, same margins."""
    from fl_mia.attacker.poisoning.trap_weights import fit_detector_filter, fit_detector_filters

    generator = torch.Generator().manual_seed(0)
    positions, width = 16, 24
    patches = torch.randn(30 * positions, width, generator=generator)
    owns = [patches[k * positions : (k + 1) * positions] for k in range(3)]
    held = torch.ones(len(patches), 3, dtype=torch.bool)
    for k in range(3):
        held[k * positions : (k + 1) * positions, k] = False  # a target's own slices are not held against it
    together, together_margins = fit_detector_filters(owns, patches, held_against=held, steps=20)
    for k, own in enumerate(owns):
        alone, margin = fit_detector_filter(own, patches, held_against=held[:, k], steps=20)
        assert torch.allclose(alone, together[k], atol=1e-5) and margin == pytest.approx(together_margins[k], abs=1e-5)
    assert all(m > 0 for m in together_margins)  # random patches: each target separates from the rest
