"""What a run reports about its threat model: what the server changed, how visibly, to what effect."""

from __future__ import annotations

from typing import Any

import numpy as np

from fl_mia.config import ThreatConfig
from fl_mia.attacker.poisoning.base import Poisoner
from fl_mia.defences.detector import detection_summary


def stealth(
    rows: list[dict[str, Any]],
    *,
    poisoned: set[int],
    rounds: set[int] | None,
    pairs: set[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """First-batch training loss of poisoned vs untouched hospitals in the poisoned rounds.

    A hospital sees this loss before its first step on the model it received; a ratio near 1
    means the poisoning does not show in what hospitals routinely log. ``pairs`` (round,
    hospital), when the poisoner knows them, say exactly which replies were poisoned (a
    poisoner that takes its targets in turn poisons one hospital per round).
    """
    def is_poisoned(row) -> bool:
        if pairs is not None:
            return (int(row["round"]), int(row["hospital"])) in pairs
        return int(row["hospital"]) in poisoned

    def in_poisoned_round(row) -> bool:
        if pairs is not None:
            return int(row["round"]) in {r for r, _ in pairs}
        return rounds is None or int(row["round"]) in rounds

    losses: dict[bool, list[float]] = {True: [], False: []}
    for row in rows:
        if row["hospital"] == "all" or row.get("first_batch_loss") in (None, "") or int(row["round"]) <= 0:
            continue
        if in_poisoned_round(row):
            losses[is_poisoned(row)].append(float(row["first_batch_loss"]))
    poisoned_loss = float(np.mean(losses[True])) if losses[True] else None
    other_loss = float(np.mean(losses[False])) if losses[False] else None
    return {
        "poisoned_first_batch_loss": poisoned_loss,
        "untouched_first_batch_loss": other_loss,
        "ratio": poisoned_loss / other_loss if poisoned_loss and other_loss else None,
    }


def models_differed(poisoner: Poisoner | None, *, poison_rounds: list[int] | None, rounds_run: int, num_hospitals: int) -> str | None:
    """Why hospitals were sent different models in this run, or ``None`` when every hospital got the same one.

    The referee pools candidates of different hospitals into one ROC only when this is ``None``.
    """
    if poisoner is None:
        return None
    pairs = poisoner.poisoned_pairs()
    if pairs is not None:
        if not pairs:
            return None
        return f"the server replaced the models of hospitals {sorted({h for _, h in pairs})} in rounds {sorted({r for r, _ in pairs})}"
    poisoned = poisoner.poisoned_hospitals(num_hospitals)
    rounds = sorted(r for r in poison_rounds if 1 <= r <= rounds_run) if poison_rounds is not None else "all"
    if not poisoned or not rounds:
        return None
    return f"the server sent hospitals {sorted(poisoned)} other models than the rest (rounds: {rounds})"


def threat_report(
    threat: ThreatConfig,
    round_log,
    poisoner: Poisoner | None,
    *,
    num_hospitals: int,
    secure_aggregation: bool,
    final_weights: list[np.ndarray],
    evaluator,
) -> dict[str, Any]:
    """The ``threat`` block of metrics.json; ``secure_aggregation``: whether SecAgg+ hid each reply."""
    report: dict[str, Any] = {"threat_model": threat.threat_model, "poisoning": threat.poisoning}
    # What the hospitals' detector (defences.detector) flagged: attack rounds vs honest rounds.
    attacked = _attacked_pairs(threat, poisoner, round_log, num_hospitals) if poisoner is not None else None
    detection = detection_summary(round_log.rows(), attacked=attacked)
    if detection is not None:
        report["detection"] = detection
    if poisoner is None:
        return report
    poisoned = poisoner.poisoned_hospitals(num_hospitals)
    rounds = set(threat.poison_rounds) if threat.poison_rounds is not None else None
    report.update(
        {
            "what_the_server_changes": poisoner.describe(),
            "target_hospitals": list(threat.target_hospitals),
            "poisoned_hospitals": sorted(poisoned),
            # Targets, attack rounds, matched signals and baseline: what the referee and report read.
            "declaration": poisoner.declaration(poison_rounds=threat.poison_rounds).to_dict(),
            "poison_rounds": sorted(rounds) if rounds is not None else "all",
            # Under SecAgg+ nothing is folded back one by one; a poisoner may drop a poisoned round's sum.
            "compensated": threat.compensate and (not secure_aggregation or poisoner.discards_secure_sum),
            "stealth": stealth(round_log.rows(), poisoned=poisoned, rounds=rounds, pairs=poisoner.poisoned_pairs()),
            **poisoner.report(),
        }
    )
    images = np.concatenate([split.images for split in evaluator.tests])
    report.update(
        poisoner.effect_report(model=evaluator.model, final_weights=final_weights, test_images=images, num_classes=evaluator.classes)
    )
    return report


def _attacked_pairs(threat: ThreatConfig, poisoner: Poisoner, round_log, num_hospitals: int) -> set[tuple[int, int]]:
    """(round, hospital) pairs whose model was poisoned: the poisoner's own record, else targets × poison rounds."""
    pairs = poisoner.poisoned_pairs()
    if pairs is not None:
        return pairs
    poisoned = poisoner.poisoned_hospitals(num_hospitals)
    rounds = range(1, round_log.total_rounds + 1)
    return {(r, h) for r in rounds if threat.poisons(r) for h in poisoned}
