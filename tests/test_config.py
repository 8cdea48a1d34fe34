from pathlib import Path

import pytest

from fl_mia.config import ConfigError
from fl_mia.config.loading import apply_overrides, build_config, load_config
from fl_mia.app.preflight import preflight
from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        preflight(build_config(raw, source="exp.toml"), source="exp.toml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_quickstart_loads_and_is_named_after_its_file():
    cfg = load_config(ROOT / "configs" / "quickstart.toml")
    assert cfg.name == "quickstart"
    assert cfg.federation.num_hospitals == 4


def test_unknown_key_names_the_field():
    message = one_line_error(tiny_raw(federation={"roundz": 3}))
    assert "federation.roundz" in message and "unknown key" in message


def test_unknown_top_level_section():
    assert "attackz" in one_line_error({**tiny_raw(), "attackz": {}})


def test_negative_round_count_names_the_field():
    message = one_line_error(tiny_raw(federation={"rounds": -1}))
    assert "federation.rounds" in message and "greater than or equal to 1" in message


def test_wrong_type_names_the_field():
    assert "training.batch_size" in one_line_error(tiny_raw(training={"batch_size": "eight"}))


def test_unknown_architecture():
    message = one_line_error(tiny_raw(model={"arch": "Unetz"}))
    assert "model.arch" in message and "UnetPlusPlus" in message


def test_unknown_encoder():
    message = one_line_error(tiny_raw(model={"encoder": "resnet19"}))
    assert "model.encoder" in message and "resnet19" in message


def test_more_hospitals_than_the_data_can_fill():
    message = one_line_error(tiny_raw(federation={"num_hospitals": 20}))
    assert "federation.num_hospitals" in message and "data.phantom.num_patients" in message


def test_size_list_must_match_hospital_count():
    message = one_line_error(tiny_raw(federation={"patients_per_hospital": [8, 8, 8]}))
    assert "patients_per_hospital" in message


def test_fractions_must_leave_a_test_split():
    message = one_line_error(tiny_raw(federation={"train_fraction": 0.7, "heldout_fraction": 0.3}))
    assert "test split" in message


def test_overrides_parse_toml_values_and_create_sections():
    raw = apply_overrides(tiny_raw(), ["federation.rounds=7", "model.encoder=mobilenet_v2", "training.lr=0.01"])
    cfg = build_config(raw)
    assert (cfg.federation.rounds, cfg.model.encoder, cfg.training.lr) == (7, "mobilenet_v2", 0.01)


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        apply_overrides(tiny_raw(), ["federation.rounds"])


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


DATASET_PATH = ['data.path="any"']


def test_every_config_in_configs_folder_loads():
    files = sorted(p for p in (ROOT / "configs").rglob("*.toml") if "suites" not in p.parts)  # suites: test_suite.py
    assert files
    for path in files:
        if path.parent.name == "data":
            # A dataset layout needs its folder (--set data.path=DIR); its preflight reads the dataset,
            # which tests/test_data_end_to_end.py does for every layout.
            load_config(path, DATASET_PATH)
            continue
        preflight(load_config(path), source=str(path))


@pytest.mark.parametrize("folder", ["defences", "threats"])
def test_threat_and_defence_configs_are_overlays_on_a_base(folder):
    import tomllib

    files = sorted((ROOT / "configs" / folder).glob("*.toml"))
    bases = {"honest.toml"}  # the threat comparison's own base (a smaller setting than the quickstart)
    for path in files:
        if path.name in bases:
            continue
        raw = tomllib.loads(path.read_text())
        assert "extends" in raw, f"{path.name} copies its base instead of extending it"
        if "federation" in raw:
            # One exception: an attack that runs after the base's training rounds may append rounds,
            # and only those (secagg_trap_weights.toml); rounds 1..R stay the base's experiment.
            base_rounds = load_config(path.parent / raw["extends"]).federation.rounds
            appended = load_config(path).threat.poison_rounds or []
            assert set(raw["federation"]) == {"rounds"} and appended and min(appended) > base_rounds, (
                f"{path.name} changes [federation] beyond appending attack rounds after the base's {base_rounds}"
            )
        overlays = {"threat", "defences", "attacker", "referee"}
        assert set(raw) - {"extends", "name", "federation"} <= overlays, (
            f"{path.name} restates sections of its base: {sorted(set(raw) - {'extends', 'name'} - overlays)}"
        )


def test_no_two_config_files_define_the_same_experiment():
    seen: dict[str, Path] = {}
    for path in sorted(p for p in (ROOT / "configs").rglob("*.toml") if "suites" not in p.parts):  # suites are not experiments
        experiment = load_config(path, DATASET_PATH if path.parent.name == "data" else []).model_dump_json(exclude={"name"})
        assert experiment not in seen, f"{path} and {seen[experiment]} define the same experiment"
        seen[experiment] = path


def test_readme_documents_every_config_key():
    from fl_mia.config.reference import reference_rows

    reference = (ROOT / "docs" / "config-reference.md").read_text()
    missing = [key for key, _, _ in reference_rows() if f"`{key}`" not in reference]
    assert not missing, (
        f"docs/config-reference.md lacks {missing}; regenerate with python -m fl_mia.config.reference --write docs/config-reference.md"
    )


def test_extends_merges_a_base_file_and_names_the_run_after_the_leaf(tmp_path):
    (tmp_path / "base.toml").write_text('name = "base"\nseed = 3\n[federation]\nrounds = 4\nnum_hospitals = 2\n')
    (tmp_path / "threats").mkdir()
    leaf = tmp_path / "threats" / "ascent.toml"
    leaf.write_text('extends = "../base.toml"\n[federation]\nrounds = 2\n[threat]\npoisoning = "gradient_ascent"\n')
    cfg = load_config(leaf)
    assert (cfg.name, cfg.seed, cfg.federation.rounds, cfg.federation.num_hospitals) == ("ascent", 3, 2, 2)
    assert cfg.threat.poisoning == "gradient_ascent"


def test_extends_cycle_and_missing_base_fail_with_one_line(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(ConfigError, match="missing.toml: no such config file"):
        load_config(tmp_path / "c.toml")


def test_threat_targets_must_be_hospitals():
    message = one_line_error(tiny_raw(threat={"poisoning": "isolation", "target_hospitals": [5]}))
    assert "threat.target_hospitals" in message


def test_source_inference_defaults_on_for_small_federations_only_and_the_config_wins():
    from fl_mia.config import SOURCE_INFERENCE_MAX_HOSPITALS, AttackerConfig

    assert AttackerConfig().scores_every_candidate(SOURCE_INFERENCE_MAX_HOSPITALS)
    assert not AttackerConfig().scores_every_candidate(SOURCE_INFERENCE_MAX_HOSPITALS + 1)
    assert AttackerConfig(source_inference=True).scores_every_candidate(100)
    assert not AttackerConfig(source_inference=False).scores_every_candidate(2)
