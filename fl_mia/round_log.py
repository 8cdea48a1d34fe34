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
    # Added by the reliability work (appended, so earlier columns keep their positions):
    "status",  # hospital rows: trained | crashed | timed_out | not_sampled (round 0: initial)
    "failed",  # hospital rows: 1 if sampled but no update arrived; "all" rows: how many
]

# What a hospital's row says about a round it was sampled in (see server/round_timeout.py).
TRAINED, CRASHED, TIMED_OUT, NOT_SAMPLED = "trained", "crashed", "timed_out", "not_sampled"

# Wall-clock figures vary run to run; they go to timings.csv so rounds.csv stays reproducible.
TIMING_COLUMNS = ["round", "hospital", "fit_seconds"]


@dataclass
class RoundProgress:
    round: int
    total_rounds: int
    replies: int
    failures: int
    overall: dict[str, float]


def round_line(progress: RoundProgress) -> str:
    """The one line a round ends with on the console: ``fl-mia run``, ``flwr run`` and ``fl-mia deploy`` alike."""
    overall = progress.overall
    if progress.round == 0:
        return f"round 0/{progress.total_rounds} · untrained model · Dice {overall['dice']:.3f}"
    return (
        f"round {progress.round}/{progress.total_rounds} · hospitals {progress.replies} replied"
        + (f", {progress.failures} failed" if progress.failures else "")
        + f" · Dice {overall['dice']:.3f} · IoU {overall['iou']:.3f} · test loss {overall['loss']:.3f}"
    )


@dataclass
class RoundLog:
    """Collects fit replies and global-model evaluations, keyed by (round, hospital)."""

    num_hospitals: int
    total_rounds: int
    on_round_end: Callable[[RoundProgress], None] | None = None
    _fit: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    _evaluations: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    _failures: dict[int, int] = field(default_factory=dict)
    _outcomes: dict[int, dict[int, str]] = field(default_factory=dict)

    # RoundObserver protocol (fl_mia.contracts)
    def on_fit_replies(self, server_round: int, replies: list, failures: int) -> None:
        for reply in replies:
            self._fit[(server_round, reply.hospital)] = {"num_examples": reply.num_examples, **reply.metrics}
        self._failures[server_round] = failures

    def on_fit_outcomes(self, server_round: int, outcomes: dict[int, str]) -> None:
        """Per hospital sent a training message: trained, crashed or timed_out (from the Grid)."""
        merged = self._outcomes.setdefault(server_round, {})
        for hospital, status in outcomes.items():
            # Several sends per round (SecAgg+ stages): a failure in any stage sticks.
            if merged.get(hospital, TRAINED) == TRAINED:
                merged[hospital] = status

    def on_evaluation(self, server_round: int, evaluation: dict[str, dict[str, float]]) -> None:
        self._evaluations[server_round] = evaluation
        if self.on_round_end is not None:
            replies = sum(1 for (r, _) in self._fit if r == server_round)
            failures = max(self._failures.get(server_round, 0), len(self.failed_hospitals(server_round)))
            self.on_round_end(RoundProgress(server_round, self.total_rounds, replies, failures, evaluation["overall"]))

    # --- what the server did and did not observe (attacks must skip the unobserved) ----------

    def status(self, server_round: int, hospital: int) -> str:
        if (server_round, hospital) in self._fit:
            return TRAINED
        return self._outcomes.get(server_round, {}).get(hospital, NOT_SAMPLED)

    def failed_hospitals(self, server_round: int) -> dict[int, str]:
        """Hospitals sampled in ``server_round`` whose update never arrived, with why."""
        return {
            h: status
            for h, status in sorted(self._outcomes.get(server_round, {}).items())
            if status != TRAINED and (server_round, h) not in self._fit
        }

    def failure_summary(self) -> dict[str, Any]:
        events = [
            {"round": r, "hospital": h, "status": status}
            for r in sorted(self._outcomes)
            for h, status in self.failed_hospitals(r).items()
        ]
        return {
            "crashed": sum(e["status"] == CRASHED for e in events),
            "timed_out": sum(e["status"] == TIMED_OUT for e in events),
            # withheld SecAgg+ shares because the hospitals received different models
            "refused": sum(e["status"] == "refused" for e in events),
            "events": events,
        }

    # --- checkpoint (fl_mia.checkpoint.Stateful) -------------------------------------------------

    def latest_fit_metric(self, name: str) -> dict[int, Any]:
        """Each hospital's most recent value of a fit metric (e.g. its DP-SGD step count)."""
        latest: dict[int, Any] = {}
        for (_, hospital), fit in sorted(self._fit.items()):
            if name in fit:
                latest[hospital] = fit[name]
        return latest

    def state_dict(self) -> dict[str, Any]:
        return {
            "fit": [[r, h, fit] for (r, h), fit in sorted(self._fit.items())],
            "evaluations": [[r, e] for r, e in sorted(self._evaluations.items())],
            "failures": [[r, n] for r, n in sorted(self._failures.items())],
            "outcomes": [[r, h, s] for r, o in sorted(self._outcomes.items()) for h, s in sorted(o.items())],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._fit = {(int(r), int(h)): dict(fit) for r, h, fit in state["fit"]}
        self._evaluations = {int(r): e for r, e in state["evaluations"]}
        self._failures = {int(r): int(n) for r, n in state["failures"]}
        self._outcomes = {}
        for r, h, status in state["outcomes"]:
            self._outcomes.setdefault(int(r), {})[int(h)] = status

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
                        "status": self.status(server_round, hospital) if server_round > 0 else "initial",
                        "failed": int(hospital in self.failed_hospitals(server_round)),
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
                    "failed": len(self.failed_hospitals(server_round)),
                    "num_examples": sum(f["num_examples"] for f in fits) if fits else None,
                    "train_loss": _weighted_train_loss(fits),
                    "test_loss": overall["loss"],
                    **{key: overall[key] for key in ("dice", "iou", "dice_pooled", "dice_lesion_images")},
                }
            )
        return rows


def _weighted_train_loss(fits: list[dict]) -> float | None:
    """Mean training loss weighted by examples, over the hospitals that reported one (not under DP-SGD)."""
    reported = [f for f in fits if "train_loss" in f]
    if not reported:
        return None
    return sum(f["train_loss"] * f["num_examples"] for f in reported) / sum(f["num_examples"] for f in reported)
