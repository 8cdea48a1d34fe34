"""DP-SGD on a hospital: its accountant and its noise secret, kept in Flower's per-node state.

The secret seeds every random choice of the hospital's DP-SGD (Poisson batches, noise). It
is the hospital's alone: the server holds the experiment seed and the config, so noise
derived from them could be regenerated and subtracted by a curious server. Where it comes
from, first match wins:

1. the node config key ``dp-noise-secret`` (deployment: each SuperNode's own
   ``--node-config``, which the server never sees);
2. the environment variable ``FL_MIA_HOSPITAL_SECRET`` of the hospitals' processes
   (simulation: set it to reproduce a DP run bit for bit; each hospital derives its own
   secret from it and its partition id; server code never reads it);
3. otherwise a fresh random secret per hospital and run (``secrets``), kept in the node's
   state for the rest of the run: DP runs then differ from run to run by their noise alone.
"""

from __future__ import annotations

import hashlib
import os
import secrets

import numpy as np

from flwr.app import ConfigRecord, RecordDict

from fl_mia.config import DpSgdConfig, TrainingConfig
from fl_mia.contracts import DP_ACCOUNTANT_STATE_KEY, DP_NOISE_SECRET_STATE_KEY
from fl_mia.data import Split
from fl_mia.defences.accounting import REFERENCE_DELTA, epsilon_of
from fl_mia.defences.dp_sgd import group_privacy, history_from_record, history_to_record, plan_for_split, train_local_dp
from fl_mia.seeding import int_seed
from fl_mia.training import TrainResult

SECRET_NODE_CONFIG_KEY = "dp-noise-secret"
SECRET_ENVIRONMENT_VARIABLE = "FL_MIA_HOSPITAL_SECRET"


def _from_text(text: str) -> int:
    # All 63 bits of a hash: a short tag hash (as stream names use) could be brute-forced.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % 2**63


def hospital_secret(node_state: RecordDict, node_config: dict, partition_id: int) -> int:
    """This hospital's DP-SGD secret: from its node config, its environment, or drawn once and kept."""
    kept = node_state.config_records.get(DP_NOISE_SECRET_STATE_KEY)
    if kept is not None:
        return int(kept["secret"])
    if SECRET_NODE_CONFIG_KEY in node_config:
        secret = _from_text(str(node_config[SECRET_NODE_CONFIG_KEY]))
    elif os.environ.get(SECRET_ENVIRONMENT_VARIABLE):
        secret = int_seed(_from_text(os.environ[SECRET_ENVIRONMENT_VARIABLE]), "dp-noise-secret", partition_id)
    else:
        secret = secrets.randbits(63)
    # A string: ConfigRecord integers are signed 64-bit, and the secret must survive as is.
    node_state.config_records[DP_NOISE_SECRET_STATE_KEY] = ConfigRecord({"secret": str(secret)})
    return secret


def train_dp_sgd(
    model,
    split: Split,
    dp: DpSgdConfig,
    training: TrainingConfig,
    *,
    rounds: int,
    node_state: RecordDict | None,
    node_config: dict | None = None,
    partition_id: int = 0,
    tags: tuple,
    prior_steps: int = 0,
) -> tuple[TrainResult, dict]:
    """One round of DP-SGD; returns the result and the privacy metrics sent to the server.

    The simulation rebuilds the client object for every message, but ``context.state``
    of the node persists for the run: the accountant's history and the noise secret live
    there, so the ε a hospital reports covers every round it has trained in.
    """
    if node_state is None:
        raise ValueError("DP-SGD needs the node's context.state to keep its accountant across rounds")
    history = history_from_record(node_state.config_records.get(DP_ACCOUNTANT_STATE_KEY))
    if not history and prior_steps > 0:
        # A resumed run starts with fresh nodes; the server checkpointed how many DP steps this
        # hospital took. Noise and sample rate are fixed by the config, so that rebuilds the history.
        plan = plan_for_split(dp, training, rounds=rounds, split=split)
        history = [(plan.noise_multiplier, plan.sample_rate, prior_steps)]
    secret = hospital_secret(node_state, node_config or {}, partition_id)
    outcome = train_local_dp(model, split, dp, training, rounds=rounds, history=history, secret=secret, tags=tags)
    node_state.config_records[DP_ACCOUNTANT_STATE_KEY] = ConfigRecord(history_to_record(outcome.history))
    return outcome.result, {**privacy_metrics(outcome, split), "dp_empty_batches": outcome.empty_batches}


def privacy_metrics(outcome, split: Split) -> dict:
    """What a hospital tells the server about its DP-SGD spend: ε with its unit and δ.

    At slice level it adds the per-patient ε that group privacy over its most-sliced patient
    implies (and that bound's δ, which may be vacuous): membership is asked by patient.
    """
    metrics = {
        "dp_unit": outcome.plan.unit,
        "dp_epsilon": outcome.epsilon,
        "dp_delta": outcome.plan.delta,
        # The same spend at δ = 1e-5, comparable across runs whatever δ each configured.
        "dp_epsilon_at_reference_delta": epsilon_of(outcome.history, delta=REFERENCE_DELTA, accountant=outcome.plan.accountant),
        "dp_noise_multiplier": outcome.plan.noise_multiplier,
        "dp_sample_rate": outcome.plan.sample_rate,
        "dp_steps_total": sum(steps for _, _, steps in outcome.history),
    }
    if outcome.plan.unit == "slice":
        slices = int(np.unique(split.patient_ids, return_counts=True)[1].max()) if len(split) else 1
        at_reference = metrics["dp_epsilon_at_reference_delta"]
        metrics["dp_max_slices_per_patient"] = slices
        metrics["dp_patient_epsilon_by_group_privacy"], metrics["dp_patient_delta_by_group_privacy"] = group_privacy(
            at_reference, REFERENCE_DELTA, group_size=slices
        )
    return metrics
