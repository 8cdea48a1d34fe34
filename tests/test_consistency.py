"""Model-consistency check: a server that sends one hospital a different model is caught."""

import numpy as np
import pytest
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays

from fl_mia.config.loading import build_config
from fl_mia.defences.consistency import HospitalChannel, model_digest
from strategies.honest import HonestFedAvg
from tests.conftest import tiny_raw
from tests.flower_doubles import base_weights, run_rounds
from server.inprocess_grid import InProcessGrid

SIZES = [16, 10, 6]


@pytest.fixture(autouse=True)
def private_channel(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_MIA_HOSPITAL_CHANNEL", str(tmp_path / "channel"))  # the grid runs hospitals in-process


class InconsistentFedAvg(HonestFedAvg):
    """Test double of model inconsistency: hospital 0 gets a model of its own."""

    def configure_fit(self, server_round, parameters, client_manager):
        instructions = super().configure_fit(server_round, parameters, client_manager)
        out = []
        for proxy, ins in instructions:
            if self.directory[proxy.node_id] == 0:
                other = [w * 0.5 for w in parameters_to_ndarrays(ins.parameters)]
                ins = FitIns(ndarrays_to_parameters(other), dict(ins.config))  # a new payload, the shared one untouched
            out.append((proxy, ins))
        return out


def cfg_with(mode):
    raw = tiny_raw(defences={"secagg": {"enabled": True}, "consistency": {"mode": mode}})
    raw["federation"].update(num_hospitals=3, patients_per_hospital=8)
    return build_config(raw)


def test_refuse_withholds_the_shares_so_the_sum_is_never_opened():
    final, recorder, grid = run_rounds(cfg_with("refuse"), SIZES, strategy_cls=InconsistentFedAvg)
    assert recorder.calls == []  # the strategy never received an aggregate
    assert all(np.array_equal(f, w) for f, w in zip(final, base_weights()))
    verdicts = HospitalChannel(run_id=grid.run.run_id).verdicts()["1"]
    assert {v["action"] for v in verdicts.values()} == {"refused"}
    assert set(verdicts) == {"0", "1", "2"}


def test_flag_records_the_mismatch_and_lets_the_round_finish():
    final, recorder, grid = run_rounds(cfg_with("flag"), SIZES, strategy_cls=InconsistentFedAvg)
    assert len(recorder.calls) == 1
    verdicts = HospitalChannel(run_id=grid.run.run_id).verdicts()["1"]
    assert all(v == {"consistent": False, "action": "flagged"} for v in verdicts.values())


def test_an_honest_server_passes_the_check():
    final, recorder, grid = run_rounds(cfg_with("refuse"), SIZES)
    assert len(recorder.calls) == 1
    verdicts = HospitalChannel(run_id=grid.run.run_id).verdicts()["1"]
    assert all(v == {"consistent": True, "action": "none"} for v in verdicts.values())
    published = list((HospitalChannel(run_id=grid.run.run_id).folder / "digests").glob("*.json"))
    assert len(published) == len(SIZES) and len({p.read_text().split('"digest"')[1] for p in published}) == 1


class GroupIdPerHospitalGrid(InProcessGrid):
    """A server that labels each hospital's messages with a group id of its own.

    Were the channel keyed by group id, every hospital would find only its own digest
    and the inconsistent round would pass.
    """

    def _handle(self, msg):
        msg.metadata.group_id = f"{msg.metadata.group_id}-for-node-{msg.metadata.dst_node_id}"
        return super()._handle(msg)


def test_varying_group_ids_per_hospital_does_not_hide_model_inconsistency():
    final, recorder, grid = run_rounds(
        cfg_with("refuse"), SIZES, strategy_cls=InconsistentFedAvg, grid_cls=GroupIdPerHospitalGrid
    )
    assert recorder.calls == []  # still refused: the sum was never opened
    assert all(np.array_equal(f, w) for f, w in zip(final, base_weights()))
    verdicts = HospitalChannel(run_id=grid.run.run_id).verdicts()
    assert len(verdicts) == len(SIZES)  # one report label per hospital: the server's doing
    assert all(v["action"] == "refused" for by_hospital in verdicts.values() for v in by_hospital.values())


def test_digest_changes_with_any_byte_and_with_array_boundaries():
    assert model_digest([b"ab", b"c"]) != model_digest([b"a", b"bc"])
    assert model_digest([b"ab", b"c"]) == model_digest([b"ab", b"c"])


def test_consistency_check_without_secagg_is_rejected_at_load():
    from fl_mia.config import ConfigError

    with pytest.raises(ConfigError, match="consistency.mode"):
        build_config(tiny_raw(defences={"consistency": {"mode": "refuse"}}))
