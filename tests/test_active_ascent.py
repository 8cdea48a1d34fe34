"""Active per-record ascent: it raises every candidate's loss, its calibration, its shadows' data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_mia.attacker.knowledge import AttackerKnowledge, CandidateSet
from fl_mia.attacker.poisoning import active_ascent
from fl_mia.attacker.poisoning.active_ascent import ActiveAscentPoisoner, calibrated_scores
from fl_mia.attacker.poisoning.settings import ActiveAscentSettings
from fl_mia.attacker.updates.signals import candidate_losses
from fl_mia.config import ModelConfig, TrainingConfig
from fl_mia.data import Split
from fl_mia.models import build_model, get_weights, set_weights
from fl_mia.training import train_local


def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(norm="groupnorm", encoder_depth=3), in_channels=1, classes=1, image_size=32)


def scans(rng, n, size=32):
    images = rng.standard_normal((n, 1, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):  # a bright square lesion the model can learn
        r, c = rng.integers(4, size - 12, 2)
        masks[i, r : r + 8, c : c + 8] = 1
        images[i, 0, r : r + 8, c : c + 8] += 2.0
    return images, masks


def knowledge(rng=None):
    rng = rng or np.random.default_rng(0)
    pop_images, pop_masks = scans(rng, 16)
    cand_images, cand_masks = scans(rng, 8)
    hospital = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # six asked about hospital 0; the server knows no membership
    candidates = CandidateSet(cand_images, cand_masks, hospital, 100 + np.arange(8), 100 + np.arange(8))
    population = Split(pop_images, pop_masks, np.arange(16), np.arange(16))
    training = TrainingConfig(local_epochs=1, batch_size=4, lr=0.002)
    return AttackerKnowledge(population=population, candidates=candidates, training=training, shadows=None, seed=0)


def trained_weights(k):
    model = tiny_model()
    train_local(model, k.population, k.training, seed=0)
    return get_weights(model)


def poisoner(k, **settings):
    defaults = dict(strength=0.003, steps=5, layers="decoder", shadows=2)
    return ActiveAscentPoisoner(k, tiny_model(), targets=[0], settings=ActiveAscentSettings(**{**defaults, **settings}))


def test_ascent_raises_every_candidates_loss_on_the_sent_model_members_or_not():
    k = knowledge()
    honest = trained_weights(k)
    sent = poisoner(k).poison(server_round=3, hospital=0, global_weights=honest)
    model = tiny_model()
    rows = k.candidates.hospital == 0
    losses = {}
    for name, weights in (("honest", honest), ("sent", sent)):
        set_weights(model, weights)
        losses[name] = candidate_losses(model, k.candidates.images[rows], k.candidates.masks[rows], dice_weight=1.0, ce_weight=1.0)
    assert (losses["sent"] > losses["honest"]).all(), losses  # each of the six, whatever its membership


def test_only_targets_are_poisoned_and_their_reply_is_left_out():
    k = knowledge()
    p = poisoner(k)
    honest = trained_weights(k)
    assert p.poison(server_round=3, hospital=1, global_weights=honest) is None
    assert p.poison(server_round=3, hospital=0, global_weights=honest) is not None
    assert p.fold_back(global_weights=honest, sent=honest, returned=honest) is None
    assert p.poisoned_pairs() == {(3, 0)}
    assert p.declaration(poison_rounds=[3]).matched_signals[0] == "update.ascent_calibrated.accumulated"


def test_calibrated_score_by_hand():
    sent = np.array([1.0, 1.0])
    returned = np.array([0.5, 1.0])
    shadows = np.array([[1.0, np.exp(-0.1)], [np.exp(-0.2), np.exp(-0.3)]])  # log-drops: [0, .1] and [.2, .3]
    drops = np.log(sent) - np.log(returned)  # [log 2, 0]
    mean = np.array([0.1, 0.2])
    spread = np.array([-0.1, -0.1, 0.1, 0.1]).std()  # residuals pooled over candidates
    expected = (drops - mean) / spread
    assert calibrated_scores(sent, returned, shadows, calibration="per_record") == pytest.approx(expected, rel=1e-5)
    everything = np.array([0.0, 0.1, 0.2, 0.3])
    glob = (drops - everything.mean()) / everything.std()
    assert calibrated_scores(sent, returned, shadows, calibration="global") == pytest.approx(glob, rel=1e-5)


def test_the_signal_scores_only_the_attacked_hospitals_candidates_and_a_trained_member_scores_higher():
    k = knowledge()
    p = poisoner(k, shadows=3)
    honest = trained_weights(k)
    sent = p.poison(server_round=3, hospital=0, global_weights=honest)
    model = tiny_model()
    set_weights(model, sent)
    # The hospital trains with the recipe the shadows use, on candidates 0-2 and scans of its own.
    own_images, own_masks = scans(np.random.default_rng(5), 2)
    members = Split(np.concatenate([k.candidates.images[:3], own_images]),
                    np.concatenate([k.candidates.masks[:3], own_masks]), np.arange(5), np.arange(5))
    train_local(model, members, k.training, seed=1)
    scores = p.update_signals(server_round=3, hospital=0, sent=sent, returned=get_weights(model))["ascent_calibrated"]
    assert np.isnan(scores[6:]).all() and np.isfinite(scores[:6]).all()
    assert scores[:3].mean() > scores[3:6].mean() + 0.5  # trained-on candidates sit above the shadows' reference
    elsewhere = p.update_signals(server_round=4, hospital=0, sent=sent, returned=sent)["ascent_calibrated"]
    assert np.isnan(elsewhere).all()


def test_calibration_shadows_train_on_the_servers_population_only(monkeypatch):
    k = knowledge()
    seen = []
    original = active_ascent.train_local

    def spy(model, split, cfg, **kwargs):
        seen.append(split.image_ids.copy())
        return original(model, split, cfg, **kwargs)

    monkeypatch.setattr(active_ascent, "train_local", spy)
    p = poisoner(k, shadows=3)
    p.observe_size(hospital=0, num_examples=5)
    p.poison(server_round=2, hospital=0, global_weights=trained_weights(k))
    assert len(seen) == 3 and all(len(ids) == 5 for ids in seen)  # matched to the target's reported size
    for ids in seen:
        assert set(ids) <= set(k.population.image_ids)
        assert not set(ids) & set(k.candidates.image_ids)


def test_the_stealth_budget_caps_the_population_loss():
    k = knowledge()
    capped = poisoner(k, steps=40, strength=0.01, stealth_loss_ratio=1.05)
    capped.poison(server_round=3, hospital=0, global_weights=trained_weights(k))
    (entry,) = capped.history
    assert entry["population_loss_ratio"] <= 1.05
    assert entry["steps"] < 40


def test_state_round_trips():
    k = knowledge()
    p = poisoner(k)
    p.observe_size(hospital=0, num_examples=7)
    p.poison(server_round=3, hospital=0, global_weights=trained_weights(k))
    q = poisoner(k)
    q.load_state_dict(p.state_dict())
    assert q.training_sizes == {0: 7} and q.poisoned_pairs() == {(3, 0)} and q.history == p.history
    assert np.array_equal(q.references[(3, 0)]["shadows"], p.references[(3, 0)]["shadows"])


@pytest.mark.parametrize("rounds", [None, [1, 2]])
def test_attack_rounds_must_come_after_ordinary_training(rounds):
    from fl_mia.config import ThreatConfig

    with pytest.raises(ValueError, match="threat.poison_rounds: active_ascent"):
        ThreatConfig(poisoning="active_ascent", poison_rounds=rounds)
    assert ThreatConfig(poisoning="active_ascent", poison_rounds=[8, 9]).poison_rounds == [8, 9]
