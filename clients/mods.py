"""Flower client mods of the defences, and the order in which a hospital stacks them.

Mods run outermost first. A training reply flows from the hospital outwards:
``fixedclipping_mod`` (clip the update; or ``distributed_dp_mod``: clip and add this hospital's
noise share) → ``delta_mod`` (send returned − received) →
``secaggplus_mod`` (mask and quantise) → ``consistency_mod`` (compare received models
before unmasking). They are attached to training only: an app-level mod that also runs on
evaluate replies can hang the run (see REFERENCES.md), so each passes other messages by.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
from flwr.common import FitRes, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from flwr.compat.common import recorddict_compat as compat

from fl_mia.config import DefencesConfig
from fl_mia.seeding import int_seed
from fl_mia.contracts import CONSISTENCY_REFUSAL_CODE, NODE_PARTITION_KEY
from fl_mia.defences.consistency import HospitalChannel, ModelInconsistencyError, model_digest, session_key
from fl_mia.defences.detector import DetectorThresholds, flags, round_evidence, weights_digest
from fl_mia.defences.distributed_dp import clipped_noisy_update, noise_share_std

logger = logging.getLogger("fl_mia")


def on_train_reply(edit: Callable[[Message, Context, list[np.ndarray], FitRes], None]):
    """A mod that lets ``edit(msg, ctxt, received, fit_res)`` change a train reply in place.

    ``received``: the weights the server sent. Other messages, and replies that carry an
    error, pass through untouched.
    """

    def mod(msg: Message, ctxt: Context, call_next) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or not msg.content.array_records:
            return call_next(msg, ctxt)
        received = parameters_to_ndarrays(compat.recorddict_to_fitins(msg.content, keep_input=True).parameters)
        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        fit_res = compat.recorddict_to_fitres(out.content, keep_input=True)
        edit(msg, ctxt, received, fit_res)
        out.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
        return out

    return mod


def make_delta_mod(*, clipping_range: float, seed: int | None = None):
    """Send ``returned − received`` instead of the returned weights (for SecAgg+).

    SecAgg+ clips every value to ±``clipping_range`` before quantising. Deltas are small
    where weights are not; a delta beyond the range is refused with an error rather than
    clipped silently. The server adds the averaged delta back to the model it sent
    (:class:`server.defences.DeltaToGlobal`).

    ``seed``: SecAgg+ rounds stochastically with NumPy's global generator right after this
    mod returns; seeding it per (seed, round, hospital) keeps a run reproducible. The
    rounding noise protects nothing (the masks come from the key agreement, not from it).
    """

    def delta_mod(msg: Message, ctxt: Context, received: list[np.ndarray], fit_res: FitRes) -> None:
        returned = parameters_to_ndarrays(fit_res.parameters)
        deltas = [(np.asarray(r, np.float64) - np.asarray(s, np.float64)).astype(np.float32) for r, s in zip(returned, received)]
        largest = max((float(np.abs(d).max()) for d in deltas if d.size), default=0.0)
        if largest > clipping_range:
            raise ValueError(
                f"an update value of {largest:.3g} exceeds defences.secagg.clipping_range={clipping_range:g}; "
                "SecAgg+ would clip it silently: raise the range or lower training.lr"
            )
        fit_res.parameters = ndarrays_to_parameters(deltas)
        fit_res.metrics["max_abs_delta"] = largest
        if seed is not None:
            np.random.seed(int_seed(seed, "secagg-rounding", msg.metadata.group_id, ctxt.node_config.get(NODE_PARTITION_KEY, 0)) % 2**32)

    return on_train_reply(delta_mod)


def make_consistency_mod(*, mode: str, channel_root=None):
    """Publish the received model's digest; before unmasking, compare it with the others'.

    Placed outside ``secaggplus_mod`` so that it sees every SecAgg+ stage: the digest is
    published when the training instruction arrives (stage 'collect_masked_vectors') and
    checked at stage 'unmask', when every sampled hospital has published. With mode
    'refuse' the hospital withholds its shares, so the server cannot open the sum.
    """

    def consistency_mod(msg: Message, ctxt: Context, call_next) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content.config_records:
            return call_next(msg, ctxt)
        stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE)
        channel = HospitalChannel(channel_root, run_id=msg.metadata.run_id)
        partition_id = int(ctxt.node_config[NODE_PARTITION_KEY])
        if stage == Stage.COLLECT_MASKED_VECTORS:
            received = compat.recorddict_to_fitins(msg.content, keep_input=True).parameters
            channel.publish(session_key(_secagg_state(ctxt).pk1), partition_id, model_digest(received.tensors))
        elif stage == Stage.UNMASK:
            # Compare with every neighbour this hospital exchanged SecAgg+ keys with this round.
            neighbours = _secagg_state(ctxt).public_keys_dict
            digests = channel.digests(session_key(pk1) for pk1, _ in neighbours.values())
            consistent = len(set(digests.values())) <= 1
            action = "none" if consistent else ("refused" if mode == "refuse" else "flagged")
            label = msg.metadata.group_id  # the report's round label only; the check above never reads it
            channel.record_verdict(label, partition_id, consistent, action)
            if not consistent:
                groups: dict[str, list[int]] = {}
                for hospital, digest in sorted(digests.items()):
                    groups.setdefault(digest[:12], []).append(hospital)
                message = f"hospital {partition_id}, round {label}: hospitals received different models {groups}"
                if mode == "refuse":
                    raise ModelInconsistencyError(f"{message}; {CONSISTENCY_REFUSAL_CODE}")
                logger.warning("%s (flagged, round continues)", message)
        return call_next(msg, ctxt)

    return consistency_mod


# One RecordDict namespace holds every record type: the two need names of their own.
DETECTOR_MODEL_KEY, DETECTOR_MEMORY_KEY = "fl_mia.detector.previous_model", "fl_mia.detector.memory"


def make_detector_mod(thresholds: DetectorThresholds):
    """Would this hospital notice? Compares the received model with the previous one (a flagged one
    skipped once) and with its own last reply, and its first-batch loss with the last unflagged
    round's; the verdict goes into the reply's metrics.

    What it keeps between rounds (the previous received model, its last reply's digest and
    first-batch loss) lives in the node's own ``context.state``, never on the server.
    """

    def detector_mod(msg: Message, ctxt: Context, received: list[np.ndarray], fit_res: FitRes) -> None:
        kept = ctxt.state.config_records.get(DETECTOR_MEMORY_KEY)
        previous = ctxt.state.array_records.get(DETECTOR_MODEL_KEY)
        evidence = round_evidence(
            received=received,
            previous_received=previous.to_numpy_ndarrays() if previous is not None else None,
            last_returned_digest=str(kept["returned_digest"]) if kept is not None else None,
            first_batch_loss=fit_res.metrics.get("first_batch_loss"),
            previous_first_batch_loss=kept.get("first_batch_loss") if kept is not None else None,
        )
        fired = [check for check, on in flags(evidence, thresholds).items() if on]
        fit_res.metrics.update(
            detector_flag=int(bool(fired)),
            detector_compared=int(previous is not None),
            detector_checks=",".join(fired),
            **{f"detector_{name}": value for name, value in evidence.items() if np.isfinite(value)},
        )
        # A flagged round's loss never becomes the reference (honest losses fall, so this never locks
        # in); a flagged model is skipped as reference once, not for ever: weights drift in honest
        # training, and a reference many rounds old would flag every later round.
        memory = {"returned_digest": weights_digest(parameters_to_ndarrays(fit_res.parameters)), "skipped": 0}
        if fired and kept is not None and "first_batch_loss" in kept:
            memory["first_batch_loss"] = float(kept["first_batch_loss"])
        elif "first_batch_loss" in fit_res.metrics:
            memory["first_batch_loss"] = float(fit_res.metrics["first_batch_loss"])
        if fired and previous is not None and not (kept is not None and kept.get("skipped")):
            memory["skipped"] = 1
        else:
            ctxt.state.array_records[DETECTOR_MODEL_KEY] = ArrayRecord(received)
        ctxt.state.config_records[DETECTOR_MEMORY_KEY] = ConfigRecord(memory)

    return on_train_reply(detector_mod)


def _secagg_state(ctxt: Context) -> SecAggPlusState:
    """The hospital's own SecAgg+ state (its keys of this round, its neighbours' public keys)."""
    return SecAggPlusState(**ctxt.state.config_records[RECORD_KEY_STATE])


def make_distributed_dp_mod(*, noise_multiplier: float, clipping_norm: float, sampled: int):
    """Clip this hospital's update and add its share of the noise (std σ·C/√sampled), weight 1.

    The norm and the share come from the hospital's own config, not from the server's
    message (a dishonest server could otherwise ask for no clipping). The noise is seeded by
    the hospital's DP secret (:func:`clients.dp_state.hospital_secret`), never by anything the
    server holds. ``num_examples`` is reported as 1: every hospital weighs the same in the
    secure sum, so its sensitivity is the clipping norm (see fl_mia/defences/distributed_dp.py).
    """
    from clients.dp_state import hospital_secret

    share_std = noise_share_std(noise_multiplier=noise_multiplier, clipping_norm=clipping_norm, sampled=sampled)

    def distributed_dp_mod(msg: Message, ctxt: Context, received: list[np.ndarray], fit_res: FitRes) -> None:
        partition_id = int(ctxt.node_config.get(NODE_PARTITION_KEY, 0))
        secret = hospital_secret(ctxt.state, ctxt.node_config, partition_id)
        rng = np.random.default_rng(int_seed(secret, "distributed-dp", msg.metadata.group_id))
        noisy = clipped_noisy_update(
            parameters_to_ndarrays(fit_res.parameters), received, clipping_norm=clipping_norm, share_std=share_std, rng=rng
        )
        fit_res.parameters = ndarrays_to_parameters(noisy)
        fit_res.num_examples = 1

    return on_train_reply(distributed_dp_mod)


def hospital_mods(defences: DefencesConfig, *, seed: int, sampled: int = 1) -> list:
    """The mods of every hospital for this experiment's defences (outermost first)."""
    mods = []
    if defences.secagg.enabled:
        if defences.consistency.mode != "off":
            mods.append(make_consistency_mod(mode=defences.consistency.mode))
        mods += [secaggplus_mod, make_delta_mod(clipping_range=defences.secagg.clipping_range, seed=seed)]
    dp = defences.central_dp
    if dp.mode == "client_clipping":
        mods.append(fixedclipping_mod)
    elif dp.mode == "distributed":
        mods.append(make_distributed_dp_mod(noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clipping_norm, sampled=sampled))
    if defences.detector.enabled:
        # Innermost: it sees the model as received and the reply as trained, before any clipping.
        detector = defences.detector
        mods.append(make_detector_mod(DetectorThresholds(
            loss_jump=detector.loss_jump, weight_change=detector.weight_change,
            dead_units=detector.dead_units, echo=detector.echo,
        )))
    return mods


def defences_mod(defences_of: Callable[[Context], tuple[DefencesConfig, int, int]]):
    """One app-level mod that runs this experiment's defence mods in order.

    ``defences_of(context)`` gives the experiment's defences, seed and hospitals sampled per
    round (what a distributed-DP noise share is sized by): under ``flwr run`` the
    ClientApp object is built before any config exists, so they come from each message's
    run config (read once per run by :mod:`clients.client_app`).
    """

    def mod(msg: Message, ctxt: Context, call_next) -> Message:
        defences, seed, sampled = defences_of(ctxt)
        return _chain(hospital_mods(defences, seed=seed, sampled=sampled), call_next)(msg, ctxt)

    return mod


def _chain(mods: list, app):
    for mod in reversed(mods):
        app = (lambda m, inner: lambda msg, ctxt: m(msg, ctxt, inner))(mod, app)
    return app
