"""Server momentum (FedAvgM) as the outermost strategy layer: Flower's FedAvgM step, checkpointed, after DP noise."""

from unittest.mock import MagicMock

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedAvgM

from fl_mia.config.loading import build_config
from server.federation import layered_strategy
from strategies.server_momentum import ServerMomentum, ServerMomentumStrategy
from tests.conftest import tiny_raw


def replies(rng: np.random.Generator, shapes, n_hospitals: int = 3):
    out = []
    for hospital in range(n_hospitals):
        proxy = MagicMock()
        proxy.node_id = hospital
        arrays = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
        out.append((proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), 10 + hospital, {})))
    return out


@pytest.mark.parametrize("learning_rate, momentum", [(1.0, 0.9), (0.7, 0.5), (2.0, 0.0)])
def test_step_equals_flowers_fedavgm_over_several_rounds(learning_rate, momentum):
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (4,)]
    initial = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    flower = FedAvgM(
        initial_parameters=ndarrays_to_parameters(initial), server_learning_rate=learning_rate, server_momentum=momentum
    )
    ours = ServerMomentum(learning_rate=learning_rate, momentum=momentum)
    plain = FedAvg()
    global_model = initial
    for server_round in (1, 2, 3):
        results = replies(rng, shapes)
        expected, _ = flower.aggregate_fit(server_round, results, [])
        aggregated, _ = plain.aggregate_fit(server_round, results, [])
        global_model = ours.step(global_model, parameters_to_ndarrays(aggregated))
        for got, want in zip(global_model, parameters_to_ndarrays(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_buffer_round_trips_through_a_checkpoint_state_and_continues_identically():
    rng = np.random.default_rng(1)
    shapes = [(5,), (2, 2)]
    sent = [rng.normal(size=s) for s in shapes]
    steps = [[rng.normal(size=s) for s in shapes] for _ in range(3)]
    uninterrupted = ServerMomentum(learning_rate=1.0, momentum=0.9)
    first = ServerMomentum(learning_rate=1.0, momentum=0.9)
    assert first.state_dict() == {"layers": 0}
    a = uninterrupted.step(sent, steps[0])
    b = first.step(sent, steps[0])
    resumed = ServerMomentum(learning_rate=1.0, momentum=0.9)
    resumed.load_state_dict(first.state_dict())
    for x, y in zip(uninterrupted.step(a, steps[1]), resumed.step(b, steps[1])):
        np.testing.assert_array_equal(x, y)


def test_momentum_changes_the_model_where_fedavg_would_not():
    # Round 2's aggregate equal to the model sent: FedAvg stays put, momentum keeps going.
    optimiser = ServerMomentum(learning_rate=1.0, momentum=0.9)
    start = [np.zeros(3)]
    after_one = optimiser.step(start, [np.ones(3)])
    after_two = optimiser.step(after_one, after_one)
    np.testing.assert_allclose(after_two[0], 1.9)


def test_bad_settings_are_refused_with_the_field():
    with pytest.raises(ValueError, match="momentum"):
        ServerMomentum(learning_rate=1.0, momentum=1.0)
    with pytest.raises(Exception, match="server_momentum"):
        build_config(tiny_raw(federation={"server_momentum": 1.5}))


def test_the_layer_sits_outside_central_dp_so_it_only_sees_the_noised_aggregate():
    # Momentum inside Flower's DP wrapper would re-release un-noised updates of past rounds.
    cfg = build_config(tiny_raw(federation={"server_momentum": 0.9}, defences={"central_dp": {
        "mode": "server_clipping", "noise_multiplier": 1.0, "clipping_norm": 0.1}}))
    assert cfg.federation.uses_server_momentum()
    layered = layered_strategy(cfg, FedAvg(), server_momentum=ServerMomentum(learning_rate=1.0, momentum=0.9))
    assert isinstance(layered, ServerMomentumStrategy)
    assert isinstance(layered.strategy, DifferentialPrivacyServerSideFixedClipping)
    assert not build_config(tiny_raw()).federation.uses_server_momentum()  # FedAvg by default: no layer
    assert isinstance(layered_strategy(cfg, FedAvg(), server_momentum=None), DifferentialPrivacyServerSideFixedClipping)
