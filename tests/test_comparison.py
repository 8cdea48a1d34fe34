"""``fl-mia compare``: runs told apart by folder, earlier comparisons kept, no unresolvable TPR shown."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fl_mia.app.cli import app
from fl_mia.app.comparison import load_runs, run_labels


def saved_run(folder: Path, *, experiment: str, non_members: int, seed: int) -> Path:
    """A finished run folder as the referee writes it, with ``non_members`` of each side."""
    folder.mkdir(parents=True)
    n = 2 * non_members
    rng = np.random.default_rng(seed)
    is_member = np.arange(n) < non_members
    scores = rng.normal(size=n) + is_member
    scope = {"auc": 0.7 + seed / 100, "tpr_at_1pct_fpr": 0.05, "members": non_members, "non_members": non_members}
    metrics = {
        "experiment": experiment, "threat_model": "honest-but-curious", "defences": [],
        "utility": {"dice": 0.5}, "privacy": {"loss": {"overall": scope, "per_hospital": {"0": scope}}},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    np.savez(folder / "scores.npz", loss=scores)
    np.save(folder / "keep.npy", is_member[:, None])
    rows = "\n".join(f"{i},0,{i},{i}" for i in range(n))
    (folder / "candidates.csv").write_text("candidate,hospital,patient,image\n" + rows + "\n")
    return folder


def test_two_runs_of_one_config_get_distinct_labels_and_both_curves(tmp_path):
    a = saved_run(tmp_path / "first", experiment="honest", non_members=120, seed=0)
    b = saved_run(tmp_path / "second", experiment="honest", non_members=120, seed=1)
    assert run_labels(load_runs([a, b])) == ["honest [first]", "honest [second]"]
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--attack", "loss", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "cmp" / "comparison.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == ["honest [first]", "honest [second]"]
    assert rows[0]["loss:auc"] != rows[1]["loss:auc"]
    assert rows[0]["loss:tpr@1%"] == "0.05"  # 120 non-members resolve 1% FPR


def test_an_earlier_comparison_is_kept_unless_overwrite_is_asked_for(tmp_path):
    a = saved_run(tmp_path / "a", experiment="a", non_members=10, seed=0)
    out = tmp_path / "cmp"
    assert CliRunner().invoke(app, ["compare", str(a), "--out", str(out)]).exit_code == 0
    before = (out / "comparison.csv").read_bytes()
    again = CliRunner().invoke(app, ["compare", str(a), "--out", str(out)])
    assert again.exit_code == 2 and "already holds a comparison" in again.output and "--overwrite" in again.output
    assert (out / "comparison.csv").read_bytes() == before
    assert CliRunner().invoke(app, ["compare", str(a), "--out", str(out), "--overwrite"]).exit_code == 0


def test_tpr_that_the_candidates_cannot_resolve_is_never_shown(tmp_path):
    a = saved_run(tmp_path / "a", experiment="a", non_members=10, seed=0)
    result = CliRunner().invoke(app, ["compare", str(a), "--attack", "loss", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "0.050" not in result.output and "cannot resolve it" in result.output
    with open(tmp_path / "cmp" / "comparison.csv") as handle:
        assert next(csv.DictReader(handle))["loss:tpr@1%"] == ""
