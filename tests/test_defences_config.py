"""The [defences] section: validated at load, one line naming the field."""

import pytest

from fl_mia.config import ConfigError
from fl_mia.config.loading import build_config
from tests.conftest import tiny_raw


def one_line_error(**defences) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(tiny_raw(defences=defences), source="exp.toml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("exp.toml: ")
    return message


def test_everything_is_off_by_default():
    assert build_config(tiny_raw()).defences.active() == []


def test_reconstruction_threshold_above_the_hospitals_names_the_field():
    message = one_line_error(secagg={"enabled": True, "reconstruction_threshold": 3})
    assert "defences.secagg.reconstruction_threshold=3" in message and "2 sampled hospitals" in message
    assert message.startswith("exp.toml: defences.secagg.reconstruction_threshold")


def test_more_shares_than_hospitals_names_the_field():
    assert "defences.secagg.num_shares=5" in one_line_error(secagg={"enabled": True, "num_shares": 5})


def test_secagg_needs_two_hospitals_per_round():
    raw = tiny_raw(defences={"secagg": {"enabled": True}})
    raw["federation"]["fraction_fit"] = 0.5
    with pytest.raises(ConfigError, match="defences.secagg.enabled: SecAgg\\+ needs at least 2 hospitals"):
        build_config(raw)


def test_out_of_range_and_unknown_keys():
    assert "defences.secagg.clipping_range" in one_line_error(secagg={"clipping_range": 0})
    assert "defences.dp_sgd.epsilon" in one_line_error(dp_sgd={"epsilon": 3})
    assert "defences.central_dp.mode" in one_line_error(central_dp={"mode": "local"})


def test_dp_sgd_needs_noise_or_a_budget():
    assert "dp_sgd.noise_multiplier" in one_line_error(dp_sgd={"enabled": True, "noise_multiplier": None})


def test_contradictions_are_sentences_that_say_what_to_do():
    assert "use 'client_clipping' with secagg" in one_line_error(secagg={"enabled": True}, central_dp={"mode": "server_clipping"})
    assert "enable secagg" in one_line_error(consistency={"mode": "flag"})
