"""fl-mia report: a self-contained HTML file and a markdown twin, from suite folders (synthetic runs, no Ray)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fl_mia.app.cli import app
from fl_mia.referee.metrics import membership_metrics
from fl_mia.report.collect import build_report_data
from fl_mia.report.render import GENERATED_MARK, render_html, render_markdown, write_report
from fl_mia.run_folder import write_csv, write_json, write_npz, write_toml

ROOT = Path(__file__).resolve().parent.parent


def _fake_run(
    folder: Path, *, seed: int, shift: float, defence: str, non_members: int = 60, rival_shifts: dict[str, float] | None = None
) -> None:
    """What a finished run leaves, with scores whose separation ``shift`` the test controls."""
    members = non_members
    hospital = np.repeat([0, 1], (members + non_members) // 2)
    patient = np.arange(members + non_members) // 2
    is_member = (patient % 2 == 0)
    keep = np.zeros((len(hospital), 2), bool)
    keep[np.arange(len(hospital)), hospital] = is_member
    noise = np.random.default_rng(seed + 100).normal(size=len(hospital))
    scores = {"loss": noise + shift * is_member, "update.gradient_alignment": noise + 0.2 * is_member}
    # Further attacks on the same candidates: the shared noise makes them strongly paired.
    scores |= {name: noise + s * is_member for name, s in (rival_shifts or {}).items()}
    folder.mkdir(parents=True)
    write_toml(folder / "config.toml", {"name": "fake", "seed": seed, "defences": {"output": {"mode": defence}}})
    np.save(folder / "keep.npy", keep)
    write_csv(folder / "candidates.csv", [{"candidate": i, "hospital": int(h), "patient": int(p), "image": i}
                                          for i, (h, p) in enumerate(zip(hospital, patient))], ["candidate", "hospital", "patient", "image"])  # fmt: skip
    write_npz(folder / "scores.npz", scores)
    privacy = {name: {"overall": membership_metrics(s, is_member), "per_round": {"1": {"auc": 0.5}, "2": membership_metrics(s, is_member)}}
               for name, s in scores.items()}  # fmt: skip
    privacy["candidate_set"] = {"lesion_area_auc": 0.55}
    write_json(folder / "metrics.json", {
        "experiment": "fake", "seed": seed, "threat_model": "honest", "wall_time_s": 1.0,
        "utility": {"dice": 0.6 - 0.1 * (defence == "argmax") + 0.01 * seed, "dice_pooled": 0.5 - 0.2 * (defence == "argmax") + 0.1 * seed},
        "defence_report": {"dp_sgd": {"epsilon_max": 8.0 + seed}} if defence == "argmax" else {},
        "privacy": privacy,
    })  # fmt: skip


@pytest.fixture(scope="module")
def suite_folder(tmp_path_factory) -> Path:
    return make_fake_suite(tmp_path_factory.mktemp("suite"))


def make_fake_suite(out: Path) -> Path:
    cells = []
    for defence, shift in (("none", 1.5), ("argmax", 0.0)):
        for seed in (0, 1):
            name = f"defence={defence}__seed={seed}"
            _fake_run(out / "cells" / name, seed=seed, shift=shift, defence=defence)
            cells.append({"name": name, "axes": {"defence": defence}, "seed": seed, "state": "complete",
                          "run_dir": str(out / "cells" / name), "baseline": f"defence=none__seed={seed}"})  # fmt: skip
    cells.append({"name": "defence=broken__seed=0", "axes": {"defence": "broken"}, "seed": 0, "state": "failed",
                  "run_dir": str(out / "cells" / "x"), "error": "RuntimeError: boom"})  # fmt: skip
    write_json(out / "suite.json", {"suite": "fake", "description": "two defences", "axes": {"defence": ["none", "argmax"]},
                                    "seeds": [0, 1], "cells": cells, "wall_time_s": 10.0,
                                    "overhead": {"cells_run": 4, "per_cell_seconds": 0.1, "share": 0.04, "suite_seconds": 10.0}})  # fmt: skip
    return out


def test_html_is_complete_and_self_contained(suite_folder):
    page = render_html(build_report_data([suite_folder]))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page), "a reference outside the file"
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 4  # two ROC overlays, the frontier, privacy by round
    for section in ("Findings", "Strongest attack per cell", "Every attack, every cell", "Paired differences", "ROC curves",
                    "Privacy–utility frontier", "ε spent, Dice kept, strongest attack", "Mask-only confound", "Configuration of each cell",
                    "Cells without a result", "Machine, versions, seeds"):  # fmt: skip
        assert f">{section}" in page, section
    # Findings first; the cell that has no result named at the very top.
    assert page.index(">Findings<") < page.index("<table")
    assert page.index("defence=broken__seed=0 (failed)") < page.index(">Findings<")
    assert "defences.output.mode: &#x27;none&#x27; → &#x27;argmax&#x27;" in page


def test_pooled_seeds_resolve_tpr_at_1pct_and_the_leaky_cell_differs_significantly(suite_folder):
    data = build_report_data([suite_folder])
    none, argmax = data["groups"]
    pooled = none["attacks"]["loss"]["pooled"]
    assert pooled["non_members"] == 120  # 60 per seed, two seeds
    assert pooled["ci"]["tpr_at_1pct_fpr"] is not None and pooled["ci"]["tpr_at_0.1pct_fpr"] is None
    difference = argmax["paired_vs_baseline"]["loss"]["auc"]
    assert difference["difference"] < 0 and difference["significant"]
    same = argmax["paired_vs_baseline"]["update.gradient_alignment"]["auc"]
    assert same["difference"] == 0 and not same["significant"]  # identical scores in both cells
    assert "defence=argmax: loss AUC lower" in render_markdown(data)
    assert data["failed_cells"] == [{"name": "defence=broken__seed=0", "state": "failed", "error": "RuntimeError: boom"}]


def test_unresolvable_tprs_are_explained_once_never_per_row(suite_folder):
    page = render_markdown(build_report_data([suite_folder]))
    assert page.startswith(GENERATED_MARK)
    one_seed = render_markdown(build_report_data([suite_folder / "cells" / "defence=none__seed=0"]))
    assert one_seed.count("Blank TPR@1%FPR: fewer than 100 non-members (60 pooled)") == 1
    assert "—" not in one_seed and "—" not in page
    assert "| 1 (0) |" in one_seed  # seeds: how many, then which


def test_cli_writes_both_files_and_a_bad_path_fails_in_one_line(suite_folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(suite_folder), "-o", str(tmp_path / "r.html"), "--markdown", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").is_file() and (tmp_path / "r.json").is_file()
    assert render_markdown(json.loads((tmp_path / "r.json").read_text())) == (tmp_path / "r.md").read_text()
    bad = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("results*.md")), ids=lambda p: p.name)
def test_results_page_is_in_step_with_its_generator(page):
    data = json.loads(page.with_suffix(".json").read_text())
    assert page.read_text() == render_markdown(data), "regenerate with fl-mia report SUITE --markdown docs/results.md"


def test_no_hand_typed_result_page(suite_folder, tmp_path):
    # write_report is the only writer of a results page: its output starts with the generated mark.
    write_report([suite_folder], html_path=None, markdown_path=tmp_path / "results.md")
    assert (tmp_path / "results.md").read_text().startswith(GENERATED_MARK)


def test_rival_attacks_are_compared_on_the_same_run_and_candidates(tmp_path):
    shifts = {"rmia": 1.2, "lira_offline": 0.3, "lira_online": 0.3}
    for seed in (0, 1):
        _fake_run(tmp_path / f"seed{seed}", seed=seed, shift=0.3, defence="none", non_members=100, rival_shifts=shifts)
    data = build_report_data([tmp_path / "seed0", tmp_path / "seed1"])
    rivals = {pair: result for group in data["groups"] for pair, result in group["rival_attacks"].items()}
    assert rivals["rmia − lira_offline"]["auc"]["significant"] and rivals["rmia − lira_offline"]["auc"]["difference"] > 0.1
    assert rivals["rmia − loss"]["auc"]["significant"]
    # Equal separation, same noise: a difference of exactly zero is not significant.
    assert rivals["lira_online − lira_offline"]["auc"]["difference"] == 0.0
    assert not rivals["lira_online − lira_offline"]["auc"]["significant"]
    assert not rivals["lira_offline − loss"]["auc"]["significant"]
    assert "## Attack against attack" in render_markdown(data)
    assert "<h2>Attack against attack</h2>" in render_html(data)


def test_no_rival_rows_without_both_attacks(suite_folder):
    data = build_report_data([suite_folder])
    assert all(not group["rival_attacks"] for group in data["groups"])
    assert "Attack against attack" not in render_markdown(data)


def test_every_attack_is_judged_against_the_auc_bar_with_its_empirical_epsilon(suite_folder, tmp_path):
    from fl_mia.report.tables import audit_rows

    data = build_report_data([suite_folder])
    header, rows = audit_rows(data)
    verdicts = {(row[0], row[1]): row[3] for row in rows}
    assert verdicts[("loss", "defence=none")].startswith("no")  # separation 1.5: far above 0.6
    assert verdicts[("loss", "defence=argmax")].startswith("yes")  # no separation
    assert {attack for attack, _ in verdicts} == {"loss", "update.gradient_alignment"}  # update attacks counted too
    # The empirical ε of each seed's metrics.json is averaged over the seeds.
    run = tmp_path / "run"
    _fake_run(run, seed=0, shift=1.5, defence="none")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["privacy"]["loss"]["empirical_epsilon"] = {"epsilon_lower_bound": 1.25}
    (run / "metrics.json").write_text(json.dumps(metrics))
    row = next(r for r in audit_rows(build_report_data([run]))[1] if r[0] == "loss")
    assert row[4].startswith("1.25")


def test_utility_is_set_against_the_baseline_seed_by_seed(suite_folder):
    from fl_mia.report.tables import utility_rows

    data = build_report_data([suite_folder])
    header, rows = utility_rows(data)
    # Only the defended cell, once per seed, each against the baseline of its own seed.
    assert [(row[0], row[1], row[2]) for row in rows] == [("defence=argmax", "defence=none", "0"), ("defence=argmax", "defence=none", "1")]
    assert rows[0][3:6] == ["0.300", "0.500", "0.60×"]
    assert rows[1][3:6] == ["0.400", "0.600", "0.67×"]
    assert "## Utility against each cell's baseline, seed by seed" in render_markdown(data)
