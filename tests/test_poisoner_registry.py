"""Poisoners are registered one way: the config takes their names and tables from the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_mia.attacker.poisoning.settings import NO_POISONING, POISONERS
from fl_mia.config import ConfigError, ThreatConfig
from fl_mia.config.loading import build_config
from fl_mia.config.reference import reference_rows
from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parent.parent


def test_the_allowed_poisoners_are_the_registered_ones():
    for name in POISONERS.names():
        assert ThreatConfig(poisoning=name, poison_rounds=[2]).poisoning == name  # active_ascent needs rounds after training
    assert ThreatConfig().poisoning == NO_POISONING  # honest-but-curious needs no plug-in
    with pytest.raises(ValueError, match="choose from none, gradient_ascent"):
        ThreatConfig(poisoning="flood")


def test_every_poisoner_with_settings_has_its_own_documented_table():
    documented = (ROOT / "docs" / "config-reference.md").read_text()
    keys = {key for key, _, _ in reference_rows()}
    for plugin in POISONERS:
        if plugin.settings is None:
            assert plugin.name not in ThreatConfig.model_fields  # no knobs, no table
            continue
        for field in plugin.settings.model_fields:
            key = f"threat.{plugin.name}.{field}"
            assert key in keys and f"`{key}`" in documented, key


@pytest.mark.parametrize("old, new", sorted(ThreatConfig.moved_keys.items()))
def test_every_old_flat_key_fails_naming_its_table(old, new):
    section, key = old.split(".")
    with pytest.raises(ConfigError) as info:
        build_config(tiny_raw(**{section: {key: 1}}), source="exp.toml")
    assert str(info.value) == f"exp.toml: {old} has moved: use {new} (docs/config-reference.md)"


def test_the_active_poisoner_gets_its_own_table_and_nothing_else():
    threat = ThreatConfig(poisoning="gradient_ascent", gradient_ascent={"lr": 0.01}, backdoor={"steps": 3})
    assert threat.poisoner_settings().lr == 0.01
    assert ThreatConfig(poisoning="isolation").poisoner_settings() is None
    assert ThreatConfig().poisoner_settings() is None


def test_a_poisoner_registered_at_run_time_is_accepted_and_built():
    from fl_mia.attacker.poisoning.registry import make_poisoner

    built = []
    POISONERS.register("test_double", summary="records its arguments", factory=lambda *a, **k: built.append((a, k)) or "p")
    try:
        cfg = build_config(tiny_raw(threat={"poisoning": "test_double", "target_hospitals": [1]}))
        assert make_poisoner(cfg.threat, "knowledge", "model") == "p"
        assert built == [((None, "knowledge", "model"), {"targets": [1]})]
    finally:
        POISONERS.unregister("test_double")


def test_every_poisoner_has_a_doc_entry_and_a_shipped_config():
    doc = (ROOT / "docs" / "threat-models.md").read_text()
    shipped = "\n".join(p.read_text() for p in (ROOT / "configs" / "threats").glob("*.toml"))
    for name in POISONERS.names():
        assert f"| `{name}` |" in doc, name
        assert f'poisoning = "{name}"' in shipped, name
