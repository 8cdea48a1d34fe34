"""The server-side recorder of update signals, fed by hand (no Flower)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_mia.config import ModelConfig, TrainingConfig
from fl_mia.models import build_model, get_weights
from fl_mia.training import train_local
from fl_mia.data import Split
from fl_mia.attacker.updates.recorder import UpdateAttackRecorder, candidate_round_scores, candidate_scores, source_guess
from fl_mia.contracts import HospitalReply
from fl_mia.attacker.knowledge import AttackerKnowledge, CandidateSet


@pytest.fixture(scope="module")
def setting():
    """Two hospitals train on disjoint halves of 16 noise images from the same sent model."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((16, 1, 32, 32)).astype(np.float32)
    masks = (rng.random((16, 32, 32)) > 0.8).astype(np.int64)
    sent = get_weights(model)
    returned = []
    for hospital in range(2):
        own = slice(hospital * 8, hospital * 8 + 8)
        split = Split(images[own], masks[own], np.arange(8), np.arange(8))
        torch.manual_seed(1)
        local = build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)
        local.load_state_dict(model.state_dict())
        train_local(local, split, TrainingConfig(lr=3e-3, local_epochs=15, batch_size=4), seed=hospital)
        returned.append(get_weights(local))
    return model, images, masks, sent, returned


def recorder_for(setting, rounds=2, signals=None):
    model, images, masks, _, _ = setting
    candidates = CandidateSet(images, masks, np.zeros(len(images), np.int64), np.arange(len(images)), np.arange(len(images)))
    knowledge = AttackerKnowledge(population=None, candidates=candidates, training=TrainingConfig(), shadows=None, seed=0)
    return UpdateAttackRecorder(knowledge, model=model, num_hospitals=3, total_rounds=rounds, signals=signals)


def replies(setting, server_round):
    _, _, _, sent, returned = setting
    return [
        HospitalReply(round=server_round, hospital=h, num_examples=8, metrics={}, weights=returned[h], sent_weights=sent)
        for h in range(2)
    ]


def test_signals_fill_observed_hospitals_and_leave_the_rest_nan(setting):
    recorder = recorder_for(setting)
    recorder.on_fit_replies(1, replies(setting, 1), 0)
    for name, values in recorder.scores.items():
        assert values.shape == (2, 16, 3)
        assert np.isfinite(values[0, :, :2]).all(), name
        assert np.isnan(values[0, :, 2]).all() and np.isnan(values[1]).all()


def test_each_hospital_scores_its_own_members_higher_and_source_is_recovered(setting):
    recorder = recorder_for(setting)
    recorder.on_fit_replies(1, replies(setting, 1), 0)
    drawn_for = np.array([0] * 8 + [1] * 8)
    scores = candidate_scores(recorder, drawn_for)
    own = recorder.final_round("returned_loss")
    # every candidate is better fitted by the hospital that trained on it
    assert (own[:8, 0] > own[:8, 1]).mean() > 0.9 and (own[8:, 1] > own[8:, 0]).mean() > 0.9
    assert (source_guess(recorder)[:8] == 0).mean() > 0.9 and (source_guess(recorder)[8:] == 1).mean() > 0.9
    assert set(scores) == {f"update.{s}{v}" for s in recorder.signals for v in ("", ".accumulated")}
    assert all(np.isfinite(v).all() for v in scores.values())


def test_accumulation_sums_observed_rounds_only(setting):
    recorder = recorder_for(setting)
    recorder.on_fit_replies(1, replies(setting, 1), 0)
    recorder.on_fit_replies(2, replies(setting, 2)[:1], 0)  # hospital 1 not observed in round 2
    loss = recorder.scores["loss_reduction"]
    assert np.allclose(recorder.accumulated("loss_reduction")[:, 0], loss[0, :, 0] + loss[1, :, 0])
    assert np.allclose(recorder.accumulated("loss_reduction")[:, 1], loss[0, :, 1])
    assert np.allclose(recorder.final_round("loss_reduction")[:, 1], loss[0, :, 1])  # its last observed round
    per_round = candidate_round_scores(recorder, np.array([0] * 8 + [1] * 8))
    assert sorted(per_round["update.loss_reduction"]) == [1, 2]


def test_state_round_trips_for_checkpoints(setting):
    recorder = recorder_for(setting)
    recorder.on_fit_replies(1, replies(setting, 1), 0)
    restored = recorder_for(setting)
    restored.load_state_dict(recorder.state_dict())
    for name in recorder.scores:
        assert np.array_equal(recorder.scores[name], restored.scores[name], equal_nan=True)


def test_compare_refuses_runs_with_different_candidates(tmp_path):
    import json

    from fl_mia.app.comparison import ComparisonError, load_runs

    for name, hospitals in (("a", "0,0"), ("b", "0,1")):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"experiment": name, "threat_model": "honest-but-curious"}))
        np.savez(run / "scores.npz", loss=np.array([0.1, 0.2]))
        np.save(run / "keep.npy", np.array([[True, False], [False, True]]))
        rows = "\n".join(f"{i},{h},{i},{i}" for i, h in enumerate(hospitals.split(",")))
        (run / "candidates.csv").write_text("candidate,hospital,patient,image\n" + rows + "\n")
    with pytest.raises(ComparisonError, match="candidate set differs"):
        load_runs([tmp_path / "a", tmp_path / "b"])
    assert len(load_runs([tmp_path / "a", tmp_path / "a"])) == 2
    with pytest.raises(ComparisonError, match="no metrics.json"):
        load_runs([tmp_path / "missing"])


def test_without_source_inference_each_update_is_scored_on_its_own_candidates_only(setting, monkeypatch):
    """The membership scores are those of the every-candidate recorder, for a fraction of the passes."""
    import fl_mia.attacker.forwards as forwards_module

    model, images, masks, _, _ = setting
    asked_about = np.array([0, 1] * 8, dtype=np.int64)  # each hospital asked about its own and the other's scans
    candidates = CandidateSet(images, masks, asked_about, np.arange(16), np.arange(16))
    knowledge = AttackerKnowledge(population=None, candidates=candidates, training=TrainingConfig(), shadows=None, seed=0)
    scored = []
    real_logits = forwards_module.predict_logits
    monkeypatch.setattr(forwards_module, "predict_logits", lambda m, im, *a, **k: scored.append(len(im)) or real_logits(m, im, *a, **k))

    results = {}
    for every_candidate in (True, False):
        scored.clear()
        recorder = UpdateAttackRecorder(knowledge, model=model, num_hospitals=2, total_rounds=1, every_candidate=every_candidate)
        recorder.on_fit_replies(1, replies(setting, 1), 0)
        results[every_candidate] = (candidate_scores(recorder, asked_about), list(scored), recorder)
    everything, passes_all, _ = results[True]
    own_only, passes_own, recorder = results[False]
    for name in everything:
        np.testing.assert_allclose(own_only[name], everything[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # sent model once for the union, then each returned model on its own 8 candidates
    assert passes_all == [16, 16, 16] and passes_own == [16, 8, 8]
    rows_of_other = asked_about != 0
    assert np.isnan(recorder.scores["returned_loss"][0, rows_of_other, 0]).all()
    assert np.isfinite(recorder.scores["gradient_alignment"][0, ~rows_of_other, 0]).all()


@pytest.mark.parametrize("listed", [("gradient_alignment",), ("loss_log_ratio", "returned_loss"), ()])
def test_only_the_listed_signals_are_scored_and_they_equal_the_full_recorders(setting, listed):
    every = recorder_for(setting, rounds=1)
    every.on_fit_replies(1, replies(setting, 1), 0)
    assert list(every.scores) == ["returned_loss", "loss_reduction", "loss_log_ratio", "gradient_alignment"]
    some = recorder_for(setting, rounds=1, signals=listed)
    some.on_fit_replies(1, replies(setting, 1), 0)
    assert list(some.scores) == list(listed)
    for name in listed:
        assert np.array_equal(some.scores[name], every.scores[name], equal_nan=True)


def _reference_losses(model, weights, images, masks):
    """A straightforward loss pass: a fresh model with these weights, one batch, no sharing."""
    from fl_mia.losses import segmentation_loss

    fresh = build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)
    fresh.load_state_dict(model.state_dict())
    from fl_mia.models import set_weights

    set_weights(fresh, weights)
    fresh.eval()
    with torch.no_grad():
        logits = fresh(torch.as_tensor(images))
        return segmentation_loss(logits, torch.as_tensor(masks), reduction="none").double().numpy()


def test_shared_forward_passes_give_the_scores_of_a_plain_computation(setting):
    """Every loss signal equals one computed from scratch per model, and gradient alignment
    equals the one-backward-per-candidate reference, while each model runs over the
    candidates once: round 2's sent model is round 1's global model, already run by a
    prediction attack's view, and the final model is read back, not run again."""
    from fl_mia.attacker.predictions.output_signals import per_image_loss
    from fl_mia.attacker.updates.signals import gradient_alignment_loop, update_vector
    from fl_mia.models import set_weights
    from fl_mia.target_view import TargetView

    model, images, masks, sent, returned = setting
    recorder = recorder_for(setting, rounds=2)
    forwards = recorder.forwards
    # Round 1's global model, scored by a per-round prediction attack through the shared passes.
    global_model = build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)
    set_weights(global_model, sent)
    view = TargetView(global_model, 1, shared_logits=forwards.for_view(sent))
    view_losses = per_image_loss(view.logits(images), masks, dice_weight=1.0, ce_weight=1.0)
    assert forwards.passes == 1
    recorder.on_fit_replies(2, replies(setting, 2), 0)  # sent = round 1's global model
    assert forwards.passes == 1 + len(returned)  # the sent model was not run again
    final_view = TargetView(global_model, None, shared_logits=forwards.for_view(sent))
    final_view.logits(images)
    other = images[:3].copy()  # not the candidates: the view runs its own model
    # The shared passes run in the channels-last layout, the view's own model in the default one:
    # the same logits up to ~2e-5 (another model's differ by orders of magnitude more).
    np.testing.assert_allclose(final_view.logits(other).numpy(), view.logits(images)[:3].numpy(), rtol=1e-4, atol=1e-4)
    assert forwards.passes == 1 + len(returned)

    sent_losses = _reference_losses(model, sent, images, masks)
    np.testing.assert_allclose(view_losses, sent_losses, rtol=1e-5, atol=1e-7)
    for h, weights in enumerate(returned):
        returned_losses = _reference_losses(model, weights, images, masks)
        expected = {
            "returned_loss": -returned_losses,
            "loss_reduction": sent_losses - returned_losses,
            "loss_log_ratio": np.log(sent_losses + 1e-8) - np.log(returned_losses + 1e-8),
        }
        for name, values in expected.items():
            np.testing.assert_allclose(recorder.scores[name][1, :, h], values, rtol=1e-5, atol=1e-6, err_msg=name)
        set_weights(model, sent)
        alignment = gradient_alignment_loop(
            model, update_vector(model, sent, weights), images, masks, dice_weight=1.0, ce_weight=1.0
        )
        # atol 1e-3 on a cosine: against a float64 reference the batched float32 gradients (vmap over
        # CPU conv kernels chosen per batch) err by up to ~2e-4 on some machines, the per-candidate
        # loop by ~5e-6; a wrong alignment (other model, other update, no normalisation) errs by far more.
        np.testing.assert_allclose(recorder.scores["gradient_alignment"][1, :, h], alignment, rtol=1e-4, atol=1e-3)


def test_a_hardened_view_hardens_the_shared_logits_as_it_hardens_its_own():
    from fl_mia.attacker.forwards import CandidateForwards
    from fl_mia.config import OutputConfig
    from fl_mia.defences.output import target_view

    torch.manual_seed(0)
    model = build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)
    images = np.random.default_rng(1).standard_normal((6, 1, 32, 32)).astype(np.float32)
    forwards = CandidateForwards(build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1), images)
    noisy = OutputConfig(mode="noisy_probabilities", noise_std=0.1)
    shared = target_view(model, 2, noisy, seed=0, shared_logits=forwards.for_view(get_weights(model)))
    alone = target_view(model, 2, noisy, seed=0)
    # The same released probabilities: the same noise draws on logits that agree to ~2e-5 (the
    # shared passes run channels-last). Compared as probabilities, because the logits of a
    # probability near the release floor magnify that float difference; unhardened or
    # differently seeded outputs would differ by ~0.1, the noise's own scale.
    assert torch.allclose(torch.sigmoid(shared.logits(images)), torch.sigmoid(alone.logits(images)), atol=1e-4)
    assert forwards.passes == 1
