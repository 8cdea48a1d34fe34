"""DP-SGD on a hospital, with the accountant kept in Flower's per-node state across rounds."""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict

from fl_mia.config import ExperimentConfig
from fl_mia.data import Split
from fl_mia.contracts import DP_ACCOUNTANT_STATE_KEY
from fl_mia.defences.accounting import REFERENCE_DELTA, epsilon_of
from fl_mia.defences.dp_sgd import history_from_record, history_to_record, plan_for, train_local_dp
from fl_mia.training import TrainResult




def train_dp_sgd(
    model, split: Split, cfg: ExperimentConfig, *, node_state: RecordDict | None, tags: tuple, prior_steps: int = 0
) -> tuple[TrainResult, dict]:
    """One round of DP-SGD; returns the result and the privacy metrics sent to the server.

    The simulation rebuilds the client object for every message, but ``context.state``
    of the node persists for the run: the accountant's history lives there, so the ε a
    hospital reports covers every round it has trained in.
    """
    if node_state is None:
        raise ValueError("DP-SGD needs the node's context.state to keep its accountant across rounds")
    history = history_from_record(node_state.config_records.get(DP_ACCOUNTANT_STATE_KEY))
    if not history and prior_steps > 0:
        # A resumed run starts with fresh nodes; the server checkpointed how many DP steps this
        # hospital took. Noise and sample rate are fixed by the config, so that rebuilds the history.
        plan = plan_for(cfg, len(split))
        history = [(plan.noise_multiplier, plan.sample_rate, prior_steps)]
    outcome = train_local_dp(model, split, cfg, history=history, seed=cfg.seed, tags=tags)
    node_state.config_records[DP_ACCOUNTANT_STATE_KEY] = ConfigRecord(history_to_record(outcome.history))
    return outcome.result, {
        "dp_epsilon": outcome.epsilon,
        "dp_delta": outcome.plan.delta,
        # The same spend at δ = 1e-5, comparable across runs whatever δ each configured.
        "dp_epsilon_at_reference_delta": epsilon_of(outcome.history, delta=REFERENCE_DELTA, accountant=outcome.plan.accountant),
        "dp_noise_multiplier": outcome.plan.noise_multiplier,
        "dp_sample_rate": outcome.plan.sample_rate,
        "dp_steps_total": sum(steps for _, _, steps in outcome.history),
        "dp_empty_batches": outcome.empty_batches,
    }
