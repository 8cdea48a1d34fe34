"""``fl-mia data export-phantom`` and ``inspect``: the phantom round-trips through every layout."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from fl_mia.app.cli import app
from fl_mia.config.loading import build_config
from fl_mia.data import build_hospital
from fl_mia.data.export import LAYOUTS, export_phantom, phantom_cases
from fl_mia.data.pool import load_pool
from tests.conftest import tiny_raw


@pytest.fixture(scope="module")
def phantom_cfg():
    # Organ and lesion classes, so that the labels' order round-trips too.
    return build_config(tiny_raw(data={"task": "organ_lesion", "image_size": 32, "phantom": {"num_patients": 60, "slices_per_patient": 2}}))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_phantom_export_load_gives_the_same_slices(phantom_cfg, layout, tmp_path):
    settings = export_phantom(phantom_cfg.data, phantom_cfg.federation, layout, tmp_path / layout, seed=phantom_cfg.seed)
    loaded_cfg = build_config(tiny_raw(**_sections(settings, phantom_cfg, cache=tmp_path / "cache")))
    pool = load_pool(loaded_cfg.data)
    cases = phantom_cases(phantom_cfg.data, phantom_cfg.federation, seed=phantom_cfg.seed)
    assert pool.patients == cases.names
    assert np.array_equal(np.asarray(pool.images)[:, 0], np.concatenate(cases.images))
    assert np.array_equal(np.asarray(pool.labels), np.concatenate(cases.masks))
    # The manifest gives each hospital back its own patients.
    for k in range(phantom_cfg.federation.num_hospitals):
        original, loaded = build_hospital(phantom_cfg.data, phantom_cfg.federation, k, seed=phantom_cfg.seed), build_hospital(loaded_cfg.data, loaded_cfg.federation, k, seed=loaded_cfg.seed)
        names = {f"phantom_{int(p):04d}" for s in (original.train, original.heldout, original.test) for p in s.patient_ids}
        assert {pool.patients[int(p)] for s in (loaded.train, loaded.heldout, loaded.test) for p in s.patient_ids} == names


def _sections(settings: dict, phantom_cfg, *, cache) -> dict:
    sections: dict = {"data": {"cache_dir": str(cache)}, "federation": {"attacker_patients": phantom_cfg.federation.attacker_patients}}
    for key, value in settings.items():
        *tables, name = key.split(".")
        node = sections
        for table in tables:
            node = node.setdefault(table, {})
        node[name] = value
    return sections


def test_export_prints_the_run_command_and_inspect_reads_it(tmp_path):
    runner = CliRunner()
    config = tmp_path / "phantom.toml"
    import tomli_w

    config.write_text(tomli_w.dumps(tiny_raw()))
    result = runner.invoke(app, ["data", "export-phantom", str(tmp_path / "nn"), "--layout", "nnunet", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "nn" / "dataset.json").is_file() and (tmp_path / "nn" / "manifest.csv").is_file()
    assert 'data.source="nnunet"' in result.output and "federation.partition" in result.output

    inspect = runner.invoke(app, [
        "data", "inspect", "configs/data/nnunet.toml", "--out", str(tmp_path),
        "--set", f'data.path="{tmp_path / "nn"}"', "--set", f'data.cache_dir="{tmp_path / "cache"}"',
        "--set", "data.image_size=32", "--set", "federation.num_hospitals=2", "--set", "data.nnunet.empty_slice_fraction=1.0",
    ])
    assert inspect.exit_code == 0, inspect.output
    for fragment in ("cases", "slices kept", "hospital 0", "attacker", "foreground share per class", "spacing range"):
        assert fragment in inspect.output
    assert (tmp_path / "data_preview.png").stat().st_size > 1000


def test_export_into_a_folder_with_files_fails_in_one_line(tmp_path):
    (tmp_path / "taken.txt").write_text("x")
    result = CliRunner().invoke(app, ["data", "export-phantom", str(tmp_path), "--layout", "msd"])
    assert result.exit_code == 2
    assert "not empty" in result.output and len(result.output.strip().splitlines()) == 1


def test_export_of_an_unknown_layout_names_the_choices(tmp_path):
    result = CliRunner().invoke(app, ["data", "export-phantom", str(tmp_path / "x"), "--layout", "dicom"])
    assert result.exit_code == 2 and "msd, nnunet, folder, npz" in result.output
