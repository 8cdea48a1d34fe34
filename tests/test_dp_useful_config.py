"""The shipped DP-SGD configuration that keeps a model, its no-DP twin and its two suites.

Fast: configs are loaded and checked; only the hospitals' shards are rendered (to size the
accountant's sample rate), nothing trains.
"""

from pathlib import Path

from fl_mia.config.loading import load_config
from fl_mia.defences.accounting import REFERENCE_DELTA, epsilon_of
from fl_mia.app.preflight import preflight

ROOT = Path(__file__).resolve().parent.parent
DP = ROOT / "configs" / "defences" / "dp_sgd_useful.toml"
TWIN = ROOT / "configs" / "dp_friendly.toml"
ADAPTIVE = ROOT / "configs" / "defences" / "dp_sgd_useful_adaptive.toml"


def differences(a: dict, b: dict, prefix: str = "") -> set[str]:
    keys = set(a) | set(b)
    out: set[str] = set()
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out |= differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.add(f"{prefix}{key}")
    return out


def test_dp_config_targets_epsilon_8_at_delta_1e5_and_every_hospital_spends_it():
    from fl_mia.data import build_hospital
    from fl_mia.defences.dp_sgd import plan_for_split

    cfg = load_config(DP)
    preflight(cfg, source=str(DP))
    dp = cfg.defences.dp_sgd
    assert dp.enabled and dp.target_epsilon == 8.0 and dp.delta == REFERENCE_DELTA == 1e-5
    for hospital in range(cfg.federation.num_hospitals):
        plan = plan_for_split(cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, split=build_hospital(cfg.data, cfg.federation, hospital, seed=cfg.seed).train)
        assert plan.delta == 1e-5
        spent = epsilon_of([(plan.noise_multiplier, plan.sample_rate, plan.total_steps)], delta=1e-5, accountant=plan.accountant)
        # Opacus solves the noise to within 0.01 of the target, from below.
        assert 7.9 < spent <= 8.0, (hospital, spent)


def test_no_dp_twin_is_the_same_experiment_with_dp_off():
    dp, twin = load_config(DP), load_config(TWIN)
    preflight(twin, source=str(TWIN))
    assert not twin.defences.dp_sgd.enabled
    changed = differences(dp.model_dump(mode="json"), twin.model_dump(mode="json"))
    assert changed - {"name"} and all(key.startswith("defences.dp_sgd.") for key in changed - {"name"}), changed


def test_adaptive_config_changes_only_the_shadow_mode_and_runs_lira_and_rmia():
    dp, adaptive = load_config(DP), load_config(ADAPTIVE)
    assert adaptive.attacker.shadows.mode == "as_target" and dp.attacker.shadows.mode == "central"
    assert {"lira_offline", "rmia"} <= set(adaptive.attacker.prediction_attacks)
    assert differences(dp.model_dump(mode="json"), adaptive.model_dump(mode="json")) - {"name"} == {"attacker.shadows.mode"}


def test_frontier_suite_runs_every_arm_on_the_leaking_base_with_epsilon_cells_in_order():
    from fl_mia.app.suite import load_suite

    suite = load_suite(ROOT / "configs" / "suites" / "dp_frontier.toml")
    assert suite.seeds == [0, 1, 2, 3, 4]
    arms: list[str] = []
    for cell in suite.cells:
        cfg = cell.cfg
        assert cfg.referee.match_lesion_area and cfg.referee.candidates_per_hospital == 100
        dp, central = cfg.defences.dp_sgd, cfg.defences.central_dp
        if dp.enabled:
            arm = f"{dp.unit}:{dp.target_epsilon if dp.noise_multiplier or dp.target_epsilon else 'clip'}"
            assert dp.delta == 1e-5
        else:
            arm = central.mode
        if not arms or arms[-1] != arm:
            arms.append(arm)
    assert arms == [
        "off", "patient:clip", "slice:8.0",
        "patient:1.0", "patient:2.0", "patient:4.0", "patient:8.0", "patient:16.0",
        "client_clipping", "distributed",
    ]


def test_tuning_suite_never_draws_candidates_and_uses_patients_apart_from_the_frontiers():
    from fl_mia.app.suite import load_suite

    tuning = load_suite(ROOT / "configs" / "suites" / "dp_tuning.toml")
    frontier = load_suite(ROOT / "configs" / "suites" / "dp_frontier.toml")
    assert all(not cell.cfg.referee.enabled for cell in tuning.cells)
    assert not set(tuning.seeds) & set(frontier.seeds)


def test_adaptive_suite_pairs_central_and_as_target_shadows():
    from fl_mia.app.suite import load_suite

    suite = load_suite(ROOT / "configs" / "suites" / "dp_adaptive.toml")
    modes = {(cell.cfg.attacker.shadows.mode, cell.seed) for cell in suite.cells}
    assert modes == {("central", 0), ("central", 1), ("as_target", 0), ("as_target", 1)}
