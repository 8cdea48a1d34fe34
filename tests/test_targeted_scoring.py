"""Scores of hospitals sent different models are never pooled: targeted, untargeted, per hospital, headline."""

from __future__ import annotations

import numpy as np
import pytest

from fl_mia.referee.scopes import ScoringScope, headline, headline_scope, resolvable_tpr, scoped_metrics


def two_hospitals_on_two_scales():
    """Hospital 0 separates perfectly on a scale far above hospital 1, which separates nothing.

    Pooled, hospital 1's members and non-members sit between hospital 0's: one ROC over both
    would report neither hospital's figure.
    """
    rng = np.random.default_rng(0)
    n = 40
    hospital = np.repeat([0, 1], 2 * n)
    is_member = np.tile(np.r_[np.ones(n, bool), np.zeros(n, bool)], 2)
    scores = np.r_[10 + rng.random(n), 5 + rng.random(n), 7 + rng.random(2 * n)]
    return scores, is_member, hospital


def score(scope, scores, is_member, hospital):
    return scoped_metrics(
        scores, is_member, hospital, scope=scope, groups=None, seed=np.random.SeedSequence(1), threshold=None
    )


def test_a_threat_that_sent_other_models_is_scored_on_its_targets_and_never_pooled():
    scores, is_member, hospital = two_hospitals_on_two_scales()
    result = score(ScoringScope(targets=(0,), models_differed="hospital 0 got another model"), scores, is_member, hospital)
    assert "overall" not in result and "hospital 0 got another model" in result["overall_note"]
    assert headline_scope(result) == "targeted" and headline(result) is result["targeted"]
    assert result["targeted"]["auc"] == result["per_hospital"]["0"]["auc"] == 1.0
    assert result["targeted"]["hospitals"] == [0] and result["untargeted"]["hospitals"] == [1]
    assert result["untargeted"]["auc"] == result["per_hospital"]["1"]["auc"]
    mean = result["mean_per_hospital"]
    assert mean["auc"] == pytest.approx((1.0 + result["per_hospital"]["1"]["auc"]) / 2)
    assert mean["ci"][0] <= mean["auc"] <= mean["ci"][1]
    assert result["targeted"]["ci"]["auc"] == [1.0, 1.0]


def test_an_honest_server_keeps_the_pooled_figure_as_its_headline():
    scores, is_member, hospital = two_hospitals_on_two_scales()
    result = score(ScoringScope(targets=(0,)), scores, is_member, hospital)
    assert headline_scope(result) == "overall" and headline(result) is result["overall"]
    # The pooled ROC mixes the scales: below hospital 0's own figure, as the issue measured.
    assert result["overall"]["auc"] < result["targeted"]["auc"]
    assert "overall_note" not in result


def test_headline_reads_files_written_before_scopes_and_skips_non_attacks():
    assert headline({"overall": {"auc": 0.7}}) == {"auc": 0.7}
    assert headline({"members": 3}) is None and headline(None) is None


def test_an_unresolvable_tpr_is_never_a_number():
    assert resolvable_tpr({"tpr_at_1pct_fpr": 0.2, "non_members": 99}) is None
    assert resolvable_tpr({"tpr_at_1pct_fpr": 0.2, "non_members": 100}) == 0.2


def test_models_differ_only_where_a_poisoner_replaced_a_payload():
    from fl_mia.attacker.poisoning.isolation import IsolationPoisoner
    from fl_mia.attacker.poisoning.threat_summary import models_differed

    isolation = IsolationPoisoner(targets=[0])
    assert models_differed(None, poison_rounds=None, rounds_run=3, num_hospitals=4) is None
    assert "hospitals [0]" in models_differed(isolation, poison_rounds=None, rounds_run=3, num_hospitals=4)
    assert "rounds: [3]" in models_differed(isolation, poison_rounds=[3], rounds_run=3, num_hospitals=4)
    # Poison rounds after the last round run: every hospital got the same model, the pooled figure stands.
    assert models_differed(isolation, poison_rounds=[5], rounds_run=3, num_hospitals=4) is None


def run_in_process(tmp_path, raw):
    """The real ServerApp federation and ClientApp hospitals in one process (no Ray: seconds, not minutes)."""
    import json

    from flwr.app import Context, RecordDict

    from clients.client_app import make_client_app
    from fl_mia.app.preflight import preflight
    from fl_mia.config.loading import build_config
    from fl_mia.run_folder import create_run_folder
    from server.federation import run_federation
    from server.inprocess_grid import InProcessGrid

    cfg = preflight(build_config(raw))
    run_dir = create_run_folder(cfg.name, runs_root=tmp_path)
    grid = InProcessGrid(make_client_app(cfg), cfg.federation.num_hospitals, seed=cfg.seed)
    context = Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    run_federation(grid, context, cfg, run_dir, on_round_end=lambda _progress: None)
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_last_round_gradient_ascent_changes_the_target_alone(tmp_path):
    """Done when #1: against honest at the same seed, untargeted hospitals are bit-identical (Δ 0.000)
    and the targeted Δ is hospital 0's Δ."""
    from tests.conftest import tiny_raw

    common = {
        "federation": {"rounds": 2, "num_hospitals": 3, "patients_per_hospital": 8},
        "attacker": {"prediction_attacks": ["loss"], "per_round_attacks": [], "shadows": {"epochs": 1},
                     "update_attacks": ["returned_loss", "loss_reduction", "loss_log_ratio"]},
    }  # fmt: skip
    threat = {"poisoning": "gradient_ascent", "target_hospitals": [0], "poison_rounds": [2]}
    runs = {}
    for name, extra in (("honest", {}), ("ascent", {"threat": threat})):
        raw = tiny_raw(**common, **extra)
        raw["name"] = name
        run_dir, metrics = run_in_process(tmp_path, raw)
        with np.load(run_dir / "scores.npz") as archive:
            runs[name] = (metrics["privacy"], {k: archive[k] for k in archive.files})
    hospital = np.array([int(line.split(",")[1]) for line in (run_dir / "candidates.csv").read_text().splitlines()[1:]])
    (honest, honest_scores), (ascent, ascent_scores) = runs["honest"], runs["ascent"]
    untargeted = hospital != 0
    update_attacks = [name for name in ascent if name.startswith("update.") and headline(ascent[name]) is not None]
    assert "update.loss_reduction" in update_attacks
    for name in update_attacks:
        assert np.array_equal(ascent_scores[name][untargeted], honest_scores[name][untargeted]), name
        for k in ("1", "2"):
            assert ascent[name]["per_hospital"][k]["auc"] - honest[name]["per_hospital"][k]["auc"] == 0.0
        targeted_delta = ascent[name]["targeted"]["auc"] - honest[name]["targeted"]["auc"]
        assert targeted_delta == ascent[name]["per_hospital"]["0"]["auc"] - honest[name]["per_hospital"]["0"]["auc"]
        assert headline_scope(ascent[name]) == "targeted" and "overall" not in ascent[name]
        assert headline_scope(honest[name]) == "overall"
    # The poison did reach hospital 0: its matched signal's scores moved.
    assert not np.array_equal(ascent_scores["update.loss_reduction"][~untargeted], honest_scores["update.loss_reduction"][~untargeted])
