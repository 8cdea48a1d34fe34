"""Data sources come from one registry: allowed names, their tables, their readers, moved keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fl_mia.config import ConfigError, DataConfig
from fl_mia.config.loading import build_config, load_config
from fl_mia.data.pool import index_dataset
from fl_mia.data.sources.settings import DATA_SOURCES
from fl_mia.registry import PluginSettings
from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parent.parent


def test_an_old_flat_data_key_fails_in_one_line_naming_its_table():
    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "configs" / "quickstart.toml", ['data.image_glob="scans/*.png"'])
    message = str(error.value)
    assert "data.image_glob has moved: use data.folder.image_glob" in message and "\n" not in message


def test_a_volume_key_names_both_volume_tables():
    with pytest.raises(ConfigError, match=r"data.slice_axis has moved: use data.msd.slice_axis or data.nnunet.slice_axis"):
        build_config(tiny_raw(data={"slice_axis": 1}))


def test_a_phantom_knob_lives_in_the_phantom_table():
    with pytest.raises(ConfigError, match=r"data.num_patients has moved: use data.phantom.num_patients"):
        build_config(tiny_raw(data={"num_patients": 80}))
    assert build_config(tiny_raw(data={"phantom": {"num_patients": 80}})).data.phantom.num_patients == 80


def test_allowed_sources_are_the_registered_ones():
    with pytest.raises(ConfigError) as error:
        build_config(tiny_raw(data={"source": "dicom", "path": "/tmp"}))
    for name in DATA_SOURCES.names():
        assert name in str(error.value)


def test_every_source_with_knobs_has_its_documented_table():
    reference = (ROOT / "docs" / "config-reference.md").read_text()
    guide = (ROOT / "docs" / "data.md").read_text()
    for plugin in DATA_SOURCES:
        assert f"`{plugin.name}`" in guide, f"docs/data.md does not describe data.source {plugin.name!r}"
        if plugin.settings is None:
            continue
        assert plugin.name in DataConfig.model_fields
        for key in plugin.settings.model_fields:
            assert f"`data.{plugin.name}.{key}`" in reference


class ToySettings(PluginSettings):
    scale: int = 2


def test_a_source_registered_at_runtime_is_accepted_and_read_through_its_factory(tmp_path):
    calls = []

    def index(settings, *, path, labels, patient_regex):
        calls.append((settings, path, labels, patient_regex))
        return "toy index"

    DATA_SOURCES.register("toy", summary="a test double", settings=ToySettings, factory=index)
    try:
        cfg = build_config(tiny_raw(data={"source": "toy", "path": str(tmp_path), "patient_regex": "^(p\\d+)"}))
        assert index_dataset(cfg.data) == "toy index"
        settings, path, labels, regex = calls[0]
        assert settings == ToySettings() and path == tmp_path and labels is None and regex == "^(p\\d+)"
    finally:
        DATA_SOURCES.unregister("toy")


def test_importing_the_config_loads_no_torch():
    code = "import fl_mia.config, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_source_has_a_shipped_config():
    import tomllib

    sources = set()
    for path in (ROOT / "configs").rglob("*.toml"):
        data = tomllib.loads(path.read_text()).get("data", {})
        sources.add(data.get("source", "phantom" if "phantom" in data else None))
    missing = [name for name in DATA_SOURCES.names() if name not in sources]
    assert not missing, f"no config under configs/ uses data.source {missing}"
