"""Suites: grid expansion, skip / resume / failure bookkeeping (fake runs), and one real kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fl_mia.app.suite import SUITE_JSON, SuiteError, load_suite, run_suite
from fl_mia.run_folder import set_status, write_json, write_toml
from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parent.parent


def _write_suite(tmp_path: Path, body: str, *, raw: dict | None = None) -> Path:
    write_toml(tmp_path / "base.toml", raw or tiny_raw())
    path = tmp_path / "suite.toml"
    path.write_text(body)
    return path


GRID = """
name = "grid"
config = "base.toml"
seeds = [0, 1]
set = ["federation.rounds=1"]
[axes.defence]
none = {}
argmax = { set = ['defences.output.mode="argmax"'] }
"""


def test_grid_expands_axes_times_seeds_with_a_baseline_per_seed(tmp_path):
    suite = load_suite(_write_suite(tmp_path, GRID))
    assert [c.name for c in suite.cells] == [
        "defence=none__seed=0", "defence=none__seed=1", "defence=argmax__seed=0", "defence=argmax__seed=1",
    ]  # fmt: skip
    argmax = suite.cells[3]
    assert argmax.cfg.seed == 1 and argmax.cfg.defences.output.mode == "argmax" and argmax.cfg.federation.rounds == 1
    assert argmax.baseline == "defence=none__seed=1"


def test_a_value_names_its_own_baseline_on_the_same_seed_and_other_axes(tmp_path):
    body = GRID.replace("[axes.defence]", "[axes.threat]\nhonest = {}\nsecagg = {}\nmi = { baseline = \"secagg\" }\n[axes.defence]")
    cells = {c.name: c for c in load_suite(_write_suite(tmp_path, body)).cells}
    assert cells["threat=mi__defence=argmax__seed=1"].baseline == "threat=secagg__defence=argmax__seed=1"
    assert cells["threat=secagg__defence=argmax__seed=1"].baseline == "threat=honest__defence=none__seed=1"  # default: first values
    with pytest.raises(SuiteError, match="axes.threat.mi.baseline: 'nowhere' is not a value of axes.threat"):
        load_suite(_write_suite(tmp_path, body.replace('baseline = \"secagg\"', 'baseline = \"nowhere\"')))


def test_the_threats_suite_pairs_each_threat_with_its_baseline_on_100_targeted_candidates():
    """Sized as its file says: ≥ 5 seeds, ≥ 100 + 100 lesion-matched candidates in every hospital (trap weights target all)."""
    import tomllib

    from fl_mia.app.preflight import load_experiment
    from server.federation import draw_candidates

    path = ROOT / "configs" / "suites" / "threats.toml"
    raw = tomllib.loads(path.read_text())
    threats = raw["axes"]["threat"]
    assert len(raw["seeds"]) >= 5 and "referee.match_lesion_area=true" in raw["set"]
    assert threats["secagg_model_inconsistency"]["baseline"] == threats["secagg_trap_weights"]["baseline"] == "secagg"
    assert all(spec.get("baseline") == "honest" for name, spec in threats.items() if name not in ("honest", "secagg") and not name.startswith("secagg_"))
    cfg = load_experiment(path.parent / raw["config"], [*raw["set"], f"seed={raw['seeds'][0]}"])
    candidates, ledger = draw_candidates(cfg)
    is_member = ledger.is_member()
    for hospital in range(cfg.federation.num_hospitals):
        inside = candidates.hospital == hospital
        assert is_member[inside].sum() >= 100 and (~is_member[inside]).sum() >= 100, hospital
    # Each trap can test every candidate of the hospitals it targets (at most one per detector, a
    # target trapped once per trap round in turn): at 16% coverage the uncovered tie at 0.
    suite = load_suite(path)
    for cell in suite.cells:
        threat = cell.cfg.threat
        if threat.poisoning in ("trap_weights", "trap_inconsistency"):
            per_target = threat.poisoner_settings().detectors_per_round * len(threat.poison_rounds) // len(threat.target_hospitals)
            drawn, _ = draw_candidates(cell.cfg)
            most = max(int((drawn.hospital == t).sum()) for t in threat.target_hospitals)
            assert per_target >= most, (cell.name, per_target, most)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('seeds = [0]\n', "config: missing"),
        ('config = "base.toml"\nseeds = []\n', "seeds:"),
        ('config = "base.toml"\ncolour = 1\n', "unknown key 'colour'"),
        ('config = "base.toml"\n[axes.d]\nx = { set = ["federation.rounds=-1"] }\n', "cell d=x__seed=0"),
        ('config = "base.toml"\n[axes.d]\nx = { sett = [] }\n', "axes.d.x"),
    ],
)
def test_bad_suite_files_fail_in_one_line_naming_the_key(tmp_path, body, fragment):
    with pytest.raises(SuiteError, match=fragment.replace("[", r"\[")) as error:
        load_suite(_write_suite(tmp_path, body))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "suites").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_suite_loads_with_two_seeds_or_more(path):
    suite = load_suite(path)
    assert len(suite.seeds) >= 2 and suite.cells


@pytest.mark.parametrize("name", ["threats", "defences", "paper"])
def test_shipped_suites_load_and_pool_enough_non_members_for_1pct_fpr(name):
    from fl_mia.data import build_hospital
    from fl_mia.referee.candidates import candidates_per_hospital
    from fl_mia.referee.statistics import non_members_needed

    suite = load_suite(ROOT / "configs" / "suites" / f"{name}.toml")
    assert len(suite.seeds) >= 3
    for cell in suite.cells:
        if cell.seed == suite.seeds[0]:
            cfg = cell.cfg
            per_hospital = candidates_per_hospital(
                cfg.referee, hospital=lambda k: build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed), num_hospitals=cfg.federation.num_hospitals
            )
            pooled = sum(per_hospital) * len(suite.seeds)
            assert pooled >= 2 * non_members_needed(0.01), (cell.name, pooled)


class FakeRuns:
    """Stands in for run_experiment / resume_experiment: writes what a finished run leaves."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.fail = fail
        self.ran: list[str] = []
        self.resumed: list[str] = []

    def _finish(self, cfg, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_toml(folder / "config.toml", cfg.to_toml_dict())
        write_json(folder / "metrics.json", {"experiment": cfg.name, "seed": cfg.seed})
        set_status(folder, "complete", wall_time_s=0.01)

    def run(self, cfg, *, out: Path):
        self.ran.append(out.name)
        if out.name in self.fail:
            raise RuntimeError("boom")
        self._finish(cfg, out)

    def resume(self, folder: Path, *, cfg):
        self.resumed.append(folder.name)
        self._finish(cfg, folder)


def test_failed_cells_are_recorded_and_the_suite_goes_on(tmp_path):
    suite = load_suite(_write_suite(tmp_path, GRID))
    fake = FakeRuns(fail={"defence=none__seed=1"})
    summary = run_suite(suite, out=tmp_path / "out", run=fake.run, resume_run=fake.resume)
    states = {c["name"]: c["state"] for c in summary["cells"]}
    assert states["defence=none__seed=1"] == "failed" and list(states.values()).count("complete") == 3
    assert "boom" in next(c["error"] for c in summary["cells"] if c["state"] == "failed")
    assert json.loads((tmp_path / "out" / SUITE_JSON).read_text())["cells"] == summary["cells"]


def test_cells_run_seed_by_seed_and_are_recorded_in_listing_order(tmp_path):
    suite = load_suite(_write_suite(tmp_path, GRID))
    fake = FakeRuns()
    summary = run_suite(suite, out=tmp_path / "out", run=fake.run, resume_run=fake.resume)
    # A suite stopped after two cells has every value of the axis at seed 0, not one value at both seeds.
    assert fake.ran == ["defence=none__seed=0", "defence=argmax__seed=0", "defence=none__seed=1", "defence=argmax__seed=1"]
    assert [c["name"] for c in summary["cells"]] == [c.name for c in suite.cells]


def test_resume_skips_complete_cells_resumes_interrupted_and_reruns_failed(tmp_path):
    suite = load_suite(_write_suite(tmp_path, GRID))
    out = tmp_path / "out"
    first = FakeRuns(fail={"defence=none__seed=1"})
    run_suite(suite, out=out, run=first.run, resume_run=first.resume)
    interrupted = out / "cells" / "defence=argmax__seed=0"
    set_status(interrupted, "running", pid=-1, host="elsewhere")  # as if killed mid-run
    with pytest.raises(SuiteError, match="--resume"):
        run_suite(suite, out=out, run=first.run, resume_run=first.resume)
    second = FakeRuns()
    summary = run_suite(suite, out=out, resume=True, run=second.run, resume_run=second.resume)
    assert second.resumed == ["defence=argmax__seed=0"]
    assert second.ran == ["defence=none__seed=1"]  # failed before it wrote anything: run again
    assert all(c["state"] == "complete" for c in summary["cells"])
    assert sum(not c["skipped"] for c in summary["cells"]) == 1 + 1  # interrupted + failed


def test_only_runs_the_chosen_cells_keeps_complete_ones_listed_and_leaves_the_rest_missing(tmp_path):
    from fl_mia.report.collect import missing_cells

    suite = load_suite(_write_suite(tmp_path, GRID))
    out = tmp_path / "out"
    first = FakeRuns()
    run_suite(suite, out=out, run=first.run, resume_run=first.resume, only=["seed=0", "defence=none"])
    assert first.ran == ["defence=none__seed=0"]
    second = FakeRuns()
    summary = run_suite(suite, out=out, resume=True, run=second.run, resume_run=second.resume, only=["defence=argmax", "seed=1"])
    assert second.ran == ["defence=argmax__seed=1"]
    assert [c["name"] for c in summary["cells"]] == ["defence=none__seed=0", "defence=argmax__seed=1"]
    assert sorted(c["name"] for c in missing_cells([summary])) == ["defence=argmax__seed=0", "defence=none__seed=1"]
    for bad, fragment in [("seed=7", "no value '7'"), ("colour=red", "keys are"), ("defence", "axis=value")]:
        with pytest.raises(SuiteError, match=fragment):
            run_suite(suite, out=out, resume=True, run=second.run, resume_run=second.resume, only=[bad])


def test_a_cell_another_process_is_running_is_left_alone(tmp_path):
    import socket

    suite = load_suite(_write_suite(tmp_path, GRID))
    out = tmp_path / "out"
    run_suite(suite, out=out, run=FakeRuns().run, resume_run=FakeRuns().resume)
    busy = out / "cells" / "defence=argmax__seed=0"
    (busy / "metrics.json").unlink()
    set_status(busy, "running", pid=os.getppid(), host=socket.gethostname())  # a live process on this host
    again = FakeRuns()
    summary = run_suite(suite, out=out, resume=True, run=again.run, resume_run=again.resume)
    assert again.ran == [] and again.resumed == []
    assert (busy / "config.toml").is_file(), "a running cell's folder must not be removed"
    assert "still running" in next(c["error"] for c in summary["cells"] if c["name"] == busy.name)


@pytest.mark.slow
def test_tiny_suite_killed_midway_finishes_only_the_missing_cells(tmp_path):
    raw = tiny_raw(attacker={"prediction_attacks": ["loss"], "shadows": {"epochs": 1}})
    path = _write_suite(tmp_path, 'name = "tiny"\nconfig = "base.toml"\nseeds = [0, 1]\n', raw=raw)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fl_mia.app.cli", "suite", str(path), "--out", str(out), "--shared-ray"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    first_cell = out / "cells" / "seed=0"
    deadline = time.time() + 900
    while time.time() < deadline and process.poll() is None:
        if (out / SUITE_JSON).is_file():  # written after the first cell finishes
            break
        time.sleep(1)
    assert process.poll() is None, process.stdout.read().decode()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_at = (first_cell / "metrics.json").stat().st_mtime
    assert not (out / "cells" / "seed=1" / "metrics.json").exists()
    again = subprocess.run([*command, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "seed=0 · skipped" in again.stdout
    assert (first_cell / "metrics.json").stat().st_mtime == finished_at
    summary = json.loads((out / SUITE_JSON).read_text())
    assert [c["state"] for c in summary["cells"]] == ["complete", "complete"], [c.get("error") for c in summary["cells"]]
    assert "suite overhead" in again.stdout
    # The cells joined one Ray head, which is gone now, and joining it changed no result:
    # the cell equals the same config run on its own (its own Ray start).
    assert "cells join one Ray head" in again.stdout
    from fl_mia.app.experiment import run_experiment
    from fl_mia.app.ray_head import processes_mentioning
    from fl_mia.app.suite_ray import ray_marker

    assert not processes_mentioning(str(ray_marker(out))), "the suite's Ray head outlived it"
    alone = run_experiment(load_suite(path).cells[1].cfg, runs_root=tmp_path / "alone").run_dir
    assert (alone / "rounds.csv").read_bytes() == (out / "cells" / "seed=1" / "rounds.csv").read_bytes()


def test_cli_refuses_a_bad_suite_in_one_line_and_creates_nothing(tmp_path):
    from typer.testing import CliRunner

    from fl_mia.app.cli import app

    path = _write_suite(tmp_path, 'config = "base.toml"\nseeds = "all"\n')
    result = CliRunner().invoke(app, ["suite", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "seeds:" in result.output
    assert not (tmp_path / "out").exists()
