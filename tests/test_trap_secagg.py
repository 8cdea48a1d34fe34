"""Trap weights against SecAgg+ (trap + model inconsistency), through the real SecAgg+ protocol.

The federation runs in this process (the tests' InProcessGrid, no Ray): the real ServerApp
federation, the real ClientApp hospitals with secaggplus_mod, delta and consistency mods.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

from clients.client_app import make_client_app
from fl_mia.config import ConfigError
from fl_mia.config.loading import build_config
from fl_mia.app.preflight import preflight
from fl_mia.run_folder import create_run_folder
from server.federation import run_federation
from tests.conftest import tiny_raw
from server.inprocess_grid import InProcessGrid

TRAP = {
    "poisoning": "trap_inconsistency", "target_hospitals": [0], "poison_rounds": [2],
    "trap_inconsistency": {"detectors_per_round": 32},
}
FEDERATION = {"rounds": 2, "num_hospitals": 2, "patients_per_hospital": 16}


@pytest.fixture(autouse=True)
def private_channel(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_MIA_HOSPITAL_CHANNEL", str(tmp_path / "channel"))  # hospitals run in-process


def trap_cfg(*, consistency: str = "off", threat: dict | None = None, secagg: dict | None = None):
    raw = tiny_raw(
        federation=FEDERATION,
        # The loss-based update signals only: the trap reads its own trace.
        attacker={"prediction_attacks": ["loss"], "per_round_attacks": [], "update_attacks": ["returned_loss", "loss_reduction", "loss_log_ratio"]},
        threat={**TRAP, **(threat or {})},
        defences={"secagg": {"enabled": True, **(secagg or {})}, "consistency": {"mode": consistency}},
    )
    raw["name"] = f"secagg-trap-{consistency}"
    return preflight(build_config(raw))


def run_in_process(tmp_path, cfg):
    run_dir = create_run_folder(cfg.name, runs_root=tmp_path)
    grid = InProcessGrid(make_client_app(cfg), cfg.federation.num_hospitals, seed=cfg.seed)
    context = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    run_federation(grid, context, cfg, run_dir, on_round_end=lambda _progress: None)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with np.load(run_dir / "scores.npz") as archive:
        scores = {k: archive[k] for k in archive.files}
    with open(run_dir / "rounds.csv", newline="") as handle:
        overall = [row for row in csv.DictReader(handle) if row["hospital"] == "all"]
    return metrics, scores, {int(row["round"]): float(row["dice"]) for row in overall}


def tpr_at_zero_fp(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Share of members scoring above every non-member."""
    return float((scores[is_member] > scores[~is_member].max()).mean())


@pytest.mark.slow
def test_trap_separates_the_trapped_hospitals_members_under_secagg(tmp_path):
    metrics, scores, dice = run_in_process(tmp_path, trap_cfg())
    trap = metrics["privacy"]["update.trap_trace"]["per_hospital"]["0"]
    assert trap["auc"] >= 0.95 and trap["tpr_at_1pct_fpr"] >= 0.9  # 1% FPR is below one non-member here: 0 FP
    traces = scores["update_matrix.trap_trace"]
    assert np.isnan(traces[0]).all()  # round 1 was honest
    armed = np.isfinite(traces[1][:, 0])
    assert armed.sum() >= 8 and np.isnan(traces[1][:, 1]).all()  # hospital 1 was silenced, never trapped
    # Exactly zero where a detector never fired: a zero delta survives SecAgg+'s quantisation exactly.
    assert (traces[1][armed, 0] == 0).sum() >= 4
    threat = metrics["threat"]
    assert threat["poisoned_hospitals"] == [0, 1] and threat["compensated"] is True
    assert "keeps its previous global model" in threat["trap"]["global_model_in_trapped_rounds"]
    assert threat["trap"]["silenced_replies"] == 1
    # The trapped round's sum was discarded: round 2's global model is round 1's.
    assert dice[2] == dice[1] and metrics["utility"]["dice"] == dice[1]


@pytest.mark.slow
def test_consistency_check_refuses_the_trap_round_and_leaves_no_trace(tmp_path):
    metrics, scores, _ = run_in_process(tmp_path, trap_cfg(consistency="refuse"))
    assert metrics["rounds_completed"] == 2
    assert metrics["failures"]["refused"] == 2  # both hospitals withheld their shares in round 2
    assert np.isnan(scores["update_matrix.trap_trace"]).all()  # the sum was never opened: nothing to score
    trap = metrics["privacy"]["update.trap_trace"]["per_hospital"]["0"]
    assert trap["auc"] == pytest.approx(0.5) and trap["tpr_at_1pct_fpr"] == 0.0


def test_trap_inconsistency_refuses_trapping_every_round():
    with pytest.raises(ConfigError, match="threat.poison_rounds"):
        trap_cfg(threat={"poison_rounds": [1, 2]})


def test_trap_inconsistency_always_traps_in_turn():
    # An aggregate isolates one unsilenced update, so its table has no switch to trap all targets at once.
    with pytest.raises(ConfigError, match="in_turn"):
        trap_cfg(threat={"target_hospitals": [0, 1], "trap_inconsistency": {"in_turn": False}})


def test_trap_inconsistency_refuses_a_quantisation_coarser_than_the_detectors_move():
    with pytest.raises(ConfigError, match="defences.secagg.quantization_range"):
        trap_cfg(secagg={"quantization_range": 2**8})


# --- Without Flower's protocol: the strategy's hooks on hand-made SecAgg+ replies (fast) ---


@pytest.fixture(scope="module")
def trained_setting():
    """The tiny federation's config, candidates, truth, a global model trained a little, knowledge."""
    import torch

    from fl_mia.data import build_attacker_population
    from fl_mia.attacker.knowledge import AttackerKnowledge
    from fl_mia.models import build_experiment_model, get_weights
    from server.federation import draw_candidates
    from fl_mia.training import train_local

    raw = tiny_raw(federation=FEDERATION, threat=TRAP, defences={"secagg": {"enabled": True}})
    cfg = build_config(raw)
    candidates, ledger = draw_candidates(cfg)
    population = build_attacker_population(cfg.data, cfg.federation, seed=cfg.seed)
    torch.manual_seed(0)
    model = build_experiment_model(cfg.model, cfg.data)
    train_local(model, population, cfg.training, seed=1, tags=("global",))
    knowledge = AttackerKnowledge(population=population, candidates=candidates, training=cfg.training, shadows=None, seed=0)
    return cfg, candidates, ledger.is_member(), get_weights(model), knowledge


def test_the_secure_sum_of_a_trap_round_names_the_targets_members_and_is_discarded(trained_setting):
    from fl_mia.data.shards import build_hospital
    from fl_mia.models import build_experiment_model, get_weights, set_weights
    from fl_mia.attacker.poisoning.registry import make_poisoner
    from fl_mia.training import train_local
    from strategies.malicious import PoisoningFedAvg
    from tests.flower_doubles import Recorder
    from tests.test_poisoning_strategies import manager

    cfg, candidates, is_member, global_weights, knowledge = trained_setting
    directory = {1001: 0, 2002: 1}
    recorder = Recorder()
    strategy = PoisoningFedAvg(
        poisoner=make_poisoner(cfg.threat, knowledge, build_experiment_model(cfg.model, cfg.data)), threat=cfg.threat,
        directory=directory, observer=recorder, keep_weights=True, secure_aggregation=True,
        initial_parameters=ndarrays_to_parameters(global_weights),
    )
    hospitals = manager(directory)
    proxies = {directory[proxy.node_id]: proxy for proxy in hospitals.all().values()}
    instructions = strategy.configure_fit(2, ndarrays_to_parameters(global_weights), hospitals)
    from flwr.common import parameters_to_ndarrays

    sent = {directory[p.node_id]: parameters_to_ndarrays(ins.parameters) for p, ins in instructions}
    keys = list(build_experiment_model(cfg.model, cfg.data).state_dict())
    # Hospital 0 is trapped, hospital 1 silenced: both differ from the global model, differently.
    assert not np.array_equal(sent[0][keys.index("encoder.layer1.0.conv1.weight")], global_weights[keys.index("encoder.layer1.0.conv1.weight")])
    assert np.array_equal(sent[1][keys.index("encoder.layer1.0.conv1.weight")], global_weights[keys.index("encoder.layer1.0.conv1.weight")])
    assert strategy.silenced_this_round == {1} and strategy.poisoned_this_round == {0, 1}

    # Each hospital trains what it received; SecAgg+ hands every reply the weighted average delta.
    deltas, sizes = {}, {}
    for h in (0, 1):
        train = build_hospital(cfg.data, cfg.federation, h, seed=cfg.seed).train
        model = build_experiment_model(cfg.model, cfg.data)
        set_weights(model, sent[h])
        train_local(model, train, cfg.training, seed=0, tags=(2, h))
        deltas[h] = [r - s for r, s in zip(get_weights(model), sent[h])]
        sizes[h] = len(train)
    head_bias = keys.index("segmentation_head.0.bias")
    assert all(not d.any() for i, d in enumerate(deltas[1]) if i != head_bias)  # silenced: nothing else moved
    total = sum(sizes.values())
    average = [sum(sizes[h] * deltas[h][i].astype(np.float64) for h in (0, 1)) / total for i in range(len(keys))]
    results = [
        (proxies[h], FitRes(Status(Code.OK, ""), ndarrays_to_parameters(average), sizes[h], {"partition_id": h}))
        for h in (0, 1)
    ]
    aggregated, _ = strategy.aggregate_fit(2, results, [])
    assert aggregated is None  # the trapped round's sum never reaches the global model

    (_, replies, _), = recorder.calls
    target = next(r for r in replies if r.hospital == 0)
    assert target.view == "reconstructed"
    trace = strategy.poisoner.update_signals(server_round=2, hospital=0, sent=target.sent_weights, returned=target.weights)
    trace = trace["trap_trace"]
    armed = np.isfinite(trace)
    member = is_member[armed]
    assert member.sum() >= 4 and (~member).sum() >= 4
    scores = trace[armed]
    assert (scores[member] > scores[~member].max()).mean() >= 0.9  # TPR at zero false positives
