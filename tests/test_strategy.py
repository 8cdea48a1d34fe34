"""The honest strategy without Ray: mocked replies, hand-computed averages."""

from unittest.mock import MagicMock

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from strategies.honest import HonestFedAvg, PartitionSeededClientManager


def reply(node_id: int, partition: int, value: float, n: int):
    proxy = MagicMock()
    proxy.node_id = node_id
    res = FitRes(
        status=Status(Code.OK, ""),
        parameters=ndarrays_to_parameters([np.full((2, 2), value, np.float32), np.array([value], np.float32)]),
        num_examples=n,
        metrics={"partition_id": partition, "train_loss": value},
    )
    return proxy, res


class Recorder:
    def __init__(self):
        self.calls = []

    def on_fit_replies(self, server_round, replies, failures):
        self.calls.append((server_round, replies, failures))


def test_weighted_average_by_hand_and_replies_in_partition_order():
    recorder = Recorder()
    strategy = HonestFedAvg(directory={}, observer=recorder, keep_weights=True)
    results = [reply(900, 2, 4.0, 30), reply(100, 0, 1.0, 10), reply(500, 1, 2.0, 20)]
    parameters, metrics = strategy.aggregate_fit(1, results, [])
    average = parameters_to_ndarrays(parameters)
    expected = (1.0 * 10 + 2.0 * 20 + 4.0 * 30) / 60
    assert np.allclose(average[0], expected) and np.allclose(average[1], expected)
    (_, replies, failures), = recorder.calls
    assert [r.hospital for r in replies] == [0, 1, 2]
    assert failures == 0
    assert np.allclose(replies[2].weights[0], 4.0)


def test_average_is_bit_identical_whatever_the_arrival_order():
    strategy = HonestFedAvg(directory={})
    values = [0.1, 0.7, 0.3, 1e-7]
    results = [reply(10 + i, i, v, 7 + i) for i, v in enumerate(values)]
    a = parameters_to_ndarrays(strategy.aggregate_fit(1, results, [])[0])
    b = parameters_to_ndarrays(strategy.aggregate_fit(1, list(reversed(results)), [])[0])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_client_sampling_is_seeded_by_partition_not_node_id():
    def sampled(seed, node_ids):
        directory = {node: partition for partition, node in enumerate(node_ids)}
        manager = PartitionSeededClientManager(seed=seed, directory=directory)
        for node in reversed(node_ids):
            proxy = MagicMock()
            proxy.node_id = node
            proxy.cid = str(node)
            manager.register(proxy)
        return [[directory[p.node_id] for p in manager.sample(3)] for _ in range(5)]

    first = sampled(0, [11, 22, 33, 44, 55, 66])
    assert first == sampled(0, [987, 654, 321, 123, 456, 789])  # other random node ids, same draw
    assert first != sampled(1, [11, 22, 33, 44, 55, 66])
    assert all(len(set(draw)) == 3 for draw in first)
