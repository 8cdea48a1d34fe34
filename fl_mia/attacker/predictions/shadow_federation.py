"""Shadow models trained the way the target was: a FedAvg federation of shadow hospitals.

An adaptive attacker (``attacker.shadows.mode = "federated"`` or ``"as_target"``) does not
train its shadows centrally: it splits each shadow's data by patient over as many shadow
hospitals as the target federation has, and runs the target's rounds — the same number of
hospitals sampled per round, the same local epochs, FedAvg weighted by images — in a plain
loop (no Flower: the attacker simulates the protocol on its own data). With ``as_target``
each shadow hospital also trains with the target's DP-SGD when the target uses it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fl_mia.data import Split
from fl_mia.seeding import rng_for

# Trains ``model`` in place on one shadow hospital's shard for one round.
LocalTrainer = Callable[[nn.Module, Split, tuple], None]


def shadow_hospitals(split: Split, *, count: int, seed: int, name: str) -> list[Split]:
    """``split`` divided by patient over ``count`` shadow hospitals (fewer if too few patients)."""
    patients = rng_for(seed, "shadow-federation", name).permutation(np.unique(split.patient_ids))
    shards = [shard for shard in np.array_split(patients, min(count, len(patients))) if len(shard)]
    return [split.subset(np.flatnonzero(np.isin(split.patient_ids, shard))) for shard in shards]


def fedavg(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    """Weighted mean of floating-point entries; integer buffers (e.g. BatchNorm's step count) from the first."""
    total = float(sum(weights))
    averaged = {}
    for key, first in states[0].items():
        if torch.is_floating_point(first):
            averaged[key] = sum(state[key].double() * (w / total) for state, w in zip(states, weights)).to(first.dtype)
        else:
            averaged[key] = first.clone()
    return averaged


def train_federated_shadow(
    model: nn.Module,
    split: Split,
    *,
    num_hospitals: int,
    sampled_per_round: int,
    rounds: int,
    seed: int,
    name: str,
    local_train: LocalTrainer,
) -> None:
    """Train ``model`` in place as the global model of a shadow federation over ``split``,
    with the target's hospitals, hospitals sampled per round and rounds."""
    hospitals = shadow_hospitals(split, count=num_hospitals, seed=seed, name=name)
    per_round = min(sampled_per_round, len(hospitals))
    sampler = rng_for(seed, "shadow-federation-sampling", name)
    for server_round in range(1, rounds + 1):
        chosen = np.sort(sampler.choice(len(hospitals), size=per_round, replace=False))
        states, weights = [], []
        for hospital in chosen:
            local = copy.deepcopy(model)
            local_train(local, hospitals[hospital], (server_round, int(hospital)))
            states.append({k: v.detach().clone() for k, v in local.state_dict().items()})
            weights.append(len(hospitals[hospital]))
        model.load_state_dict(fedavg(states, weights))
