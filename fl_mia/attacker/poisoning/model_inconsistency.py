"""Model inconsistency (Pasquini, Francati, Ateniese, CCS 2022).

Every hospital but the target receives a model whose local update is known in advance:
the last normalisation layer of the decoder gets weight 0 and bias −1, so the ReLU after
it outputs zeros. Then no gradient reaches any weight except the segmentation head's
bias, whatever the hospital's data; with Adam or SGD the other weights return unchanged.
A (securely) aggregated sum then carries the target's update alone, and the server
recovers it from the aggregate, the models it sent and the visible example counts.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from fl_mia.attacker.poisoning.base import Poisoner

NORM_TYPES = (nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def silencing_keys(model: nn.Module) -> tuple[str, str]:
    """State-dict keys (weight, bias) of the decoder's last normalisation layer."""
    last = None
    for name, module in model.named_modules():
        if name.startswith("decoder") and isinstance(module, NORM_TYPES) and module.affine:
            last = name
    if last is None:
        raise ValueError("threat.poisoning=model_inconsistency needs a decoder with an affine norm layer (Unet family)")
    return f"{last}.weight", f"{last}.bias"


def silenced_weights(model: nn.Module, weights: list[np.ndarray]) -> list[np.ndarray]:
    """A copy of ``weights`` whose local update can only move the segmentation head's bias."""
    weight_key, bias_key = silencing_keys(model)
    keys = list(model.state_dict())
    out = [w.copy() for w in weights]
    out[keys.index(weight_key)][...] = 0.0
    out[keys.index(bias_key)][...] = -1.0
    return out


def reconstruct_target_update(
    *,
    aggregate: list[np.ndarray],
    sent: dict[int, list[np.ndarray]],
    num_examples: dict[int, int],
    target: int,
) -> list[np.ndarray]:
    """The target's returned weights from a FedAvg aggregate of everybody's returned weights.

    Σ_k n_k θ'_k = N·aggregate and θ'_j = sent_j for every silenced hospital j (up to the
    head bias), so θ'_t = (N·aggregate − Σ_{j≠t} n_j sent_j) / n_t.
    """
    total = sum(num_examples.values())
    others = [k for k in num_examples if k != target]
    return [
        (total * layer - sum(num_examples[j] * sent[j][i] for j in others)) / num_examples[target]
        for i, layer in enumerate(aggregate)
    ]


class ModelInconsistencyPoisoner(Poisoner):
    name = "model_inconsistency"
    silences_updates = True
    # The update attacks read the target's update, reconstructed from the (secure) aggregate.
    matched_signals = ("update.loss_reduction.accumulated", "update.returned_loss.accumulated")
    needs_secagg = True

    def __init__(self, model: nn.Module, *, targets: list[int]) -> None:
        self.model = model
        self.targets = set(targets)
        silencing_keys(model)  # fail at set-up, not in round 3

    @classmethod
    def from_settings(
        cls, settings: None, knowledge: object, model: nn.Module, *, targets: list[int]
    ) -> "ModelInconsistencyPoisoner":
        """It has no knobs and needs no attacker knowledge: it silences, it does not score."""
        return cls(model, targets=targets)

    def describe(self) -> str:
        weight_key, bias_key = silencing_keys(self.model)
        return (
            f"hospitals other than {sorted(self.targets)} receive the model with {weight_key} = 0 and "
            f"{bias_key} = −1, which silences their update; the target receives the honest model"
        )

    def poisoned_hospitals(self, num_hospitals: int) -> set[int]:
        return set(range(num_hospitals)) - self.targets

    def poison(self, *, server_round: int, hospital: int, global_weights: list[np.ndarray]) -> list[np.ndarray] | None:
        if hospital in self.targets:
            return None
        return silenced_weights(self.model, global_weights)
