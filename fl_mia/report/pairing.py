"""Matched pairs: each suite cell against its own baseline, on the same seeds and the same candidates.

A cell's baseline is the cell its suite file names (``baseline = "secagg"``), else every axis
at its first value (``suite.json`` records it per cell). A paired difference is computed only
within such a pair, seed by seed on identical candidates, pooled over the seeds both have,
and on the *headline* candidates: the threat's targeted hospitals where either run sent
hospitals different models, every hospital otherwise (:mod:`fl_mia.referee.scopes`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl_mia.referee.scopes import headline, headline_scope
from fl_mia.referee.statistics import paired_difference
from fl_mia.seeding import seed_sequence


@dataclass(frozen=True)
class Candidates:
    """What the report reads of a run's candidates: membership, a patient key and the hospital drawn for."""

    is_member: np.ndarray
    patient: np.ndarray
    hospital: np.ndarray


def candidate_truth(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Membership (from keep.npy and candidates.csv) and a patient key per candidate."""
    keep = np.load(run_dir / "keep.npy")
    with open(run_dir / "candidates.csv") as handle:
        rows = list(csv.DictReader(handle))
    hospital = np.array([int(r["hospital"]) for r in rows])
    names = [r["patient"] for r in rows]
    try:
        patient = np.array([int(name) for name in names])
    except ValueError:  # a dataset's own ids (case_023): numbered in sorted order, only a key here
        patient = np.unique(names, return_inverse=True)[1].reshape(-1)
    return keep[np.arange(len(keep)), hospital], hospital * 1_000_003 + patient


def read_candidates(run_dir: Path) -> Candidates:
    is_member, patient = candidate_truth(run_dir)
    return Candidates(is_member, patient, patient // 1_000_003)


@dataclass(frozen=True)
class RoundsSum:
    """An update signal summed over some rounds only, as ``update.<signal>.accumulated`` sums every round."""

    signal: str  # update.<signal>: the run's scores.npz holds update.<signal>.round<N>
    rounds: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.signal} ({'round' if len(self.rounds) == 1 else 'rounds'} {', '.join(map(str, self.rounds))})"


def read_scores(archive, attack: str | RoundsSum) -> np.ndarray | None:
    """One score per candidate from a run's ``scores.npz``: a scored attack, or a signal's round sum."""
    if isinstance(attack, str):
        return archive[attack] if attack in archive.files else None
    keys = [f"{attack.signal}.round{r}" for r in attack.rounds]
    if not all(key in archive.files for key in keys):
        return None
    return np.sum([archive[key] for key in keys], axis=0)


def scores_on(run, attack: str | RoundsSum, hospitals: list[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A run's scores, membership and patient keys on ``hospitals``' candidates (None: all);
    None where the run has no scores for ``attack``, or no headline figure for a scored attack."""
    path = run.run_dir / "scores.npz"
    if not path.is_file():
        return None
    if isinstance(attack, str) and headline((run.metrics.get("privacy") or {}).get(attack)) is None:
        return None
    with np.load(path) as archive:
        scores = read_scores(archive, attack)
    if scores is None:
        return None
    candidates = read_candidates(run.run_dir)
    chosen = np.isin(candidates.hospital, hospitals) if hospitals is not None else np.ones(len(scores), bool)
    return scores[chosen], candidates.is_member[chosen], candidates.patient[chosen]


def run_targets(metrics: dict[str, Any]) -> list[int]:
    """The hospitals a run's threat targets (its declaration; ``threat.target_hospitals``; else hospital 0)."""
    privacy = metrics.get("privacy") or {}
    threat = metrics.get("threat") or {}
    declared = (threat.get("declaration") or {}).get("targets")
    return list(declared or (privacy.get("candidate_set") or {}).get("targets") or threat.get("target_hospitals") or [0])


def models_differed(metrics: dict[str, Any]) -> bool:
    """Whether the run's referee scored it on its targeted hospitals (hospitals were sent different models)."""
    privacy = metrics.get("privacy") or {}
    uniform = (privacy.get("candidate_set") or {}).get("uniform_models")
    if uniform is not None:
        return not uniform
    return any(isinstance(r, dict) and headline_scope(r) == "targeted" for r in privacy.values())


def pair_scope(mine, theirs) -> tuple[str, list[int] | None]:
    """``("targeted", hospitals)`` where either run sent hospitals different models; else ``("overall", None)``."""
    if models_differed(mine.metrics) or models_differed(theirs.metrics):
        return "targeted", run_targets(mine.metrics)
    return "overall", None


def seed_pairs(group, baseline) -> list[tuple[Any, Any]]:
    """Each run of ``group`` with the baseline's run of the same seed, by seed; none for the baseline itself."""
    if baseline is None or group is baseline:
        return []
    theirs = {r.seed: r for r in baseline.runs}
    return sorted(((r, theirs[r.seed]) for r in group.runs if r.seed in theirs), key=lambda pair: pair[0].seed)


def paired_scores(pairs, attack_a: str, attack_b: str | RoundsSum, *, hospitals: list[int] | None, stream) -> dict[str, Any] | None:
    """``attack_a`` on each pair's first run minus ``attack_b`` on its second, pooled over the pairs.

    ``hospitals``: only their candidates (``None``: all). None when a pair's runs were judged
    on different candidates or lack a score.
    """
    a, b, members, units = [], [], [], []
    for mine, theirs in pairs:
        truth = read_candidates(mine.run_dir)
        if theirs is not mine:
            other = read_candidates(theirs.run_dir)
            if not (np.array_equal(truth.is_member, other.is_member) and np.array_equal(truth.patient, other.patient)):
                return None  # different candidates: no paired comparison
        chosen = np.ones(len(truth.is_member), bool) if hospitals is None else np.isin(truth.hospital, hospitals)
        with np.load(mine.run_dir / "scores.npz") as x, np.load(theirs.run_dir / "scores.npz") as y:
            mine_scores, their_scores = read_scores(x, attack_a), read_scores(y, attack_b)
            if mine_scores is None or their_scores is None:
                return None
            a.append(mine_scores[chosen])
            b.append(their_scores[chosen])
        members.append(truth.is_member[chosen])
        units.append(np.array([f"{mine.seed}:{p}" for p in truth.patient[chosen]]))
    if not pairs:
        return None
    is_member = np.concatenate(members)
    result = paired_difference(np.concatenate(a), np.concatenate(b), is_member, groups=np.concatenate(units), seed=stream)
    result["seeds"] = [mine.seed for mine, _ in pairs]
    result["members"], result["non_members"] = int(is_member.sum()), int((~is_member).sum())
    low, high = result["auc"]["ci"]
    result["auc"]["half_width"] = (high - low) / 2
    return result


def paired_against(group, baseline, attack: str, *, seed: int = 0) -> dict[str, Any] | None:
    """Group minus its baseline on the same candidates (the headline ones), pooled over the seeds both have."""
    pairs = seed_pairs(group, baseline)
    if not pairs:
        return None
    scope, hospitals = pair_scope(*pairs[0])
    result = paired_scores(pairs, attack, attack, hospitals=hospitals, stream=seed_sequence(seed, "report-paired", attack))
    if result is not None:
        result["scope"], result["hospitals"] = scope, hospitals
    return result


def _headline_auc(runs, attack: str | RoundsSum, hospitals: list[int] | None) -> float | None:
    """``attack``'s AUC on these runs' candidates (of ``hospitals``), seeds pooled."""
    from sklearn.metrics import roc_auc_score

    found = [scores_on(run, attack, hospitals) for run in runs]
    if any(part is None for part in found):
        return None
    score, member = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
    if not np.isfinite(score).all() or member.all() or not member.any():
        return None
    return float(roc_auc_score(member, score))


def paired_against_strongest(group, baseline, attack: str, baseline_attacks: list[str], *, seed: int = 0) -> dict[str, Any] | None:
    """``attack`` on the group minus the baseline's strongest attack, on the same headline candidates.

    What a dishonest server gains over an honest one is its own signal against the best the honest
    server has, not the same signal on both (an active attack's signal does not exist without it).
    The baseline's strongest is chosen on these very candidates and seeds, which favours the
    baseline: a threat that beats it beats every attack the honest server ran.
    """
    pairs = seed_pairs(group, baseline)
    if not pairs:
        return None
    scope, hospitals = pair_scope(*pairs[0])
    theirs = [other for _, other in pairs]
    aucs = {name: _headline_auc(theirs, name, hospitals) for name in baseline_attacks}
    ranked = sorted(((auc, name) for name, auc in aucs.items() if auc is not None), reverse=True)
    if not ranked:
        return None
    baseline_auc, strongest = ranked[0]
    result = paired_scores(pairs, attack, strongest, hospitals=hospitals, stream=seed_sequence(seed, "report-vs-strongest", attack, strongest))
    if result is not None:
        result.update(scope=scope, hospitals=hospitals, attack=attack, baseline_attack=strongest, baseline_auc=baseline_auc)
    return result


def paired_in_attack_rounds(group, baseline, attack: str, baseline_attacks: list[str], rounds: list[int], *, seed: int = 0) -> dict[str, Any] | None:
    """An accumulated matched signal against the baseline's strongest update signal summed over the same rounds.

    A poisoner that attacks in some rounds only (``attack_rounds``) accumulates its signal over
    those, while the honest server accumulates over every round: this comparison asks whether the
    poisoning sharpens what the server learns in the rounds it acts, apart from how many rounds
    each observes. None when the matched signal is not accumulated, or the attack rounds are every
    round the baseline observed (then it is :func:`paired_against_strongest`).
    """
    pairs = seed_pairs(group, baseline)
    if not pairs or not rounds or not attack.endswith(".accumulated"):
        return None
    with np.load(pairs[0][1].run_dir / "scores.npz") as archive:
        observed = {int(key.rsplit(".round", 1)[1]) for key in archive.files if ".round" in key and key.startswith("update.")}
    if observed <= set(rounds):
        return None
    scope, hospitals = pair_scope(*pairs[0])
    theirs = [other for _, other in pairs]
    sums = [RoundsSum(name.removesuffix(".accumulated"), tuple(rounds)) for name in baseline_attacks if name.startswith("update.") and name.endswith(".accumulated")]
    ranked = sorted(((auc, s.name, s) for s in sums if (auc := _headline_auc(theirs, s, hospitals)) is not None), reverse=True)
    if not ranked:
        return None
    baseline_auc, _, strongest = ranked[0]
    result = paired_scores(pairs, attack, strongest, hospitals=hospitals, stream=seed_sequence(seed, "report-attack-rounds", attack, strongest.name))
    if result is not None:
        result.update(scope=scope, hospitals=hospitals, attack=attack, baseline_attack=strongest.name, baseline_auc=baseline_auc, rounds=list(rounds))
    return result


def utility_against(group, baseline, dice_of, pooled_dice_of) -> list[dict[str, Any]]:
    """Seed by seed, the cell's Dice beside the baseline's on the same seed, and their ratio.

    A defence's utility cost is a per-seed comparison (the same data, split and initial model),
    which seed means with intervals over two seeds would blur.
    """
    rows = []
    for run, other in seed_pairs(group, baseline):
        mine_pooled, their_pooled = pooled_dice_of(run), pooled_dice_of(other)
        rows.append({
            "seed": run.seed, "dice_pooled": mine_pooled, "baseline_dice_pooled": their_pooled,
            "ratio_pooled": mine_pooled / their_pooled if mine_pooled is not None and their_pooled else None,
            "dice": dice_of(run), "baseline_dice": dice_of(other),
        })  # fmt: skip
    return rows


# Attacks that claim to beat another on the same evidence (the newer first): the report puts
# each pair side by side on the same candidates and bootstrap resamples, cell by cell.
RIVAL_ATTACKS = (
    ("rmia", "lira_offline"),
    ("rmia", "lira_online"),
    ("lira_online", "lira_offline"),
    ("lira_offline", "loss"),
    ("rmia", "loss"),
)


def rival_attacks(group, attacks: list[str], *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each pair of ``RIVAL_ATTACKS`` both run in ``group``: first minus second on the group's own headline candidates."""
    pairs = [(r, r) for r in sorted(group.runs, key=lambda r: r.seed)]
    if not pairs:
        return {}
    _, hospitals = pair_scope(*pairs[0])
    result = {}
    for first, second in RIVAL_ATTACKS:
        if first in attacks and second in attacks:
            stream = seed_sequence(seed, "report-rivals", first, second)
            difference = paired_scores(pairs, first, second, hospitals=hospitals, stream=stream)
            if difference is not None:
                result[f"{first} − {second}"] = difference
    return result
