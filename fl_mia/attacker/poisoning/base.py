"""The interface of a poisoner (what it knows is :class:`fl_mia.attacker.knowledge.AttackerKnowledge`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn


@dataclass(frozen=True)
class ThreatDeclaration:
    """What a poisoner tells the referee and the report about itself.

    ``matched_signals`` are the privacy-section attack names its mechanism is built for,
    strongest first (the report reads the first one as the threat's answer);
    ``needs_secagg``: the threat is only meaningful against a SecAgg+ server, so its
    baseline is the honest server under SecAgg+ (``threats/secagg.toml``), not the plain one.
    """

    targets: tuple[int, ...]
    attack_rounds: tuple[int, ...] | None  # None: every round
    matched_signals: tuple[str, ...]
    needs_secagg: bool
    # "membership": scored on its matched signals; "integrity": not a membership attack
    # (a backdoor), reported by its own metric block and kept out of the MIA comparison.
    goal: str = "membership"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = list(self.targets)
        out["attack_rounds"] = list(self.attack_rounds) if self.attack_rounds is not None else "all"
        out["matched_signals"] = list(self.matched_signals)
        return out


class Poisoner(ABC):
    """Decides, per round and hospital, which weights the server sends.

    ``poison`` returns new arrays for a hospital or ``None`` to send the honest global
    model. It must never modify ``global_weights`` in place: the honest payload is shared
    by every hospital of the round.
    """

    name: str = "poisoner"
    # True when the poisoned hospitals' updates are known to be zero, so that an aggregate
    # reveals the others' updates (model inconsistency).
    silences_updates: bool = False
    # Under SecAgg+ a poisoned round's replies are one sum, nothing can be folded back one by
    # one: True makes the server keep its previous global model for that round instead
    # (with ``threat.compensate``), so the poisoned round never reaches the global model.
    discards_secure_sum: bool = False
    # The attacks this poisoner's mechanism is built for (privacy-section names, strongest first).
    matched_signals: tuple[str, ...] = ()
    # Meaningful only against SecAgg+ (e.g. it reconstructs one update from a secure sum).
    needs_secagg: bool = False
    # What it attacks: "membership" (matched signals) or "integrity" (its own metric, no MIA cell).
    goal: str = "membership"

    @abstractmethod
    def poison(self, *, server_round: int, hospital: int, global_weights: list[np.ndarray]) -> list[np.ndarray] | None:
        ...

    def is_silenced(self, *, server_round: int, hospital: int) -> bool:
        """Whether the payload this poisoner sent ``hospital`` silences its update (so an aggregate
        carries the other, unsilenced hospitals' updates alone)."""
        return self.silences_updates

    def observe_reply(self, *, server_round: int, hospital: int, returned: list[np.ndarray]) -> None:
        """Called with every hospital's returned weights (when the server can see them)."""

    def observe_size(self, *, hospital: int, num_examples: int) -> None:
        """Called with every reply's training-set size (what FedAvg weighs by; the server sees it)."""

    def fold_back(
        self, *, global_weights: list[np.ndarray], sent: list[np.ndarray], returned: list[np.ndarray]
    ) -> list[np.ndarray] | None:
        """What a poisoned hospital contributes to the aggregate when ``threat.compensate`` is on.

        By default "global model + its own update", so the poison itself stays out of the
        global model; ``None`` leaves the reply out of the aggregate altogether.
        """
        return [g + (r - s) for g, r, s in zip(global_weights, returned, sent)]

    # Poisoner-specific update signals (e.g. a trap's trace), scored beside the generic ones.
    update_signal_names: tuple[str, ...] = ()

    def update_signals(
        self, *, server_round: int, hospital: int, sent: list[np.ndarray], returned: list[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Per candidate, ``{signal: [N]}`` from one hospital's update (NaN where it says nothing)."""
        return {}

    def describe(self) -> str:
        """One sentence: exactly what the server changes."""
        return self.name

    def poisoned_hospitals(self, num_hospitals: int) -> set[int]:
        """Hospitals whose payload this poisoner replaces (in the rounds it is active)."""
        return set(getattr(self, "targets", set()))

    def declaration(self, *, poison_rounds: list[int] | None) -> ThreatDeclaration:
        """Its targets, attack rounds and matched signals (``poison_rounds``: ``threat.poison_rounds``)."""
        return ThreatDeclaration(
            targets=tuple(sorted(getattr(self, "targets", ()))),
            attack_rounds=tuple(sorted(poison_rounds)) if poison_rounds is not None else None,
            matched_signals=self.matched_signals,
            needs_secagg=self.needs_secagg,
            goal=self.goal,
        )

    def poisoned_pairs(self) -> set[tuple[int, int]] | None:
        """(round, hospital) of every payload replaced, when the poisoner keeps them; else ``None``."""
        return None

    def report(self) -> dict:
        """Poisoner-specific figures for metrics.json (e.g. the ascent actually achieved)."""
        return {}

    def effect_report(
        self, *, model: nn.Module, final_weights: list[np.ndarray], test_images: np.ndarray, num_classes: int
    ) -> dict:
        """What the poisoning did to the models, measured on the hospitals' test scans (``model``: scratch)."""
        return {}

    # Checkpoint protocol (fl_mia.checkpoint); stateless poisoners keep nothing.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
