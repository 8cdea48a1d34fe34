"""Per-round, per-hospital record of a federated run (what becomes ``rounds.csv``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROUND_COLUMNS = [
    "round",
    "hospital",
    "participated",
    "num_examples",
    "train_loss",
    "first_batch_loss",
    "steps",
    "test_loss",
    "dice",
    "iou",
    "dice_pooled",
    "dice_lesion_images",
]

# Wall-clock figures vary run to run; they go to timings.csv so rounds.csv stays reproducible.
TIMING_COLUMNS = ["round", "hospital", "fit_seconds"]


@dataclass
class RoundProgress:
    round: int
    total_rounds: int
    replies: int
    failures: int
    overall: dict[str, float]


@dataclass
class RoundLog:
    """Collects fit replies and global-model evaluations, keyed by (round, hospital)."""

    num_hospitals: int
    total_rounds: int
    on_round_end: Callable[[RoundProgress], None] | None = None
    _fit: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    _evaluations: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    _failures: dict[int, int] = field(default_factory=dict)

    # RoundObserver protocol (strategies.honest)
    def on_fit_replies(self, server_round: int, replies: list, failures: int) -> None:
        for reply in replies:
            self._fit[(server_round, reply.hospital)] = {"num_examples": reply.num_examples, **reply.metrics}
        self._failures[server_round] = failures

    def on_evaluation(self, server_round: int, evaluation: dict[str, dict[str, float]]) -> None:
        self._evaluations[server_round] = evaluation
        if self.on_round_end is not None:
            replies = sum(1 for (r, _) in self._fit if r == server_round)
            self.on_round_end(
                RoundProgress(server_round, self.total_rounds, replies, self._failures.get(server_round, 0), evaluation["overall"])
            )

    def evaluation(self, server_round: int) -> dict[str, dict[str, float]] | None:
        return self._evaluations.get(server_round)

    @property
    def last_round(self) -> int:
        return max(self._evaluations, default=0)

    def timing_rows(self) -> list[dict[str, Any]]:
        return [
            {"round": r, "hospital": h, "fit_seconds": fit.get("fit_seconds")} for (r, h), fit in sorted(self._fit.items())
        ]

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for server_round in sorted(self._evaluations):
            evaluation = self._evaluations[server_round]
            for hospital in range(self.num_hospitals):
                fit = self._fit.get((server_round, hospital))
                scores = evaluation[f"hospital_{hospital}"]
                rows.append(
                    {
                        "round": server_round,
                        "hospital": hospital,
                        "participated": int(fit is not None),
                        **(fit or {}),
                        "test_loss": scores["loss"],
                        **{key: scores[key] for key in ("dice", "iou", "dice_pooled", "dice_lesion_images")},
                    }
                )
            overall = evaluation["overall"]
            fits = [self._fit[key] for key in self._fit if key[0] == server_round]
            rows.append(
                {
                    "round": server_round,
                    "hospital": "all",
                    "participated": len(fits),
                    "num_examples": sum(f["num_examples"] for f in fits) if fits else None,
                    "train_loss": (
                        sum(f["train_loss"] * f["num_examples"] for f in fits) / sum(f["num_examples"] for f in fits)
                        if fits
                        else None
                    ),
                    "test_loss": overall["loss"],
                    **{key: overall[key] for key in ("dice", "iou", "dice_pooled", "dice_lesion_images")},
                }
            )
        return rows
