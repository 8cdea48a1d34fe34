"""The hospitals' detector: each poisoner planted on a tiny model is flagged, honest FedAvg is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_mia.attacker.knowledge import AttackerKnowledge, CandidateSet
from fl_mia.attacker.poisoning.registry import make_poisoner
from fl_mia.config import DefencesConfig, ModelConfig, ThreatConfig, TrainingConfig
from fl_mia.data import Split
from fl_mia.defences.detector import (
    DetectorThresholds, dead_units, detection_summary, flags, round_evidence, weights_digest, wilson_interval,
)
from fl_mia.models import build_model, get_weights, set_weights
from fl_mia.training import per_image_losses, train_local

TRAINING = TrainingConfig(local_epochs=1, batch_size=4, lr=0.002, weight_decay=0.0)


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(norm="groupnorm", encoder_depth=3), in_channels=1, classes=1, image_size=32)


def scans(seed, n, size=32):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, 1, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        r, c = rng.integers(4, size - 12, 2)
        masks[i, r : r + 8, c : c + 8] = 1
        images[i, 0, r : r + 8, c : c + 8] += 2.0
    return Split(images, masks, np.arange(n) + 1000 * seed, np.arange(n) + 1000 * seed)


HOSPITALS = [scans(1, 8), scans(2, 8)]
POPULATION = scans(3, 16)


def knowledge():
    cand = scans(4, 4)
    images = np.concatenate([HOSPITALS[0].images[:4], cand.images])
    masks = np.concatenate([HOSPITALS[0].masks[:4], cand.masks])
    candidates = CandidateSet(images, masks, np.zeros(8, np.int64), np.arange(8), np.arange(8))
    return AttackerKnowledge(population=POPULATION, candidates=candidates, training=TRAINING, shadows=None, seed=0)


def fedavg_round(weights, seed):
    """One honest round: each hospital trains from ``weights``; the server averages the replies."""
    model, replies = tiny_model(), []
    for split in HOSPITALS:
        set_weights(model, weights)
        train_local(model, split, TRAINING, seed=seed)
        replies.append(get_weights(model))
    return [np.mean([r[i] for r in replies], axis=0).astype(weights[i].dtype) for i in range(len(weights))], replies


@pytest.fixture(scope="module")
def history():
    """Three honest rounds: (global before round 3, global of round 3, hospital 0's reply of round 2)."""
    weights = get_weights(tiny_model())
    weights, _ = fedavg_round(weights, seed=1)
    previous, replies = fedavg_round(weights, seed=2)
    current, _ = fedavg_round(previous, seed=3)
    return previous, current, replies[0]


def own_loss(weights):
    model = tiny_model()
    set_weights(model, weights)
    return float(per_image_losses(model, HOSPITALS[0], TRAINING).mean())


def verdict(received, previous, last_reply):
    evidence = round_evidence(
        received=received, previous_received=previous, last_returned_digest=weights_digest(last_reply),
        first_batch_loss=own_loss(received), previous_first_batch_loss=own_loss(previous),
    )
    d = DefencesConfig().detector
    thresholds = DetectorThresholds(loss_jump=d.loss_jump, weight_change=d.weight_change, dead_units=d.dead_units, echo=d.echo)
    return [check for check, on in flags(evidence, thresholds).items() if on], evidence


def test_honest_fedavg_raises_no_flag(history):
    previous, current, last_reply = history
    fired, evidence = verdict(current, previous, last_reply)
    assert fired == [], evidence


@pytest.mark.parametrize(
    "poisoning, hospital, expected",
    [
        ("gradient_ascent", 0, {"loss_jump", "weight_change"}),
        # At the medium sweep point; the default (weaker) ascent is the stealthy end of the frontier.
        ("active_ascent", 0, {"weight_change"}),
        ("trap_weights", 0, {"new_dead_units"}),
        ("model_inconsistency", 1, {"new_dead_units"}),
        ("isolation", 0, {"echo"}),
        # An integrity threat, out of the MIA suite, but a poisoner all the same: its trigger
        # fine-tuning moves the weights more than a round of honest FedAvg does.
        ("backdoor", 0, {"weight_change"}),
    ],
)
def test_each_poisoner_is_flagged_by_what_it_leaves(history, poisoning, hospital, expected):
    previous, current, last_reply = history
    table = {"active_ascent": {"active_ascent": {"strength": 0.003, "steps": 10}}}.get(poisoning, {})
    threat = ThreatConfig(poisoning=poisoning, target_hospitals=[0], poison_rounds=[3], **table)
    poisoner = make_poisoner(threat, knowledge(), tiny_model())
    poisoner.observe_reply(server_round=2, hospital=0, returned=last_reply)
    poisoned = poisoner.poison(server_round=3, hospital=hospital, global_weights=current)
    assert poisoned is not None
    fired, evidence = verdict(poisoned, previous, last_reply)
    assert expected <= set(fired), evidence


def test_dead_units_count_zeroed_norm_channels_and_filters():
    arrays = [np.array([1.0, 0.0, 2.0], np.float32), np.ones((3, 2, 3, 3), np.float32), np.array([0, 0], np.int64)]
    assert dead_units(arrays) == 1
    arrays[1][2] = 0.0
    assert dead_units(arrays) == 2  # an integer buffer never counts


def test_first_round_compares_nothing_and_never_flags():
    weights = get_weights(tiny_model())
    evidence = round_evidence(received=weights, previous_received=None, last_returned_digest=None,
                              first_batch_loss=1.0, previous_first_batch_loss=None)
    assert all(np.isnan(v) for v in evidence.values())
    assert not any(flags(evidence, DetectorThresholds(loss_jump=1.0, weight_change=0.0)).values())


def test_detection_and_false_alarm_rates_with_intervals():
    rows = [
        {"round": r, "hospital": h, "detector_flag": int(r >= 4 and h == 0), "detector_compared": int(r > 1),
         "detector_checks": "echo" if (r >= 4 and h == 0) else ""}
        for r in range(1, 6) for h in range(2)
    ] + [{"round": 1, "hospital": "all"}]
    summary = detection_summary(rows, attacked={(4, 0), (5, 0)})
    assert summary["detection"] == {"flagged": 2, "rounds": 2, "rate": 1.0, "ci": wilson_interval(2, 2)}
    assert summary["false_alarms"]["flagged"] == 0 and summary["false_alarms"]["rounds"] == 6
    assert summary["checks_fired_in_attack_rounds"] == {"echo": 2}
    low, high = wilson_interval(0, 6)
    assert low == 0.0 and 0.3 < high < 0.4  # 0 of 6: the Wilson upper bound is z²/(n+z²) ≈ 0.39


def test_the_detector_is_refused_under_secagg_with_the_check_to_use_instead():
    with pytest.raises(ValueError, match="defences.consistency"):
        DefencesConfig(secagg={"enabled": True}, detector={"enabled": True})


def test_the_mod_keeps_its_memory_in_the_node_state_and_flags_an_isolated_hospital():
    from fl_mia.config.loading import build_config
    from strategies.malicious import PoisoningFedAvg
    from fl_mia.attacker.poisoning.isolation import IsolationPoisoner
    from tests.conftest import tiny_raw
    from tests.flower_doubles import run_rounds

    raw = tiny_raw(defences={"detector": {"enabled": True}})
    raw["federation"].update(num_hospitals=3, patients_per_hospital=8)
    cfg = build_config(raw)
    _, recorder, _ = run_rounds(cfg, [8, 8, 8], rounds=3)
    metrics = {(r, reply.hospital): reply.metrics for r, replies, _ in recorder.calls for reply in replies}
    assert all(metrics[(1, h)]["detector_compared"] == 0 for h in range(3))  # nothing to compare with yet
    assert all(metrics[(r, h)]["detector_compared"] == 1 for r in (2, 3) for h in range(3))
    assert not any(m["detector_flag"] for m in metrics.values())  # small honest updates: quiet

    threat = build_config({**raw, "threat": {"poisoning": "isolation", "target_hospitals": [1]}}).threat
    _, recorder, _ = run_rounds(
        cfg, [8, 8, 8], rounds=3, strategy_cls=PoisoningFedAvg, poisoner=IsolationPoisoner(targets=[1]), threat=threat
    )
    metrics = {(r, reply.hospital): reply.metrics for r, replies, _ in recorder.calls for reply in replies}
    assert metrics[(2, 1)]["detector_checks"] == "echo" and metrics[(3, 1)]["detector_flag"] == 1
    assert not metrics[(2, 0)]["detector_flag"] and not metrics[(3, 2)]["detector_flag"]


def test_a_flagged_model_is_skipped_as_reference_once_and_not_for_ever():
    from flwr.app import Context, Message, MessageType, RecordDict
    from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat
    from unittest.mock import MagicMock

    from clients.mods import make_detector_mod

    mod = make_detector_mod(DetectorThresholds(loss_jump=None, weight_change=0.5, dead_units=False, echo=False))
    ctxt = MagicMock(spec=Context)
    ctxt.state = RecordDict()

    def send(weights):
        msg = MagicMock(spec=Message)
        msg.metadata.message_type = MessageType.TRAIN
        msg.content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters(weights), {}), keep_input=True)
        reply = MagicMock(spec=Message)
        reply.has_error.return_value = False
        reply.content = compat.fitres_to_recorddict(
            FitRes(Status(Code.OK, ""), ndarrays_to_parameters([w + 0.01 for w in weights]), 4, {}), keep_input=True
        )
        out = mod(msg, ctxt, lambda m, c: reply)
        return compat.recorddict_to_fitres(out.content, keep_input=True).metrics["detector_flag"]

    base = [np.ones(100, np.float32)]
    drift = [[b * (1 + 0.3 * i) for b in base] for i in range(5)]  # 30% a round: each step below 0.5
    assert [send(w) for w in drift[:2]] == [0, 0]
    assert send([b * 10 for b in base]) == 1  # poisoned: flagged, not the next round's reference
    assert send(drift[2]) == 0  # compared with drift[1], not with the poisoned model
    assert send([b * 10 for b in base]) == 1
    assert send([b * 10 for b in base]) == 1  # still far from drift[2]; now it becomes the reference
    assert send([b * 10 for b in base]) == 0  # a flagged model is skipped once only: no lock-in
