"""[attacker] and [referee]: old keys fail naming the new ones, names come from the registries,
every registered plug-in is documented and shown in a shipped config or doc example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fl_mia.app.cli import app
from fl_mia.attacker.predictions.settings import PREDICTION_ATTACKS
from fl_mia.attacker.updates.settings import UPDATE_SIGNALS
from fl_mia.config import AttackerConfig, ConfigError, RefereeConfig
from fl_mia.config.loading import build_config
from fl_mia.config.reference import reference_rows
from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(ROOT / "configs" / "quickstart.toml")


@pytest.mark.parametrize(
    ("old", "value", "new"),
    [
        ("privacy.rmia_gamma", "2.0", "attacker.rmia.gamma"),
        ("privacy.attacks", '["loss"]', "attacker.prediction_attacks"),
        ("privacy.shadow_mode", '"federated"', "attacker.shadows.mode"),
        ("privacy.candidates_per_hospital", "5", "referee.candidates_per_hospital"),
        ("threat.gradient_alignment", "false", "attacker.update_attacks"),
        ("threat.update_attacks", "false", "attacker.update_attacks"),
        ("threat.source_inference", "true", "attacker.source_inference"),
    ],
)
def test_an_old_key_fails_in_one_line_naming_the_new_one_exit_2(old, value, new, tmp_path):
    result = CliRunner().invoke(app, ["run", QUICKSTART, "--set", f"{old}={value}", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{old} has moved: use {new}" in lines[0], result.output
    assert not (tmp_path / "run").exists()


def test_the_old_privacy_section_fails_naming_where_its_keys_went():
    for section in ({"shadow_epochs": 1}, {"enabled": True}, {}):
        with pytest.raises(ConfigError, match="privacy.* has moved: use (attacker|referee|\\[attacker\\])"):
            build_config(tiny_raw(privacy=section))


def test_every_old_privacy_key_is_declared_moved():
    old_keys = {
        "enabled", "attacks", "per_round_attacks", "candidates_per_hospital", "match_lesion_area", "shadow_epochs",
        "shadow_mode", "shadow_models", "lira_global_variance", "rmia_offline_a", "rmia_gamma", "attack_epochs",
        "attack_lr", "loss_map_patch", "label_only_queries", "label_only_noise",
    }
    moved = {**AttackerConfig.moved_keys, **RefereeConfig.moved_keys}
    assert {f"privacy.{key}" for key in old_keys} <= set(moved)
    for old in old_keys:
        with pytest.raises(ConfigError, match=f"privacy.{old} has moved"):
            build_config(tiny_raw(privacy={old: 1}))


def test_an_unknown_name_fails_at_load_listing_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown prediction attack 'lyra'; choose from " + ", ".join(PREDICTION_ATTACKS.names())):
        build_config(tiny_raw(attacker={"prediction_attacks": ["lyra"], "per_round_attacks": []}))
    with pytest.raises(ConfigError, match="unknown update signal 'grad'; choose from " + ", ".join(UPDATE_SIGNALS.names())):
        build_config(tiny_raw(attacker={"update_attacks": ["grad"]}))


def test_a_plugin_registered_before_loading_is_accepted_and_gets_default_settings():
    PREDICTION_ATTACKS.register("late_attack", summary="registered by a test", settings=AttackerConfig.model_fields["rmia"].annotation)
    try:
        cfg = build_config(tiny_raw(attacker={"prediction_attacks": ["late_attack"], "per_round_attacks": []}))
        assert cfg.attacker.attack_settings("late_attack").gamma == 1.0
    finally:
        PREDICTION_ATTACKS.unregister("late_attack")


def test_each_attack_table_is_keyed_by_its_registered_name_and_keeps_the_defaults():
    attacker = AttackerConfig()
    tables = {p.name for p in PREDICTION_ATTACKS if p.settings is not None}
    assert tables == {"learned_type1", "learned_type2", "loss_map", "lira_offline", "lira_online", "rmia", "label_only"}
    assert attacker.rmia.gamma == 1.0 and attacker.rmia.offline_a == 0.3
    assert attacker.learned_type1.epochs == attacker.loss_map.epochs == 30 and attacker.loss_map.patch == 16
    assert attacker.label_only.queries == 8 and attacker.lira_online.global_variance == "auto"
    assert attacker.attack_settings("loss") is None
    # All update signals by default, in the order the recorder has always filled scores.npz.
    assert attacker.update_attacks == ["returned_loss", "loss_reduction", "loss_log_ratio", "gradient_alignment"]
    with pytest.raises(ValueError):
        build_config(tiny_raw(attacker={"rmia": {"gama": 2.0}}))


def _shipped_text() -> str:
    files = [*sorted((ROOT / "configs").rglob("*.toml")), *sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    return "\n".join(path.read_text() for path in files if path.name != "config-reference.md")


def test_every_registered_plugin_is_documented_and_shown_in_a_config_or_doc_example():
    reference = (ROOT / "docs" / "config-reference.md").read_text()
    keys = {key for key, _, _ in reference_rows()}
    shipped = _shipped_text()
    for plugin in PREDICTION_ATTACKS:
        if plugin.settings is not None:
            for field in plugin.settings.model_fields:
                assert f"`attacker.{plugin.name}.{field}`" in reference, (plugin.name, field)
                assert f"attacker.{plugin.name}.{field}" in keys
        assert plugin.name in reference, plugin.name
        assert re.search(rf"[\"'`]{plugin.name}[\"'`]", shipped), f"{plugin.name}: no shipped config or doc example"
    for plugin in UPDATE_SIGNALS:
        assert f"{plugin.name}: {plugin.summary}" in reference, plugin.name
        assert re.search(rf"[\"'`.]{plugin.name}[\"'`]", shipped), f"{plugin.name}: no shipped config or doc example"


def test_importing_the_config_loads_no_torch():
    code = "import fl_mia.config, sys; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
