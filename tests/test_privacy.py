"""Candidates and ledger, metrics against scikit-learn, the ledger guard, the privacy outputs."""

from __future__ import annotations

import csv
import inspect
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from fl_mia.attacker.predictions.base import MembershipAttack, make_attack
from fl_mia.attacker.predictions.settings import PREDICTION_ATTACKS
from fl_mia.config import ConfigError
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital
from fl_mia.models import build_model, get_weights
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.referee.candidates import MembershipLedger
from fl_mia.referee.evaluation import round_score_key
from tests.privacy_step import PrivacyStep
from fl_mia.referee.metrics import membership_metrics, tpr_at_fpr
from fl_mia.run_folder import write_json
from server.federation import draw_candidates, make_server_attacker
from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parent.parent


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_by_hand_on_eight_candidates():
    scores = np.array([5, 4, 2, 1, 3, 0, -1, -2], dtype=float)
    is_member = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    result = membership_metrics(scores, is_member, decision_threshold=3.5)
    assert result["auc"] == pytest.approx(14 / 16)  # member 2 and 1 each lose to non-member 3
    assert result["balanced_accuracy_oracle"] == pytest.approx(0.875)  # threshold 1 (read off the ledger): TPR 1, FPR 1/4
    assert result["tpr_at_1pct_fpr"] == pytest.approx(0.5)  # no false positive allowed: 5 and 4
    assert result["balanced_accuracy"] == pytest.approx(0.75)  # the attack's own threshold: TPR 1/2, TNR 1
    assert (result["members"], result["non_members"]) == (4, 4)
    assert "4 non-members" in result["resolution_note"]


def brute_force_tpr_at(scores, is_member, target):
    """The definition: best TPR over all thresholds whose FPR does not exceed the target."""
    best = 0.0
    for threshold in np.r_[np.unique(scores), np.inf]:
        predicted = scores >= threshold
        if predicted[~is_member].mean() <= target:
            best = max(best, predicted[is_member].mean())
    return best


def test_metrics_equal_sklearn_and_the_definition_on_random_scores():
    rng = np.random.default_rng(0)
    is_member = np.r_[np.ones(1500, bool), np.zeros(2000, bool)]
    scores = rng.normal(size=3500) + 0.8 * is_member
    scores[::7] = np.round(scores[::7], 1)  # ties, which roc_curve collapses
    result = membership_metrics(scores, is_member)
    fpr, tpr, _ = roc_curve(is_member, scores)
    assert result["auc"] == roc_auc_score(is_member, scores)
    assert result["tpr_at_1pct_fpr"] == tpr_at_fpr(fpr, tpr, target_fpr=0.01)
    assert result["tpr_at_1pct_fpr"] == pytest.approx(brute_force_tpr_at(scores, is_member, 0.01))
    assert result["tpr_at_0.1pct_fpr"] == pytest.approx(brute_force_tpr_at(scores, is_member, 0.001))
    assert result["balanced_accuracy_oracle"] == pytest.approx(np.max((tpr + 1 - fpr) / 2))
    assert "resolution_note" not in result


def test_metrics_refuse_mismatched_or_non_finite_scores():
    with pytest.raises(ValueError, match="shape"):
        membership_metrics(np.zeros(3), np.array([True, False]))
    with pytest.raises(ValueError, match="NaN"):
        membership_metrics(np.array([np.nan, 1.0]), np.array([True, False]))


# --- candidates and ledger ---------------------------------------------------------------------


def test_candidates_are_balanced_by_hospital_and_split_by_patient(tiny_cfg):
    candidates, ledger = draw_candidates(tiny_cfg)
    is_member = ledger.is_member()
    for k in range(tiny_cfg.federation.num_hospitals):
        drawn = candidates.hospital == k
        assert is_member[drawn].sum() == (~is_member[drawn]).sum() > 0
        hospital = build_hospital(tiny_cfg.data, tiny_cfg.federation, k, seed=tiny_cfg.seed)
        assert set(candidates.image_ids[drawn & is_member]) <= set(hospital.train.image_ids)
        assert set(candidates.image_ids[drawn & ~is_member]) <= set(hospital.heldout.image_ids)
    assert not set(candidates.patient_ids[is_member]) & set(candidates.patient_ids[~is_member])
    keep = ledger.keep
    assert keep.shape == (len(candidates), tiny_cfg.federation.num_hospitals)
    assert keep.sum(1).max() <= 1  # a scan belongs to one hospital at most


def test_candidate_order_does_not_reveal_membership(tiny_cfg):
    candidates, ledger = draw_candidates(tiny_cfg)
    is_member = ledger.is_member()
    assert not (np.all(is_member[: is_member.sum()]) or np.all(~is_member[: (~is_member).sum()]))


def test_candidate_count_is_configurable_and_capped(tiny_cfg):
    few = build_config(tiny_raw(referee={"candidates_per_hospital": 2}))
    candidates, ledger = draw_candidates(few)
    assert len(candidates) == 2 * 2 * few.federation.num_hospitals
    many = build_config(tiny_raw(referee={"candidates_per_hospital": 10_000}))
    assert len(draw_candidates(many)[0]) == len(draw_candidates(tiny_cfg)[0])


def test_candidates_are_reproducible(tiny_cfg):
    first, ledger_a = draw_candidates(tiny_cfg)
    second, ledger_b = draw_candidates(tiny_cfg)
    assert np.array_equal(first.image_ids, second.image_ids) and np.array_equal(ledger_a.keep, ledger_b.keep)


def test_matched_candidates_leave_the_masks_nothing_to_tell():
    """Plain draws on the overfit base differ in lesions (a mask-only score beats chance); matched ones do not."""
    from fl_mia.config.loading import load_config
    from fl_mia.referee.candidates import LESION_AREA_STRATA, lesion_area, lesion_strata

    plain_cfg = load_config(ROOT / "configs" / "overfit.toml")
    matched_cfg = load_config(ROOT / "configs" / "overfit.toml", ["referee.match_lesion_area=true"])
    plain, plain_ledger = draw_candidates(plain_cfg)
    assert abs(roc_auc_score(plain_ledger.is_member(), lesion_area(plain.masks, "lesion")) - 0.5) > 0.1
    matched, ledger = draw_candidates(matched_cfg)
    is_member, areas = ledger.is_member(), lesion_area(matched.masks, "lesion")
    assert abs(roc_auc_score(is_member, areas) - 0.5) <= 0.05
    edges = np.quantile(areas[areas > 0], np.linspace(0, 1, LESION_AREA_STRATA + 1)[1:-1])
    for k in range(matched_cfg.federation.num_hospitals):
        drawn = matched.hospital == k
        assert is_member[drawn].sum() == (~is_member[drawn]).sum() > 0
        assert (areas[drawn & is_member] == 0).sum() == (areas[drawn & ~is_member] == 0).sum()
        assert set(matched.image_ids[drawn & is_member]) <= set(build_hospital(matched_cfg.data, matched_cfg.federation, k, seed=matched_cfg.seed).train.image_ids)
    assert 0 < (areas == 0).mean() < 0.5  # lesion-free scans exist and are matched, not dropped
    assert lesion_strata(areas, edges).max() <= LESION_AREA_STRATA


# --- the ledger never reaches attack code ------------------------------------------------------


def test_candidate_set_carries_no_membership_field():
    assert {f.name for f in fields(CandidateSet)} == {"images", "masks", "hospital", "patient_ids", "image_ids"}


@pytest.mark.parametrize("name", PREDICTION_ATTACKS.names())
def test_attack_signatures_take_no_ledger(name):
    attack = make_attack(name, build_config(tiny_raw()).attacker, seed=0, classes=1)
    for method in (attack.fit, attack.score):
        parameters = inspect.signature(method).parameters
        assert list(parameters) in (["knowledge", "candidates"], ["target", "candidates"])
        assert not any("ledger" in str(p.annotation).lower() or "keep" in p.name for p in parameters.values())


def test_attack_modules_never_mention_the_ledger():
    for path in (ROOT / "fl_mia" / "attacker" / "predictions").glob("*.py"):
        text = path.read_text()
        assert "MembershipLedger" not in text and "keep.npy" not in text and "is_member" not in text, path.name


def _contains_ledger(value, ledger: MembershipLedger, seen: set[int]) -> bool:
    if id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, MembershipLedger) or value is ledger._keep:
        return True
    if isinstance(value, np.ndarray):
        return value.dtype == bool and value.shape == ledger._keep.shape and np.array_equal(value, ledger._keep)
    children = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    if hasattr(value, "__dict__") and not isinstance(value, type):
        children = [*children, *vars(value).values()]
    return any(_contains_ledger(child, ledger, seen) for child in children)


class SpyAttack(MembershipAttack):
    """Records whether anything handed to it holds the ledger (walks every argument)."""

    name = "spy"
    calls: list[bool] = []
    ledger: MembershipLedger | None = None

    def fit(self, knowledge, candidates):
        SpyAttack.calls.append(_contains_ledger((knowledge, candidates), SpyAttack.ledger, set()))
        return self

    def score(self, target, candidates):
        SpyAttack.calls.append(_contains_ledger((target, candidates), SpyAttack.ledger, set()))
        return np.zeros(len(candidates))


@pytest.fixture
def spy_attack():
    PREDICTION_ATTACKS.register("spy", summary="records what it is handed", factory=lambda settings, **_: SpyAttack())
    yield "spy"
    PREDICTION_ATTACKS.unregister("spy")


def test_privacy_step_hands_attacks_no_ledger(spy_attack, tmp_path):
    cfg = build_config(tiny_raw(attacker={"prediction_attacks": [spy_attack], "per_round_attacks": [spy_attack]}))
    step = PrivacyStep(cfg, tmp_path)
    SpyAttack.ledger, SpyAttack.calls = step.ledger, []
    assert _contains_ledger({"x": [step.ledger]}, step.ledger, set())  # the guard does see it
    weights = get_weights(step.model)
    step.observe_round(0, weights)
    step.finish(weights)
    assert SpyAttack.calls and not any(SpyAttack.calls)


# --- config ------------------------------------------------------------------------------------


def test_unknown_attack_names_the_field():
    with pytest.raises(ConfigError, match="attacker.prediction_attacks.*unknown prediction attack 'lyra'; choose from loss, "):
        build_config(tiny_raw(attacker={"prediction_attacks": ["lyra"], "per_round_attacks": []}))


def test_unknown_update_signal_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="attacker.update_attacks.*'grad'; choose from returned_loss, .*gradient_alignment"):
        build_config(tiny_raw(attacker={"update_attacks": ["grad"]}))


def test_per_round_attacks_must_be_listed_attacks():
    with pytest.raises(ConfigError, match="attacker.*per_round_attacks names 'label_only'"):
        build_config(tiny_raw(attacker={"prediction_attacks": ["loss"], "per_round_attacks": ["label_only"]}))


def test_privacy_step_is_skipped_without_attacker_data():
    # Shadow models need the attacker's own scans; a federation without them still runs.
    no_data = build_config(tiny_raw(federation={"attacker_patients": 0}))
    assert make_server_attacker(no_data, draw_candidates(no_data)[0], None) is None
    disabled = build_config(tiny_raw(referee={"enabled": False}))
    assert make_server_attacker(disabled, draw_candidates(disabled)[0], None) is None


# --- outputs -----------------------------------------------------------------------------------

FAST_ATTACKER = {
    "prediction_attacks": ["loss", "label_only", "lira_online"], "per_round_attacks": ["loss", "label_only"],
    "shadows": {"epochs": 1, "models": 2}, "label_only": {"queries": 1},
}


def run_privacy_step(run_dir: Path) -> dict:
    cfg = build_config(tiny_raw(attacker=FAST_ATTACKER))
    step = PrivacyStep(cfg, run_dir)
    torch.manual_seed(0)  # the "global model" here is a fixed random initialisation
    weights = get_weights(build_model(cfg.model, in_channels=1, classes=1))
    step.observe_round(0, weights)
    step.observe_round(1, weights)
    section = step.finish(weights)
    write_json(run_dir / "metrics.json", {"privacy": section})  # as write_federation_outputs does
    return section


@pytest.fixture(scope="module")
def privacy_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("privacy")
    run_privacy_step(run_dir)
    return run_dir


def test_privacy_outputs_exist_and_align(privacy_run):
    for name in ("keep.npy", "candidates.csv", "scores.npz", "roc_loglog.png", "privacy_by_round.png"):
        assert (privacy_run / name).is_file(), name
    keep = np.load(privacy_run / "keep.npy")
    scores = np.load(privacy_run / "scores.npz")
    with open(privacy_run / "candidates.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert set(scores.files) == {"loss", "label_only", "lira_online", *(round_score_key(a, r) for a in ("loss", "label_only") for r in (0, 1))}
    assert all(len(scores[key]) == len(keep) == len(rows) for key in scores.files)
    assert (Path(privacy_run) / "shadows" / "reference.pt").is_file()


def test_metrics_json_equals_sklearn_on_saved_scores(privacy_run):
    metrics = json.loads((privacy_run / "metrics.json").read_text())["privacy"]
    keep = np.load(privacy_run / "keep.npy")
    scores = np.load(privacy_run / "scores.npz")
    with open(privacy_run / "candidates.csv") as handle:
        hospital = np.array([int(row["hospital"]) for row in csv.DictReader(handle)])
    is_member = keep[np.arange(len(keep)), hospital]
    for attack in ("loss", "label_only", "lira_online"):
        fpr, tpr, _ = roc_curve(is_member, scores[attack])
        overall = metrics[attack]["overall"]
        assert overall["auc"] == roc_auc_score(is_member, scores[attack])
        assert overall["tpr_at_1pct_fpr"] == tpr[fpr <= 0.01].max()
        assert overall["tpr_at_0.1pct_fpr"] == tpr[fpr <= 0.001].max()
        for k, values in metrics[attack]["per_hospital"].items():
            mine = hospital == int(k)
            assert values["auc"] == roc_auc_score(is_member[mine], scores[attack][mine])
    round_one = metrics["loss"]["per_round"]["1"]
    assert round_one["auc"] == roc_auc_score(is_member, scores[round_score_key("loss", 1)])


def test_same_config_same_scores_file(privacy_run, tmp_path):
    run_privacy_step(tmp_path)
    assert (tmp_path / "scores.npz").read_bytes() == (privacy_run / "scores.npz").read_bytes()
    assert (tmp_path / "keep.npy").read_bytes() == (privacy_run / "keep.npy").read_bytes()


def test_shadows_are_reused_from_the_run_folder(privacy_run):
    cfg = build_config(tiny_raw(attacker=FAST_ATTACKER))
    step = PrivacyStep(cfg, privacy_run)
    step.attacker._fitted("loss")
    assert step.attacker.shadows.train_seconds == {}  # loaded, not trained again
