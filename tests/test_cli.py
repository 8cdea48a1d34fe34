from pathlib import Path

import torch
from typer.testing import CliRunner

from fl_mia.app.cli import app

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(ROOT / "configs" / "quickstart.toml")


def run_cli(*args):
    return CliRunner().invoke(app, list(args))


def test_bad_override_exits_non_zero_with_one_line(tmp_path):
    result = run_cli("run", QUICKSTART, "--set", "federation.rounds=-1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "federation.rounds" in lines[0]
    assert not (tmp_path / "run").exists()  # nothing is created for a rejected config


def test_a_moved_key_fails_in_one_line_naming_its_new_home(tmp_path):
    result = run_cli("run", QUICKSTART, "--set", "threat.ascent_lr=0.1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "threat.ascent_lr has moved: use threat.gradient_ascent.lr" in lines[0]
    assert not (tmp_path / "run").exists()


def test_unknown_key_and_missing_file():
    result = run_cli("run", QUICKSTART, "--set", "model.encodr=resnet18")
    assert result.exit_code == 2 and "model.encodr" in result.output
    result = run_cli("run", "no/such/file.toml")
    assert result.exit_code == 2 and "no such config file" in result.output


def test_impossible_client_resources_fail_before_ray_starts(tmp_path):
    result = run_cli("run", QUICKSTART, "--set", "simulation.cpus_per_client=512", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "simulation.cpus_per_client" in result.output
    if not torch.cuda.is_available():
        result = run_cli("run", QUICKSTART, "--set", "simulation.gpus_per_client=1", "--out", str(tmp_path / "r"))
        assert result.exit_code == 2 and "simulation.gpus_per_client" in result.output


def test_existing_non_empty_out_folder_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("earlier results")
    result = run_cli("run", QUICKSTART, "--out", str(tmp_path))
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "keep.txt").read_text() == "earlier results"
