"""Patient-level membership and intervals in the referee's output (metrics.json, keep_patients.csv)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.referee.candidates import MembershipLedger
from fl_mia.console_summary import privacy_table, render_summary
from tests.test_privacy import run_privacy_step


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("patients")
    return run_dir, run_privacy_step(run_dir)


def _candidates(hospital, patients) -> CandidateSet:
    n = len(hospital)
    return CandidateSet(
        images=np.zeros((n, 1, 2, 2), np.float32), masks=np.zeros((n, 2, 2), np.int64),
        hospital=np.asarray(hospital), patient_ids=np.asarray(patients), image_ids=np.arange(n),
    )


def test_patient_level_keys_patients_by_hospital_and_averages_their_slices():
    # Patient 5 appears for two hospitals: two different people.
    candidates = _candidates([0, 0, 1, 1, 0], [5, 5, 5, 6, 7])
    keep = np.zeros((5, 2), bool)
    keep[[0, 1], 0] = True
    keep[3, 1] = True
    patients = MembershipLedger(keep, candidates.hospital).patient_level(candidates)
    assert patients.table_rows() == [
        {"hospital": 0, "patient": 5, "member": 1, "slices": 2},
        {"hospital": 0, "patient": 7, "member": 0, "slices": 1},
        {"hospital": 1, "patient": 5, "member": 0, "slices": 1},
        {"hospital": 1, "patient": 6, "member": 1, "slices": 1},
    ]
    assert patients.aggregate(np.array([1.0, 3.0, 4.0, 5.0, 6.0])).tolist() == [2.0, 6.0, 4.0, 5.0]


def test_a_patient_with_member_and_non_member_slices_is_refused():
    candidates = _candidates([0, 0], [3, 3])
    keep = np.array([[True], [False]])
    with pytest.raises(ValueError, match="patient 3 of hospital 0"):
        MembershipLedger(keep, candidates.hospital).patient_level(candidates)


def test_patient_metrics_re_score_from_the_saved_files(judged_run):
    run_dir, section = judged_run
    scores = np.load(run_dir / "scores.npz")
    with open(run_dir / "candidates.csv") as handle:
        candidate_rows = list(csv.DictReader(handle))
    with open(run_dir / "keep_patients.csv") as handle:
        patient_rows = list(csv.DictReader(handle))
    row_of = {(r["hospital"], r["patient"]): i for i, r in enumerate(patient_rows)}
    patient_of = np.array([row_of[(r["hospital"], r["patient"])] for r in candidate_rows])
    is_member = np.array([r["member"] == "1" for r in patient_rows])
    assert section["candidate_set"]["patients"] == {"members": int(is_member.sum()), "non_members": int((~is_member).sum())}
    for attack in ("loss", "label_only", "lira_online"):
        mean_scores = np.bincount(patient_of, weights=scores[attack]) / np.bincount(patient_of)
        patient = section[attack]["patient"]["overall"]
        assert patient["auc"] == pytest.approx(roc_auc_score(is_member, mean_scores))
        assert patient["members"] + patient["non_members"] == len(patient_rows)


def test_every_attack_carries_intervals_at_both_levels(judged_run):
    _, section = judged_run
    for attack in ("loss", "label_only", "lira_online"):
        for overall in (section[attack]["overall"], section[attack]["patient"]["overall"]):
            ci = overall["ci"]
            assert 0.0 <= ci["auc"][0] <= ci["auc"][1] <= 1.0
            # The tiny run has far fewer than 100 non-members: no TPR at 1% FPR can be resolved.
            assert ci["tpr_at_1pct_fpr"] is None
            assert ci["resolvability"]["tpr_at_1pct_fpr"] == {"resolvable": False, "non_members_needed": 100}
        assert section[attack]["overall"]["ci"]["unit"] == "patient"


def test_same_seed_same_intervals(judged_run, tmp_path):
    _, section = judged_run
    again = run_privacy_step(tmp_path)
    for attack in ("loss", "label_only"):
        assert again[attack]["overall"]["ci"] == section[attack]["overall"]["ci"]
        assert again[attack]["patient"] == section[attack]["patient"]


def test_summary_shows_intervals_and_a_dash_for_unresolvable_tprs(judged_run):
    run_dir, _ = judged_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = privacy_table(metrics)
    assert table is not None
    text = render_summary({**metrics, **_utility_stub()})
    auc = metrics["privacy"]["loss"]["overall"]
    assert f"{auc['auc']:.3f} [{auc['ci']['auc'][0]:.2f}, {auc['ci']['auc'][1]:.2f}]" in text
    assert "—" in text and "needs ≥100 non-members" in text
    assert "patient" in text


def _utility_stub() -> dict:
    zeros = {key: 0.0 for key in ("dice", "iou", "dice_pooled", "dice_lesion_images", "loss")}
    return {
        "experiment": "tiny", "seed": 0, "rounds_completed": 1, "wall_time_s": 1.0,
        "cost": {"model_parameters": 1}, "utility": {**zeros, "initial": None, "per_hospital": {}},
    }
