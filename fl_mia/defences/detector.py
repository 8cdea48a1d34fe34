"""Would a hospital notice? A check on the model it receives, from what the hospital alone can see.

Each round a hospital holds the model it received, the previous one (a flagged model is
skipped once as reference, so a poisoned round is not the yardstick of the next), the model it
returned last round and its own training loss (the last unflagged round's is the reference). From these, four pieces of
evidence (each poisoner leaves at least one):

- ``loss_jump``: its first-batch training loss on the received model over the same figure a
  round earlier (gradient ascent raises it; honest FedAvg lowers it);
- ``weight_change``: the largest per-layer relative change ‖θ_r − θ_{r−1}‖ / ‖θ_{r−1}‖ between
  the received model and the previous one (any edit a server makes to the weights);
- ``new_dead_units``: norm channels set to exactly 0 or filters zeroed since the previous
  received model (trap weights' and model inconsistency's silenced units: a trained weight
  is never exactly 0);
- ``echo``: the received model is, bit for bit, the one the hospital returned last round
  (isolation sends a hospital its own model back).

A round is flagged when any check crosses its threshold (``[defences.detector]``); the
thresholds are calibrated on honest runs so that honest training raises few false alarms.
The SecAgg+ consistency digest (:mod:`fl_mia.defences.consistency`) is the fifth check, run by
its own mod. Nothing here reads the server's side: only the hospital's own arrays and losses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

# Layers smaller than this (biases, a head's few weights) move by large fractions in honest
# training: their relative change says nothing.
MIN_LAYER_SIZE = 64


@dataclass(frozen=True)
class DetectorThresholds:
    """Where each check flags (``None``: the check is off)."""

    loss_jump: float | None
    weight_change: float | None
    dead_units: bool = True
    echo: bool = True


def weights_digest(arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def dead_units(arrays: list[np.ndarray]) -> int:
    """Exactly-zero entries of vectors (norm weights) plus all-zero rows of matrices and filters."""
    count = 0
    for array in arrays:
        if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
            continue
        if array.ndim == 1:
            count += int((array == 0).sum())
        else:
            count += int((array.reshape(len(array), -1) == 0).all(axis=1).sum())
    return count


def largest_layer_change(received: list[np.ndarray], previous: list[np.ndarray]) -> float:
    """max over layers (≥ MIN_LAYER_SIZE values) of ‖received − previous‖ / ‖previous‖."""
    largest = 0.0
    for now, before in zip(received, previous):
        if now.size < MIN_LAYER_SIZE or not np.issubdtype(now.dtype, np.floating):
            continue
        scale = float(np.linalg.norm(before))
        if scale > 0:
            largest = max(largest, float(np.linalg.norm(now.astype(np.float64) - before)) / scale)
    return largest


def round_evidence(
    *,
    received: list[np.ndarray],
    previous_received: list[np.ndarray] | None,
    last_returned_digest: str | None,
    first_batch_loss: float | None,
    previous_first_batch_loss: float | None,
) -> dict[str, float]:
    """The four pieces of evidence for one round (NaN where the hospital has nothing to compare with)."""
    nan = float("nan")
    has_losses = first_batch_loss is not None and previous_first_batch_loss not in (None, 0.0)
    evidence = {
        "loss_jump": first_batch_loss / previous_first_batch_loss if has_losses else nan,
        "weight_change": largest_layer_change(received, previous_received) if previous_received else nan,
        "new_dead_units": float(dead_units(received) - dead_units(previous_received)) if previous_received else nan,
        "echo": float(weights_digest(received) == last_returned_digest) if last_returned_digest else nan,
    }
    return evidence


def flags(evidence: dict[str, float], thresholds: DetectorThresholds) -> dict[str, bool]:
    """Which checks fire (a NaN piece of evidence never does)."""
    def above(value: float, limit: float | None) -> bool:
        return limit is not None and np.isfinite(value) and value > limit

    return {
        "loss_jump": above(evidence["loss_jump"], thresholds.loss_jump),
        "weight_change": above(evidence["weight_change"], thresholds.weight_change),
        "new_dead_units": thresholds.dead_units and above(evidence["new_dead_units"], 0.0),
        "echo": thresholds.echo and above(evidence["echo"], 0.5),
    }


def wilson_interval(successes: int, trials: int, *, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (``None`` without trials)."""
    if trials == 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def flag_rate(flagged: int, rounds: int) -> dict[str, Any]:
    """Flagged (round, hospital) pairs out of ``rounds``, with the rate and its Wilson interval."""
    return {"flagged": flagged, "rounds": rounds, "rate": flagged / rounds if rounds else None,
            "ci": wilson_interval(flagged, rounds)}


def detection_summary(rows: list[dict[str, Any]], *, attacked: set[tuple[int, int]] | None) -> dict[str, Any] | None:
    """Detection rate over attacked (round, hospital) pairs and false-alarm rate over the others.

    ``rows``: the round log's hospital rows (with the detector's reply metrics);
    ``attacked``: the poisoned pairs (``None`` or empty: an honest run, every round is honest).
    Rounds a hospital has nothing to compare with (its first) are not counted.
    """
    counts = {True: [0, 0], False: [0, 0]}  # attacked? → [flagged, rounds]
    by_check: dict[str, int] = {}
    for row in rows:
        if row.get("hospital") == "all" or "detector_flag" not in row or not row.get("detector_compared"):
            continue
        is_attacked = (int(row["round"]), int(row["hospital"])) in (attacked or set())
        counts[is_attacked][0] += int(row["detector_flag"])
        counts[is_attacked][1] += 1
        for check in str(row.get("detector_checks") or "").split(","):
            if check and is_attacked:
                by_check[check] = by_check.get(check, 0) + 1
    if counts[True][1] + counts[False][1] == 0:
        return None

    return {
        "detection": flag_rate(*counts[True]),
        "false_alarms": flag_rate(*counts[False]),
        "checks_fired_in_attack_rounds": by_check,
    }
