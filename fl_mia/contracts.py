"""What clients, server and strategies agree on: message keys, reply and observer types.

Every name that crosses a Flower message between a hospital and the server (or between
the strategy and what observes it) is defined here once, so the two sides cannot drift
apart. Plain Python: importing it pulls in neither Flower nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# Metrics/properties key by which a hospital names its partition to the server: Flower's
# node ids are random each run, partition ids are the reproducible ones.
PARTITION_KEY = "partition_id"

# Node-config key of a hospital's partition (``--node-config "partition-id=0 num-partitions=N"``).
NODE_PARTITION_KEY = "partition-id"

# Fit-config key prefix: ``{DP_PRIOR_STEPS_KEY}{hospital}`` carries the DP-SGD steps a hospital
# took before a resume, so a fresh node can rebuild its accountant.
DP_PRIOR_STEPS_KEY = "dp_prior_steps_"

# Per-node state key (``context.state``) of a hospital's DP-SGD accountant history.
DP_ACCOUNTANT_STATE_KEY = "fl_mia.dp_sgd.accountant"

# Per-node state key of a hospital's DP-SGD noise secret: drawn and kept on the hospital's
# side, never sent (see clients/dp_state.py).
DP_NOISE_SECRET_STATE_KEY = "fl_mia.dp_sgd.noise_secret"

# Error text a hospital puts in its reply when it withholds its SecAgg+ shares because the
# hospitals did not all receive the same model; the server counts such a round as refused
# (a defence working), not as a crash.
CONSISTENCY_REFUSAL_CODE = "fl-mia:inconsistent-models:withholding-secagg-shares"

Scalar = bool | bytes | float | int | str


@dataclass
class HospitalReply:
    """What the server holds after one hospital's fit in one round."""

    round: int
    hospital: int
    num_examples: int
    metrics: dict[str, Scalar]
    weights: list[np.ndarray] | None = field(default=None, repr=False)  # the hospital's model as the server sees it
    sent_weights: list[np.ndarray] | None = field(default=None, repr=False)  # what the server sent it
    # "reply": its own returned model; "aggregate": only the new aggregate (SecAgg+);
    # "reconstructed": recovered from the aggregate by a dishonest server.
    view: str = "reply"


class RoundObserver(Protocol):
    """Receives, in partition order, every reply of a round before aggregation."""

    def on_fit_replies(self, server_round: int, replies: list[HospitalReply], failures: int) -> None: ...
