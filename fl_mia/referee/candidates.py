"""The attacker's candidate records and, kept apart, the ground truth of their membership.

For every hospital, members are drawn from its training shard and as many non-members from
its held-out pool (same scanner, never trained on). Both pools are split by patient already,
so no patient is on both sides. Candidates are shuffled into one seeded order: their position
says nothing about membership.

Pools drawn at random can differ in what their masks show (one hospital's held-out patients
may have more lesions than its training patients), and a mask-only "attack" would then beat
chance without any model. With ``referee.match_lesion_area`` both sides get the same number
of scans from each lesion-area stratum (none, then quantiles of the lesion area).

The referee's side: the attacker receives the :class:`~fl_mia.attacker.knowledge.CandidateSet`
(images, masks, ids, the hospital a candidate was drawn for); :class:`MembershipLedger` is
the truth, and only the judging step (:mod:`fl_mia.referee.evaluation`) reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fl_mia.config import RefereeConfig
from fl_mia.data import HospitalData, Split
from fl_mia.data.phantom import LESION
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.seeding import rng_for

CANDIDATE_COLUMNS = ["candidate", "hospital", "patient", "image"]


PATIENT_COLUMNS = ["hospital", "patient", "member", "slices"]


def with_patient_names(rows: list[dict], patient_names: list[str] | None) -> list[dict]:
    """Rows whose ``patient`` is the dataset's own id (``p14``, ``case_023``) rather than its index.

    A user checks a run against the dataset's manifest by these ids; ``None`` (the phantom,
    whose patients are numbered) leaves the rows as they are.
    """
    if patient_names is None:
        return rows
    return [{**row, "patient": patient_names[int(row["patient"])]} for row in rows]


@dataclass(frozen=True)
class PatientMembership:
    """Membership at the patient level, and which patient each candidate slice belongs to.

    A patient's score is the mean of its candidate slices' scores: every slice is one
    look at the same person, the mean uses them all, and it keeps the scale (and so an
    attack's own decision threshold) of the slice scores.
    """

    row_of_candidate: np.ndarray  # [N] patient row of each candidate
    hospital: np.ndarray  # [P]
    patient: np.ndarray  # [P]
    is_member: np.ndarray  # [P]
    slices: np.ndarray  # [P] candidate slices per patient

    def __len__(self) -> int:
        return len(self.patient)

    def aggregate(self, scores: np.ndarray) -> np.ndarray:
        """Mean slice score of each patient, ``[P]``."""
        totals = np.bincount(self.row_of_candidate, weights=np.asarray(scores, dtype=np.float64), minlength=len(self))
        return totals / self.slices

    def table_rows(self) -> list[dict[str, int]]:
        return [
            {"hospital": int(h), "patient": int(p), "member": int(m), "slices": int(n)}
            for h, p, m, n in zip(self.hospital, self.patient, self.is_member, self.slices)
        ]


class MembershipLedger:
    """Ground truth: ``keep[i, k]`` is True when candidate ``i`` is in hospital ``k``'s training shard.

    Saved as ``keep.npy`` (LiRA's convention). Attack code never receives this object.
    """

    def __init__(self, keep: np.ndarray, drawn_for: np.ndarray) -> None:
        keep = np.asarray(keep, dtype=bool)
        drawn_for = np.asarray(drawn_for, dtype=np.int64)
        if keep.ndim != 2 or len(keep) != len(drawn_for):
            raise ValueError(f"keep must be [candidates, hospitals]; got {keep.shape} for {len(drawn_for)} candidates")
        self._keep = keep
        self._drawn_for = drawn_for

    @property
    def keep(self) -> np.ndarray:
        return self._keep.copy()

    def is_member(self, hospitals: np.ndarray | None = None) -> np.ndarray:
        """Membership of each candidate in the hospital it was drawn for (or in ``hospitals[i]``)."""
        hospitals = self._drawn_for if hospitals is None else np.asarray(hospitals)
        return self._keep[np.arange(len(self._keep)), hospitals]

    def patient_level(self, candidates: CandidateSet) -> PatientMembership:
        """The ledger at the patient level: a patient is a member when its candidate slices are.

        A patient is keyed by (hospital drawn for, patient id). Candidates are drawn from
        patient-wise splits, so one patient's slices never disagree; if they did, the
        patient level would be meaningless, and this says so.
        """
        is_member = self.is_member()
        keys = np.stack([candidates.hospital, candidates.patient_ids], axis=1)
        unique, row_of_candidate = np.unique(keys, axis=0, return_inverse=True)
        row_of_candidate = row_of_candidate.reshape(-1)
        members = np.bincount(row_of_candidate, weights=is_member, minlength=len(unique))
        slices = np.bincount(row_of_candidate, minlength=len(unique))
        mixed = (members > 0) & (members < slices)
        if mixed.any():
            hospital, patient = unique[np.flatnonzero(mixed)[0]]
            raise ValueError(f"patient {patient} of hospital {hospital} has both member and non-member candidates")
        return PatientMembership(
            row_of_candidate=row_of_candidate,
            hospital=unique[:, 0],
            patient=unique[:, 1],
            is_member=members > 0,
            slices=slices,
        )

    def __repr__(self) -> str:  # never print the truth by accident into a log an attack might read
        return f"MembershipLedger({self._keep.shape[0]} candidates × {self._keep.shape[1]} hospitals)"


def _draw_by_patient(split: Split, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``count`` images, taking whole patients in random order (the last one may be cut)."""
    patients = rng.permutation(np.unique(split.patient_ids))
    chosen: list[int] = []
    for patient in patients:
        chosen.extend(np.flatnonzero(split.patient_ids == patient).tolist())
        if len(chosen) >= count:
            break
    return np.sort(np.asarray(chosen[:count], dtype=np.int64))


LESION_AREA_STRATA = 3  # lesion-bearing strata (quantiles of the area) beside "no lesion"


def lesion_area(masks: np.ndarray, task: str) -> np.ndarray:
    """Share of each scan's pixels that are lesion, ``[N]``."""
    lesion_class = 1 if task == "lesion" else LESION  # the binary task's foreground is the lesion
    return (masks.reshape(len(masks), -1) == lesion_class).mean(axis=1)


def lesion_strata(areas: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """0 for lesion-free scans, then 1.. by which area quantile the lesion falls in."""
    return np.where(areas > 0, 1 + np.searchsorted(edges, areas, side="right"), 0)


def _matched_quotas(member_strata: np.ndarray, non_member_strata: np.ndarray, count: int) -> np.ndarray:
    """Scans per stratum for both sides: the pooled mix, capped by what both pools hold."""
    strata = LESION_AREA_STRATA + 1
    available = np.minimum(np.bincount(member_strata, minlength=strata), np.bincount(non_member_strata, minlength=strata))
    pooled = np.bincount(np.concatenate([member_strata, non_member_strata]), minlength=strata)
    quotas = np.minimum(available, np.floor(count * pooled / max(pooled.sum(), 1)).astype(int))
    while quotas.sum() < count and (quotas < available).any():
        spare = np.flatnonzero(quotas < available)
        quotas[spare[np.argmax((available - quotas)[spare])]] += 1  # fill from the stratum with most to spare
    return quotas


def _draw_matched(split: Split, strata: np.ndarray, quotas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patients in random order; a scan is taken while its stratum's quota is open."""
    remaining = quotas.copy()
    chosen: list[int] = []
    for patient in rng.permutation(np.unique(split.patient_ids)):
        for index in np.flatnonzero(split.patient_ids == patient):
            if remaining[strata[index]] > 0:
                remaining[strata[index]] -= 1
                chosen.append(int(index))
        if not remaining.any():
            break
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _draw_members_and_non_members(
    train: Split, heldout: Split, count: int, rng: np.random.Generator, *, match_lesion_area: bool, task: str
) -> tuple[np.ndarray, np.ndarray]:
    if not match_lesion_area:
        return _draw_by_patient(train, count, rng), _draw_by_patient(heldout, count, rng)
    train_area, heldout_area = lesion_area(train.masks, task), lesion_area(heldout.masks, task)
    lesions = np.concatenate([train_area, heldout_area])
    lesions = lesions[lesions > 0]
    edges = np.quantile(lesions, np.linspace(0, 1, LESION_AREA_STRATA + 1)[1:-1]) if len(lesions) else np.zeros(0)
    train_strata, heldout_strata = lesion_strata(train_area, edges), lesion_strata(heldout_area, edges)
    quotas = _matched_quotas(train_strata, heldout_strata, count)
    return _draw_matched(train, train_strata, quotas, rng), _draw_matched(heldout, heldout_strata, quotas, rng)


# Hospital k's data (its training and held-out splits), rendered or read on demand.
HospitalSource = Callable[[int], HospitalData]


def _candidate_count(settings: RefereeConfig, hospital: HospitalData) -> int:
    available = min(len(hospital.train), len(hospital.heldout))
    return min(settings.candidates_per_hospital or available, available)


def candidates_per_hospital(settings: RefereeConfig, *, hospital: HospitalSource, num_hospitals: int) -> list[int]:
    """Members drawn per hospital (equal to its non-members): the config's size, capped by both pools."""
    return [_candidate_count(settings, hospital(k)) for k in range(num_hospitals)]


def build_candidates(
    settings: RefereeConfig, *, hospital: HospitalSource, num_hospitals: int, seed: int, task: str
) -> tuple[CandidateSet, MembershipLedger]:
    """The candidate set and its ledger, a pure function of the hospitals' data, the settings and the seed."""
    k_hospitals = num_hospitals
    parts: list[tuple[Split, int, bool]] = []
    for k in range(k_hospitals):
        # One rendering per hospital: with many hospitals, a second pass would miss the cache.
        data = hospital(k)
        count = _candidate_count(settings, data)
        rng = rng_for(seed, "candidates", k)
        member_index, non_member_index = _draw_members_and_non_members(
            data.train, data.heldout, count, rng, match_lesion_area=settings.match_lesion_area, task=task
        )
        members, non_members = data.train.subset(member_index), data.heldout.subset(non_member_index)
        parts += [(members, k, True), (non_members, k, False)]
    pooled = Split.concatenate([split for split, _, _ in parts])
    drawn_for = np.concatenate([np.full(len(split), k, np.int64) for split, k, _ in parts])
    keep = np.zeros((len(pooled), k_hospitals), dtype=bool)
    keep[np.arange(len(pooled)), drawn_for] = np.concatenate([np.full(len(split), member) for split, _, member in parts])
    # One seeded shuffle: an attack must not read membership off a candidate's position.
    order = rng_for(seed, "candidate-order").permutation(len(pooled))
    candidates = CandidateSet(
        images=pooled.images[order],
        masks=pooled.masks[order],
        hospital=drawn_for[order],
        patient_ids=pooled.patient_ids[order],
        image_ids=pooled.image_ids[order],
    )
    return candidates, MembershipLedger(keep[order], drawn_for[order])
