"""The defence's verdict counts every attack: prediction, update, accumulated."""

from fl_mia.app.sweep import sweep_row
from fl_mia.referee.verdict import AUC_BAR, defence_verdict, verdict_line


def attack(auc, tpr, eps, non_members=None):
    return {
        "overall": {"auc": auc, "tpr_at_1pct_fpr": tpr, "non_members": non_members},
        "empirical_epsilon": {"epsilon_lower_bound": eps},
    }


PRIVACY = {
    "loss": attack(0.55, 0.02, 0.1),
    "lira_offline": attack(0.58, 0.09, 0.9),
    "update.returned_loss.accumulated": attack(0.694, 0.05, 0.4),
    "update.loss_reduction": attack(0.52, 0.01, 0.0),
    "source_inference": {"accuracy": 0.9},
    "candidate_set": {"members": 81},
}


def test_an_update_attack_can_be_the_strongest():
    verdict = defence_verdict(PRIVACY)
    assert verdict["strongest_by_auc"]["attack"] == "update.returned_loss.accumulated"
    assert verdict["strongest_by_auc"]["kind"] == "update"
    assert verdict["strongest_at_low_fpr"]["attack"] == "lira_offline"
    assert verdict["largest_empirical_epsilon"]["attack"] == "lira_offline"
    assert verdict["attacks_counted"] == sorted(["loss", "lira_offline", "update.returned_loss.accumulated", "update.loss_reduction"])
    assert verdict["update_attacks_counted"] == 2
    assert verdict["attacks_above_bar"] == ["update.returned_loss.accumulated"]


def test_the_console_line_names_the_strongest_attack_and_the_bar():
    line = verdict_line(defence_verdict(PRIVACY))
    assert "update.returned_loss.accumulated, AUC 0.694" in line and f"above AUC {AUC_BAR}" in line
    quiet = verdict_line(defence_verdict({"loss": attack(0.51, 0.0, 0.0)}))
    assert f"every attack at AUC ≤ {AUC_BAR}" in quiet


def test_no_scored_attack_no_verdict():
    assert defence_verdict({"candidate_set": {}}) is None and verdict_line(None) is None


def test_sweep_row_carries_the_verdict():
    metrics = {"utility": {"dice": 0.5}, "defence_report": {"dp_sgd": {"epsilon_max": 8.0, "epsilon_max_at_reference_delta": 14.2}},
               "privacy": {**PRIVACY, "verdict": defence_verdict(PRIVACY)}}
    row = sweep_row(metrics, series="s", config="c", param="p", value="1", run_dir="r", state="done")
    assert row["strongest_attack"] == "update.returned_loss.accumulated" and row["strongest_auc"] == 0.694
    assert row["largest_empirical_epsilon"] == 0.9 and row["epsilon_dp_sgd_at_1e-5"] == 14.2


# --- wired into the referee -------------------------------------------------------------------

import json  # noqa: E402

import numpy as np  # noqa: E402

from fl_mia.referee.dp_audit import empirical_epsilon  # noqa: E402
from tests.test_privacy import privacy_run  # noqa: E402,F401  (fixture)


def test_referee_audits_every_attack_and_counts_it_in_the_verdict(privacy_run):
    metrics = json.loads((privacy_run / "metrics.json").read_text())["privacy"]
    keep = np.load(privacy_run / "keep.npy")
    scores = np.load(privacy_run / "scores.npz")
    hospital = np.array([int(line.split(",")[1]) for line in (privacy_run / "candidates.csv").read_text().splitlines()[1:]])
    is_member = keep[np.arange(len(keep)), hospital]
    rows = [line.split(",") for line in (privacy_run / "candidates.csv").read_text().splitlines()[1:]]
    _, patient_of = np.unique([(r[1], r[2]) for r in rows], axis=0, return_inverse=True)
    patient_of = patient_of.reshape(-1)
    patient_member = np.bincount(patient_of, weights=is_member) > 0
    for attack in ("loss", "label_only", "lira_online"):
        # One trial per patient (the mean of its slices' scores) first; slices as the labelled secondary.
        patient_scores = np.bincount(patient_of, weights=scores[attack]) / np.bincount(patient_of)
        audit = metrics[attack]["empirical_epsilon"]
        assert audit.pop("unit") == "patient"
        assert audit == empirical_epsilon(patient_scores, patient_member, delta=1e-5)
        slices = metrics[attack]["empirical_epsilon_slices"]
        assert slices.pop("unit").startswith("slice")
        assert slices == empirical_epsilon(scores[attack], is_member, delta=1e-5)
    assert metrics["verdict"]["attacks_counted"] == sorted(["loss", "label_only", "lira_online"])


def test_roc_figure_draws_the_dp_bound(tmp_path):
    from fl_mia.referee.plots import plot_roc_loglog

    curves = {"a": (np.r_[np.ones(5), np.zeros(5)], np.r_[np.ones(5, bool), np.zeros(5, bool)])}
    plot_roc_loglog(tmp_path / "plain.png", curves, title="t")
    plot_roc_loglog(tmp_path / "bound.png", curves, title="t", dp_bound=(2.0, 1e-5))
    assert (tmp_path / "bound.png").read_bytes() != (tmp_path / "plain.png").read_bytes()


def test_tpr_at_1pct_fpr_that_the_non_members_cannot_resolve_names_no_winner():
    few = {name: attack(r["overall"]["auc"], r["overall"]["tpr_at_1pct_fpr"], 0.0, 46) for name, r in PRIVACY.items() if "overall" in r}
    verdict = defence_verdict(few)
    assert verdict["strongest_at_low_fpr"] is None and verdict["non_members_needed_at_1pct_fpr"] == 100
    assert "TPR@1%FPR — (needs ≥100 non-members)" in verdict_line(verdict)
    enough = defence_verdict({name: attack(r["overall"]["auc"], r["overall"]["tpr_at_1pct_fpr"], 0.0, 128) for name, r in PRIVACY.items() if "overall" in r})
    assert enough["strongest_at_low_fpr"]["attack"] == "lira_offline"
