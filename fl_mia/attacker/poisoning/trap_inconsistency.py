"""Trap weights against SecAgg+: the trap for one hospital, model inconsistency for the rest.

Under SecAgg+ the server sees only the sum of the hospitals' deltas, so a trap planted in
one hospital's model is washed out by the others' training. This poisoner combines
:mod:`fl_mia.attacker.poisoning.trap_weights` with :mod:`fl_mia.attacker.poisoning.model_inconsistency`:
in a trapped round

- the hospital whose turn it is (``threat.target_hospitals``, one per round, in turn)
  receives the trapped model: the global model with the constant feature and one detector
  per candidate (``TrapWeightsPoisoner``);
- every other hospital receives the global model with its update silenced
  (``silenced_weights``: the decoder's last norm layer outputs zeros, so nothing but the
  head bias moves).

The securely aggregated delta is then the trapped hospital's delta alone (up to the head
bias and SecAgg+'s rounding), the strategy reconstructs that hospital's returned model from
it (:meth:`strategies.malicious.PoisoningFedAvg.visible_weights`,
``reconstruct_target_update``) and the trap's trace is scored on the reconstruction, as
without SecAgg+. A detector that never fired has a delta of exactly 0 in every hospital,
which SecAgg+ quantises to an exact integer (zero maps to ``quantization_range / 2``), so
its reconstructed trace is 0; one that fired moved by about ``training.lr`` per Adam step,
far above one quantisation step (``2·clipping_range / quantization_range``, scaled by
``max_weight / n``; the preflight refuses a range too coarse for that).

**The global model in a trapped round.** The server keeps its previous global model: the
round's secure sum is discarded (``discards_secure_sum``, with ``threat.compensate``). The
sum holds one hospital's step computed on a different network (the trapped stem) plus the
silenced hospitals' head-bias drift towards "background", and nothing else: adding it would
only damage the model, and a discarded round costs nothing but time. The shipped configs
(``configs/threats/secagg_trap_weights.toml``) therefore run the trap rounds *after* the
training rounds: rounds 1..R train honestly under SecAgg+, the trap rounds that follow keep
round R's model, so the released model is the honest run's final model and the trap reads
hospitals training on the model they would have finished with. Interleaved trap rounds
work too, but each one is a training round lost.

What it does not survive: the consistency check (``defences.consistency``) sees that the
hospitals received different models and withholds the shares, so the round's sum is never
opened and no trace exists; DP-SGD's noise moves every detector.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.poisoning.model_inconsistency import silenced_weights, silencing_keys
from fl_mia.attacker.poisoning.settings import TrapInconsistencySettings
from fl_mia.attacker.poisoning.trap_weights import TrapWeightsPoisoner

GLOBAL_MODEL_POLICY = (
    "the server keeps its previous global model in every trapped round (the round's secure sum holds only the "
    "trapped hospital's step on the trapped network and the silenced hospitals' head-bias drift); run the trap "
    "rounds after the training rounds and the released model is the honest final model"
)


def reconstruction_step(*, clipping_range: float, quantization_range: int) -> float:
    """One SecAgg+ quantisation step of a hospital's (unscaled) delta."""
    return 2.0 * clipping_range / quantization_range


class TrapInconsistencyPoisoner(TrapWeightsPoisoner):
    """Trap weights for the hospital whose turn it is, silenced models for every other hospital."""

    name = "trap_inconsistency"
    silences_updates = True
    needs_secagg = True
    discards_secure_sum = True

    def __init__(
        self, knowledge: AttackerKnowledge, model: nn.Module, *, targets: list[int], detectors_per_round: int, fit_steps: int
    ) -> None:
        # One trapped hospital per round: an aggregate isolates one unsilenced update, no more.
        super().__init__(
            knowledge, model, targets=targets, detectors_per_round=detectors_per_round, fit_steps=fit_steps, in_turn=True
        )
        silencing_keys(model)  # fail at set-up, not in the first trapped round
        self.silenced_pairs: set[tuple[int, int]] = set()

    @classmethod
    def from_settings(
        cls, settings: TrapInconsistencySettings, knowledge: AttackerKnowledge, model: nn.Module, *, targets: list[int]
    ) -> "TrapInconsistencyPoisoner":
        return cls(
            knowledge, model, targets=targets, detectors_per_round=settings.detectors_per_round,
            fit_steps=settings.fit_steps,
        )

    def describe(self) -> str:
        weight_key, bias_key = silencing_keys(self.model)
        return (
            super().describe().replace("; the trapped reply is left out of the aggregate", "")
            + f"; every other hospital of a trapped round receives the model with {weight_key} = 0 and {bias_key} = −1, "
            "which silences its update, so the (secure) aggregate is the trapped hospital's update alone and the "
            "server reconstructs its returned model from it; " + GLOBAL_MODEL_POLICY
        )

    def poisoned_hospitals(self, num_hospitals: int) -> set[int]:
        return set(range(num_hospitals))  # each is either trapped or silenced in a trapped round

    def is_silenced(self, *, server_round: int, hospital: int) -> bool:
        return hospital not in self.trapped_in(server_round)

    def poison(self, *, server_round: int, hospital: int, global_weights: list[np.ndarray]) -> list[np.ndarray] | None:
        if hospital in self.trapped_in(server_round):
            return super().poison(server_round=server_round, hospital=hospital, global_weights=global_weights)
        self.silenced_pairs.add((server_round, hospital))
        return silenced_weights(self.model, global_weights)

    def poisoned_pairs(self) -> set[tuple[int, int]]:
        return self.trapped_pairs | self.silenced_pairs

    def report(self) -> dict:
        report = super().report()
        report["trap"].update(
            {
                "silenced_replies": len(self.silenced_pairs),
                "trapped_rounds": sorted({r for r, _ in self.trapped_pairs}),
                "global_model_in_trapped_rounds": GLOBAL_MODEL_POLICY,
            }
        )
        return report

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["silenced_pairs"] = np.asarray(sorted(self.silenced_pairs), dtype=np.int64).reshape(-1, 2)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.silenced_pairs = {(int(r), int(h)) for r, h in np.asarray(state.get("silenced_pairs", np.zeros((0, 2))))}
