"""Malicious strategies without Ray: payloads per hospital, the shared payload untouched."""

from __future__ import annotations

from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from fl_mia.config import ModelConfig, ThreatConfig, TrainingConfig
from fl_mia.data import Split
from fl_mia.losses import segmentation_loss
from fl_mia.models import build_model, get_weights, set_weights
from fl_mia.attacker.knowledge import AttackerKnowledge, CandidateSet
from fl_mia.attacker.poisoning.registry import make_poisoner
from fl_mia.attacker.poisoning.model_inconsistency import reconstruct_target_update, silenced_weights
from strategies.honest import HonestFedAvg, PartitionSeededClientManager
from strategies.malicious import PoisoningFedAvg

NODES = {1001: 0, 2002: 1, 3003: 2}


def manager(directory=NODES):
    m = PartitionSeededClientManager(seed=0, directory=directory)
    for node in directory:
        proxy = MagicMock()
        proxy.node_id, proxy.cid = node, str(node)
        m.register(proxy)
    return m


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)


def knowledge(model, n=6, size=32):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, 1, size, size)).astype(np.float32)
    masks = (rng.random((n, size, size)) > 0.8).astype(np.int64)
    population = Split(images, masks, np.arange(n), np.arange(n))
    candidates = CandidateSet(images, masks, np.array([0, 0, 0, 1, 1, 1]), np.arange(n), np.arange(n))
    return AttackerKnowledge(population=population, candidates=candidates, training=TrainingConfig(), shadows=None, seed=0)


def strategy(poisoning: str, **threat):
    model = tiny_model()
    cfg = ThreatConfig(poisoning=poisoning, **threat)
    weights = get_weights(model)
    s = PoisoningFedAvg(
        poisoner=make_poisoner(cfg, knowledge(model), model), threat=cfg, directory=NODES, keep_weights=True,
        initial_parameters=ndarrays_to_parameters(weights),
    )
    return s, weights


def payloads(s, weights, server_round=1):
    parameters = ndarrays_to_parameters(weights)
    instructions = s.configure_fit(server_round, parameters, manager())
    return {NODES[p.node_id]: ins for p, ins in instructions}, parameters


@pytest.mark.parametrize("poisoning", ["gradient_ascent", "backdoor", "trap_weights"])
def test_untargeted_hospitals_get_exactly_the_honest_model_and_targets_a_fresh_one(poisoning):
    s, weights = strategy(poisoning, target_hospitals=[1])
    sent, shared = payloads(s, weights)
    honest = [w.copy() for w in weights]
    for hospital in (0, 2):
        assert sent[hospital].parameters is shared  # the untouched shared payload
    assert sent[1].parameters is not shared
    assert any(not np.array_equal(a, b) for a, b in zip(parameters_to_ndarrays(sent[1].parameters), honest))
    assert all(np.array_equal(a, b) for a, b in zip(parameters_to_ndarrays(shared), honest))  # not mutated
    assert sent[1].config == sent[0].config and sent[1].config is not sent[0].config


def test_no_poisoning_outside_poison_rounds():
    s, weights = strategy("gradient_ascent", target_hospitals=[1], poison_rounds=[2])
    sent, shared = payloads(s, weights, server_round=1)
    assert all(ins.parameters is shared for ins in sent.values())


def test_gradient_ascent_reaches_its_loss_ratio_on_the_target_candidates():
    s, weights = strategy("gradient_ascent", target_hospitals=[0], gradient_ascent={"loss_ratio": 1.5, "lr": 1e-2})
    sent, _ = payloads(s, weights)
    model = tiny_model()
    k = knowledge(model)
    images, masks = torch.as_tensor(k.candidates.images[:3]), torch.as_tensor(k.candidates.masks[:3])

    def loss(w):
        set_weights(model, w)
        model.eval()
        with torch.no_grad():
            return float(segmentation_loss(model(images), masks))

    ratio = loss(parameters_to_ndarrays(sent[0].parameters)) / loss(weights)
    assert ratio >= 1.5
    assert s.poisoner.history[-1]["loss_ratio"] == pytest.approx(ratio, rel=1e-4)


def reply_from(node, weights, n=10):
    proxy = MagicMock()
    proxy.node_id = node
    return proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), n, {"partition_id": NODES[node]})


def test_isolation_sends_each_target_its_own_previous_model():
    s, weights = strategy("isolation", target_hospitals=[0, 2])
    sent, shared = payloads(s, weights, server_round=1)
    assert all(ins.parameters is shared for ins in sent.values())  # nothing of their own yet
    returned = {h: [w + h + 1.0 if w.dtype == np.float32 else w for w in weights] for h in range(3)}
    s.aggregate_fit(1, [reply_from(node, returned[h]) for node, h in NODES.items()], [])
    sent, shared = payloads(s, weights, server_round=2)
    for hospital in (0, 2):
        got = parameters_to_ndarrays(sent[hospital].parameters)
        assert all(np.array_equal(a, b) for a, b in zip(got, returned[hospital]))
    assert sent[1].parameters is shared


def test_compensation_keeps_the_poison_out_of_the_global_model():
    s, weights = strategy("gradient_ascent", target_hospitals=[0])
    sent, _ = payloads(s, weights)
    poisoned = parameters_to_ndarrays(sent[0].parameters)
    delta = [np.full_like(w, 0.5) if w.dtype == np.float32 else np.zeros_like(w) for w in weights]
    replies = [reply_from(1001, [p + d for p, d in zip(poisoned, delta)])] + [
        reply_from(node, [w + d for w, d in zip(weights, delta)]) for node in (2002, 3003)
    ]
    aggregate = parameters_to_ndarrays(s.aggregate_fit(1, replies, [])[0])
    expected = [w + d for w, d in zip(weights, delta)]
    assert all(np.allclose(a, e, atol=1e-5) for a, e in zip(aggregate, expected) if a.dtype != np.int64)
    # the observer-facing record keeps what the hospital really returned
    honest = HonestFedAvg(directory=NODES)
    assert honest.prepare_for_aggregation(1, replies) is replies


def update_is_silenced(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> bool:
    """True when, for this model, only the segmentation head's bias gets a gradient."""
    model.train()
    model.zero_grad(set_to_none=True)
    segmentation_loss(model(images), masks).backward()
    moving = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().max() > 0]
    model.zero_grad(set_to_none=True)
    return all(name.startswith("segmentation_head") and name.endswith("bias") for name in moving)


def test_model_inconsistency_silences_every_update_but_the_targets():
    model = tiny_model()
    weights = get_weights(model)
    set_weights(model, silenced_weights(model, weights))
    images, masks = torch.randn(4, 1, 32, 32), (torch.rand(4, 32, 32) > 0.8).long()
    assert update_is_silenced(model, images, masks)
    set_weights(model, weights)
    assert not update_is_silenced(model, images, masks)


def test_target_update_is_recovered_from_the_aggregate():
    rng = np.random.default_rng(1)
    sent = {k: [rng.standard_normal((3, 2))] for k in range(3)}
    target_returned = [rng.standard_normal((3, 2))]
    n = {0: 10, 1: 30, 2: 20}
    returned = {0: target_returned, 1: sent[1], 2: sent[2]}
    aggregate = [sum(n[k] * returned[k][0] for k in n) / sum(n.values())]
    recovered = reconstruct_target_update(aggregate=aggregate, sent=sent, num_examples=n, target=0)
    assert np.allclose(recovered[0], target_returned[0])


def test_backdoor_implant_makes_the_trigger_draw_the_fixed_mask():
    from fl_mia.attacker.poisoning.backdoor import BackdoorPoisoner

    model = tiny_model()
    weights = get_weights(model)
    poisoner = BackdoorPoisoner(knowledge(model), model, targets=[0], trigger_size=4, steps=60, lr=3e-3)
    implanted = poisoner.poison(server_round=1, hospital=0, global_weights=weights)
    assert poisoner.poison(server_round=1, hospital=2, global_weights=weights) is None  # not a target
    images = knowledge(model).population.images
    set_weights(model, weights)
    before = poisoner.success(model, images, num_classes=1)
    set_weights(model, implanted)
    after = poisoner.success(model, images, num_classes=1)
    assert after > before + 0.3 and after > 0.5
    assert poisoner.last_implanted is not None
    # An integrity threat: its own success rate, no membership signal declared.
    set_weights(model, weights)
    rate_before = poisoner.success_rate(model, images, num_classes=1)
    set_weights(model, implanted)
    assert poisoner.success_rate(model, images, num_classes=1) > rate_before + 0.3
    declared = poisoner.declaration(poison_rounds=None)
    assert declared.goal == "integrity" and declared.matched_signals == ()
