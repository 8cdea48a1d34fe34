"""SecAgg+ through Flower's real protocol (four stages, masks, quantisation), without Ray."""

import numpy as np
import pytest

from fl_mia.config import ExperimentConfig
from fl_mia.config.loading import build_config
from server.federation import secagg_max_weight
from tests.conftest import tiny_raw
from tests.flower_doubles import base_weights, plain_fedavg, run_rounds

SIZES = [16, 10, 6]  # unequal on purpose: SecAgg+ must weight by num_examples like FedAvg


def secagg_error_bound(cfg: ExperimentConfig, num_examples: list[int]) -> float:
    """Largest error of one value of the SecAgg+ average against the plain weighted average.

    Each hospital's value is scaled by r = n / max_weight and stochastically rounded to a
    grid of step 2·clipping_range / quantization_range (error below one step); the sum is
    divided by Σ r. So |secure − plain| < len(n) · step / Σ r (plus the rounding of r itself,
    of relative size 1 / quantization_range).
    """
    secagg = cfg.defences.secagg
    step = 2 * secagg.clipping_range / secagg.quantization_range
    max_weight = secagg_max_weight(cfg)
    ratios = [n / max_weight for n in num_examples]
    return len(num_examples) * step / sum(ratios) + 2 * secagg.clipping_range / secagg.quantization_range


def cfg_with(**secagg):
    raw = tiny_raw(defences={"secagg": {"enabled": True, **secagg}})
    raw["federation"].update(num_hospitals=3, patients_per_hospital=8)
    return build_config(raw)


def test_secure_aggregate_equals_plain_average_within_the_stated_quantisation_bound():
    # Global weights 0: the result is the averaged delta itself, so float32 rounding
    # (~1e-8 at these magnitudes) does not hide the quantisation error.
    cfg = cfg_with()
    zeros = base_weights(0.0)
    zeros = [np.zeros_like(w) for w in zeros]
    final, _, _ = run_rounds(cfg, SIZES, initial=zeros)
    expected = plain_fedavg(zeros, SIZES)
    bound = secagg_error_bound(cfg, SIZES)
    error = max(float(np.abs(f - e).max()) for f, e in zip(final, expected))
    assert bound < 2e-6  # 3 hospitals, clipping_range 1, 2**22 levels, n / max_weight ≥ 0.375
    assert 0 < error < bound, (error, bound)  # > 0: the sum really went through quantisation


def test_no_parameter_is_clipped_when_weights_are_far_beyond_the_clipping_range():
    cfg = cfg_with()
    final, _, _ = run_rounds(cfg, SIZES)  # global weights 50-60, clipping_range 1
    expected = plain_fedavg(base_weights(), SIZES)
    error = max(float(np.abs(f - e).max()) for f, e in zip(final, expected))
    assert error < secagg_error_bound(cfg, SIZES) + float(np.spacing(np.float32(64)))  # + float32 rounding near 60


def test_the_comparison_can_fail_raw_weights_would_be_clipped():
    # The same protocol without deltas (what SecAgg+ does to raw weights): every value is
    # clipped to ±clipping_range, so the "average" is nowhere near the plain one.
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    weights = base_weights()
    quantized = quantize(weights, 1.0, 2**22)
    recovered = dequantize(quantized, 1.0, 2**22)
    assert max(float(np.abs(r - w).max()) for r, w in zip(recovered, weights)) > 40


def test_a_delta_beyond_the_clipping_range_is_refused_not_clipped():
    cfg = cfg_with(clipping_range=0.01)  # known updates reach ~0.15
    final, recorder, grid = run_rounds(cfg, SIZES)
    assert recorder.calls == []  # no aggregate: every hospital refused to send a clipped update
    assert all(np.array_equal(f, w) for f, w in zip(final, base_weights()))


def test_the_strategy_sees_metrics_per_hospital_but_no_weights():
    cfg = cfg_with()
    _, recorder, _ = run_rounds(cfg, SIZES)
    ((server_round, replies, failures),) = recorder.calls
    assert [r.hospital for r in replies] == [0, 1, 2]
    assert [r.num_examples for r in replies] == SIZES  # SecAgg+ leaves these visible
    assert [r.metrics["train_loss"] for r in replies] == pytest.approx([0.0, 0.1, 0.2])
    # keep_weights=True, yet nothing per hospital: every hospital is attributed the same aggregate
    assert all(r.view == "aggregate" for r in replies)
    assert all(all(np.array_equal(a, b) for a, b in zip(r.weights, replies[0].weights)) for r in replies)


def test_without_secagg_the_same_observer_sees_each_hospitals_weights():
    raw = tiny_raw()
    raw["federation"].update(num_hospitals=3, patients_per_hospital=8)
    cfg = build_config(raw)
    final, recorder, _ = run_rounds(cfg, SIZES)
    ((_, replies, _),) = recorder.calls
    assert all(r.weights is not None and r.view == "reply" for r in replies)
    assert max(float(np.abs(f - e).max()) for f, e in zip(final, plain_fedavg(base_weights(), SIZES))) < 1e-4


def test_client_clipping_dp_composes_with_secagg():
    # noise 0 isolates the clipping: each hospital's update is clipped to norm C before
    # masking, so the averaged delta has norm ≤ C.
    raw = tiny_raw(defences={"secagg": {"enabled": True}, "central_dp": {"mode": "client_clipping", "noise_multiplier": 0.0, "clipping_norm": 0.05}})
    raw["federation"].update(num_hospitals=3, patients_per_hospital=8)
    cfg = build_config(raw)
    final, _, _ = run_rounds(cfg, SIZES)
    delta = np.concatenate([(f.astype(np.float64) - w).ravel() for f, w in zip(final, base_weights())])
    unclipped = np.concatenate([(e - w).ravel() for e, w in zip(plain_fedavg(base_weights(), SIZES), base_weights())])
    assert np.linalg.norm(unclipped) > 0.1  # clipping had work to do
    assert np.linalg.norm(delta) <= 0.05 + 1e-4


def test_server_side_clipping_without_secagg_bounds_the_average_update():
    raw = tiny_raw(defences={"central_dp": {"mode": "server_clipping", "noise_multiplier": 0.0, "clipping_norm": 0.05}})
    raw["federation"].update(num_hospitals=3, patients_per_hospital=8)
    final, recorder, _ = run_rounds(build_config(raw), SIZES)
    delta = np.concatenate([(f.astype(np.float64) - w).ravel() for f, w in zip(final, base_weights())])
    assert np.linalg.norm(delta) <= 0.05 + 1e-4
    ((_, replies, _),) = recorder.calls
    for reply in replies:  # the server clipped each update itself: it saw every one of them
        update = np.concatenate([(r.astype(np.float64) - w).ravel() for r, w in zip(reply.weights, base_weights())])
        assert np.linalg.norm(update) == pytest.approx(0.05, rel=1e-3)


def test_secure_aggregate_is_reproducible_despite_stochastic_rounding():
    cfg = cfg_with()
    zeros = [np.zeros_like(w) for w in base_weights()]
    first, _, _ = run_rounds(cfg, SIZES, initial=zeros, seed=1)
    second, _, _ = run_rounds(cfg, SIZES, initial=zeros, seed=2)  # other node ids, other keys and masks
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
