"""Privacy–utility sweep: settings, the table, read-back and the CLI (fake runs, no Ray)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from fl_mia.app.cli import app
from fl_mia.config import ExperimentConfig
from fl_mia.run_folder import create_run_folder, set_status, write_json, write_toml
from fl_mia.app.sweep import (
    SWEEP_CSV,
    SWEEP_PLOT,
    SweepError,
    parse_values,
    read_sweep,
    run_sweep,
    setting_folder,
    sweep_configs,
    sweep_row,
)
from tests.conftest import tiny_raw

DP_SGD = "defences.dp_sgd.noise_multiplier"


def tiny_file(tmp_path: Path, name: str = "tiny", **sections) -> Path:
    raw = tiny_raw(**sections)
    raw.pop("name")
    path = tmp_path / f"{name}.toml"
    write_toml(path, raw)
    return path


def fake_metrics(cfg: ExperimentConfig) -> dict:
    """What a run would report: Dice falls and the attack weakens as the noise grows."""
    noise = cfg.defences.dp_sgd.noise_multiplier
    return {
        "utility": {"dice": 0.8 / (1 + noise), "dice_pooled": 0.7 / (1 + noise)},
        "wall_time_s": 10.0,
        "defence_report": {"dp_sgd": {"epsilon_max": 8.0 / noise, "noise_multiplier": noise}},
        "privacy": {
            "loss": {"overall": {"auc": 0.5 + 0.4 / (1 + noise), "tpr_at_1pct_fpr": 0.1 / noise, "non_members": 100}},
            "candidate_set": {"members": 10},
        },
    }


class FakeRun:
    """Stands in for run_experiment: writes a complete run folder, or fails on chosen noise."""

    def __init__(self, fail_at: float | None = None) -> None:
        self.calls: list[float] = []
        self.fail_at = fail_at

    def __call__(self, cfg: ExperimentConfig, *, out: Path):
        self.calls.append(cfg.defences.dp_sgd.noise_multiplier)
        run_dir = create_run_folder(cfg.name, out=out)
        write_toml(run_dir / "config.toml", cfg.to_toml_dict())
        if cfg.defences.dp_sgd.noise_multiplier == self.fail_at:
            set_status(run_dir, "failed", error="boom")
            raise RuntimeError("boom")
        metrics = fake_metrics(cfg)
        write_json(run_dir / "metrics.json", metrics)
        set_status(run_dir, "complete")
        return SimpleNamespace(run_dir=run_dir, metrics=metrics)


def test_values_are_comma_separated_and_distinct():
    assert parse_values(" 0.5, 1,2") == ["0.5", "1", "2"]
    for bad in ("", "1,,2", "1,1"):
        with pytest.raises(SweepError, match="--values"):
            parse_values(bad)


def test_a_sweep_that_would_measure_nothing_is_refused(tmp_path):
    plain = tiny_file(tmp_path)
    with pytest.raises(SweepError, match="DP-SGD is off"):
        sweep_configs(plain, param=DP_SGD, values=["1", "2"], overrides=[])
    with pytest.raises(SweepError, match="target_epsilon is set"):
        sweep_configs(plain, param=DP_SGD, values=["1", "2"], overrides=["defences.dp_sgd.enabled=true", "defences.dp_sgd.target_epsilon=8"])
    with pytest.raises(SweepError, match="central DP is off"):
        sweep_configs(plain, param="defences.central_dp.noise_multiplier", values=["1", "2"], overrides=[])
    with pytest.raises(SweepError, match="same config"):
        sweep_configs(plain, param="training.lr", values=["1", "1.0"], overrides=[])
    with pytest.raises(SweepError, match="nope"):
        sweep_configs(plain, param="training.nope", values=["1", "2"], overrides=[])


def test_row_takes_dice_epsilon_and_every_attacks_auc_and_tpr():
    row = sweep_row(fake_metrics(SimpleNamespace(defences=SimpleNamespace(dp_sgd=SimpleNamespace(noise_multiplier=1.0)))),
                    series="s", config="c", param=DP_SGD, value="1", run_dir=Path("r"), state="complete")  # fmt: skip
    assert row["dice"] == 0.4 and row["epsilon_dp_sgd"] == 8.0 and row["noise_dp_sgd"] == 1.0
    assert row["loss.auc"] == 0.7 and row["loss.tpr_at_1pct_fpr"] == 0.1
    few = fake_metrics(SimpleNamespace(defences=SimpleNamespace(dp_sgd=SimpleNamespace(noise_multiplier=1.0))))
    few["privacy"]["loss"]["overall"]["non_members"] = 99  # cannot resolve 1% FPR: no number, not a TPR at 0 FP
    assert sweep_row(few, series="s", config="c", param=DP_SGD, value="1", run_dir=Path("r"), state="complete")["loss.tpr_at_1pct_fpr"] is None
    assert row["epsilon_central_dp"] is None and not any(k.startswith("candidate_set") for k in row)


def test_sweep_runs_every_setting_and_survives_a_failed_one(tmp_path):
    config = tiny_file(tmp_path, defences={"dp_sgd": {"enabled": True}})
    run = FakeRun(fail_at=2.0)
    rows = run_sweep(config, param=DP_SGD, values=["0.5", "1", "2", "4"], out=tmp_path / "sweep", run=run)
    assert run.calls == [0.5, 1.0, 2.0, 4.0]
    assert [r["state"] for r in rows] == ["complete", "complete", "failed", "complete"]
    table = read_sweep(tmp_path / "sweep")
    assert [r["value"] for r in table] == ["0.5", "1", "2", "4"]
    assert float(table[1]["loss.auc"]) == pytest.approx(0.7) and table[2]["dice"] == ""
    assert table[0]["run_dir"] == str(setting_folder(tmp_path / "sweep", "tiny", DP_SGD, "0.5"))
    assert (tmp_path / "sweep" / SWEEP_PLOT).stat().st_size > 1000


def test_finished_settings_are_read_back_and_sweeps_share_a_folder(tmp_path):
    config = tiny_file(tmp_path, defences={"dp_sgd": {"enabled": True}})
    out = tmp_path / "sweep"
    run_sweep(config, param=DP_SGD, values=["1", "2"], out=out, run=FakeRun())
    again = FakeRun()
    run_sweep(config, param=DP_SGD, values=["1", "2", "3"], out=out, run=again)
    assert again.calls == [3.0]  # 1 and 2 were complete runs of the same config
    other = tiny_file(tmp_path, name="other", defences={"dp_sgd": {"enabled": True}})
    run_sweep(other, param=DP_SGD, values=["1"], out=out, run=FakeRun())
    table = read_sweep(out)
    assert [(r["config"], r["value"]) for r in table] == [("tiny", "1"), ("tiny", "2"), ("tiny", "3"), ("other", "1")]
    assert {r["series"] for r in table} == {f"tiny: {DP_SGD}", f"other: {DP_SGD}"}


def test_a_folder_holding_another_config_is_not_overwritten(tmp_path):
    config = tiny_file(tmp_path, defences={"dp_sgd": {"enabled": True}})
    out = tmp_path / "sweep"
    run_sweep(config, param=DP_SGD, values=["1"], out=out, run=FakeRun())
    with pytest.raises(SweepError, match="another config"):
        run_sweep(config, param=DP_SGD, values=["1"], out=out, overrides=["training.lr=0.1"], run=FakeRun())


def test_cli_rejects_a_pointless_sweep_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["sweep", str(tiny_file(tmp_path)), "--param", DP_SGD, "--values", "1,2"])
    assert result.exit_code == 2
    assert "DP-SGD is off" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sweep_end_to_end_two_tiny_central_dp_settings(tmp_path):
    config = tiny_file(
        tmp_path,
        attacker={"prediction_attacks": ["loss", "label_only"], "shadows": {"epochs": 1}, "label_only": {"queries": 1}},
        defences={"central_dp": {"mode": "client_clipping", "clipping_norm": 5.0}},
    )
    out = tmp_path / "sweep"
    rows = run_sweep(config, param="defences.central_dp.noise_multiplier", values=["0.01", "1"], out=out)
    assert [r["state"] for r in rows] == ["complete", "complete"]
    for row in rows:
        assert 0.0 <= row["dice"] <= 1.0 and row["wall_time_s"] > 0
        assert 0.0 <= row["loss.auc"] <= 1.0
        # A tiny run has far fewer than the 100 non-members TPR at 1% FPR needs: blank, never a number.
        assert row["label_only.tpr_at_1pct_fpr"] is None
    assert rows[0]["epsilon_central_dp"] > rows[1]["epsilon_central_dp"]  # more noise, smaller ε
    assert (out / SWEEP_CSV).is_file() and (out / SWEEP_PLOT).is_file()


def test_a_quoted_value_gives_a_plain_folder_and_progress_names_each_setting_before_it_runs(tmp_path):
    config = tiny_file(tmp_path)
    started: list[tuple[int, int, str]] = []
    out = tmp_path / "sweep"
    run_sweep(config, param="defences.output.mode", values=['"probabilities"', '"argmax"'], out=out, run=FakeRun(),
              on_start=lambda index, total, value: started.append((index, total, value)))  # fmt: skip
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["tiny__mode=argmax", "tiny__mode=probabilities"]
    assert started == [(1, 2, '"probabilities"'), (2, 2, '"argmax"')]
    again: list[tuple[int, int, str]] = []
    run_sweep(config, param="defences.output.mode", values=['"probabilities"', '"argmax"'], out=out, run=FakeRun(),
              on_start=lambda *setting: again.append(setting))  # fmt: skip
    assert again == []  # finished settings are read back, not announced as running
