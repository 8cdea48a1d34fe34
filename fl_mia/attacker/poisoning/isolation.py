"""Isolation (Nasr, Shokri, Houmansadr, S&P 2019): a hospital gets back its own last model.

Instead of the aggregate, each target hospital receives the weights it returned last
round, so over the isolated rounds its model trains only on its own data and overfits it.
"""

from __future__ import annotations

import numpy as np

from fl_mia.attacker.poisoning.base import Poisoner


class IsolationPoisoner(Poisoner):
    name = "isolation"
    matched_signals = ("update.returned_loss", "update.returned_loss.accumulated")

    def __init__(self, *, targets: list[int]) -> None:
        self.targets = set(targets)
        self._last_returned: dict[int, list[np.ndarray]] = {}

    @classmethod
    def from_settings(cls, settings: None, knowledge: object, model: object, *, targets: list[int]) -> "IsolationPoisoner":
        """It has no knobs, and needs neither what the attacker knows nor a model."""
        return cls(targets=targets)

    def describe(self) -> str:
        return f"sends hospitals {sorted(self.targets)} the model each returned last round instead of the aggregate"

    def poison(self, *, server_round: int, hospital: int, global_weights: list[np.ndarray]) -> list[np.ndarray] | None:
        if hospital not in self.targets or hospital not in self._last_returned:
            return None  # the first round has nothing of its own to send back
        return [w.copy() for w in self._last_returned[hospital]]

    def observe_reply(self, *, server_round: int, hospital: int, returned: list[np.ndarray]) -> None:
        if hospital in self.targets:
            self._last_returned[hospital] = [w.copy() for w in returned]

    def state_dict(self) -> dict:
        return {
            f"last:{hospital}:{i:05d}": array
            for hospital, weights in self._last_returned.items()
            for i, array in enumerate(weights)
        }

    def load_state_dict(self, state: dict) -> None:
        restored: dict[int, dict[int, np.ndarray]] = {}
        for key, array in state.items():
            _, hospital, index = key.split(":")
            restored.setdefault(int(hospital), {})[int(index)] = np.asarray(array)
        self._last_returned = {h: [arrays[i] for i in sorted(arrays)] for h, arrays in restored.items()}
