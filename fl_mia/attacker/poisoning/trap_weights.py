"""Malicious-parameter membership detector ("trap weights") for a GroupNorm U-Net.

After Boenisch et al. (EuroS&P 2023) and Nguyen et al. (AISTATS 2023): the server plants,
per candidate, a neuron that only that candidate's scan switches on. A ReLU that stays
closed on every pixel of every scan passes no gradient, and Adam or SGD never moves a
parameter that never had a gradient, so the neuron's parameters come back *exactly*
unchanged unless the candidate was trained on. Score = how much they changed.

Exactly what the server changes in the model a targeted hospital receives:

1. **A constant feature.** The stem's first GroupNorm group (``encoder.conv1`` output
   channels 0..g−1) gets conv weights 0, norm weight 0 and norm bias +1: after the ReLU and
   max-pool those channels are 1 at every pixel of every scan.
2. **One detector per trapped candidate** in ``encoder.layer1.0.conv1``, one GroupNorm group
   each (two channels for resnet18):
   - the *detector* channel is a unit filter ``w`` over the 64×3×3 feature patch, fitted so
     that ``w · (patch − the scan's mean patch)`` peaks on the candidate's scan and stays
     lower on every other scan the server holds (its own population and the other
     candidates; slices of the candidate's own patient are not held against it);
   - the group's other channels read the constant feature with a large weight ``C``.
     GroupNorm then divides the detector map by about ``C/2`` whatever the scan, so the
     normalised value is an affine function of ``w · (patch − mean patch)``. Without them
     GroupNorm is scale-invariant and any scan with one moderate peak looks like the target;
   - the group's norm weight and bias open the ReLU only above a threshold midway between
     the candidate's peak and the highest peak of the server's other scans; the constant
     channels get norm weight 0 and bias −1 (always closed).
   Groups not used keep the honest weights; no channel of the layer reads the constant feature.

The trapped hospital's reply is left out of the aggregate (``threat.compensate``), so the
global model never carries the trap. It fails, as it should, against DP-SGD (noise moves
every weight), SecAgg+ (no per-hospital update) and the consistency check (a different model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fl_mia.models import get_weights, set_weights
from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.poisoning.base import Poisoner
from fl_mia.attacker.poisoning.settings import TrapWeightsSettings
from fl_mia.attacker.poisoning.trap_site import TrapSite, check_capacity

SIGNAL = "trap_trace"
# How much larger than any detector response the constant channels are: large enough that
# GroupNorm's statistics barely depend on the scan, small enough for float32 to resolve D.
CONSTANT_SCALE = 100.0
# Softness of the max over the server's other scans while fitting a detector.
SOFTMAX_SHARPNESS = 20.0
POSITIONS_TRIED = 8


@dataclass
class Detector:
    """One armed detector: the candidate it looks for, its group and how clearly it separates."""

    candidate: int
    group: int
    margin: float  # (target's response − highest response of the server's other scans) / target's
    separates: bool  # after GroupNorm, the target's peak is above every other scan's


def _constant_channels(stem_norm: nn.GroupNorm) -> slice:
    return slice(0, stem_norm.num_channels // stem_norm.num_groups)


@torch.no_grad()
def install_constant_feature(model: nn.Module, site: TrapSite) -> slice:
    """Make the stem's first GroupNorm group output 1 everywhere; returns those channels."""
    stem_conv, stem_norm, detector_conv, _ = site.modules(model)
    constant = _constant_channels(stem_norm)
    stem_conv.weight[constant] = 0.0
    stem_norm.weight[constant] = 0.0
    stem_norm.bias[constant] = 1.0
    detector_conv.weight[:, constant] = 0.0  # no channel of the layer reads it unless told to
    return constant


@torch.no_grad()
def detector_inputs(model: nn.Module, site: TrapSite, images: np.ndarray, *, batch_size: int = 64) -> torch.Tensor:
    """The feature maps ``encoder.layer1.0.conv1`` reads for each scan, ``[N, C, h, w]``."""
    detector_conv = site.modules(model)[2]
    captured: list[torch.Tensor] = []
    hook = detector_conv.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach().cpu()))
    device = next(model.parameters()).device
    try:
        model.eval()
        for start in range(0, len(images), batch_size):
            model.encoder(torch.as_tensor(images[start : start + batch_size]).to(device))
    finally:
        hook.remove()
    return torch.cat(captured)


def centred_patches(features: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Every position's input patch minus the scan's mean patch, ``[N, positions, C·k·k]``.

    GroupNorm subtracts the map's mean, so a detector responds to ``w · (patch − mean patch)``.
    """
    patches = F.unfold(features, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    patches = patches - patches.mean(dim=2, keepdim=True)
    return patches.transpose(1, 2)


def fit_detector_filter(
    own: torch.Tensor, others: torch.Tensor, *, held_against: torch.Tensor, steps: int
) -> tuple[torch.Tensor, float]:
    """One detector's filter: :func:`fit_detector_filters` for a single target."""
    units, margins = fit_detector_filters([own], others, held_against=held_against[:, None], steps=steps)
    return units[0], margins[0]


def fit_detector_filters(
    owns: list[torch.Tensor], others: torch.Tensor, *, held_against: torch.Tensor, steps: int
) -> tuple[list[torch.Tensor], list[float]]:
    """Per target, a unit filter whose response to one of its own patches beats every held-against row of ``others``.

    ``owns[k]`` is target k's ``[positions, d]``, ``others`` ``[rows, d]`` and ``held_against`` a
    ``[rows, targets]`` mask (slices of a target's own patient are not held against it). Tries
    the ``POSITIONS_TRIED`` strongest positions of each target at once, starting from the
    matched filter, and ascends the gap to a soft maximum over the other rows. Returns each
    target's best filter and its relative margin (> 0: it separates the target from every
    other row). The targets' objectives are independent and Adam is elementwise, so fitting
    them together is fitting each alone; one product with ``others`` per step serves them all
    (reading ``others`` once per step, not once per target, is what makes a round affordable).
    """
    targets = torch.stack([own[own.norm(dim=1).argsort(descending=True)[:POSITIONS_TRIED]] for own in owns])  # [K, P, d]
    count, tried, width = targets.shape
    excluded = torch.where(held_against, 0.0, -torch.inf)[:, :, None]  # [rows, K, 1]
    filters = (targets / targets.norm(dim=2, keepdim=True).clamp_min(1e-12)).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([filters], lr=0.01)

    def responses(unit: torch.Tensor) -> torch.Tensor:
        return (others @ unit.reshape(count * tried, width).T).reshape(len(others), count, tried)

    for _ in range(steps):
        unit = filters / filters.norm(dim=2, keepdim=True)
        soft_max_other = torch.logsumexp(responses(unit) * SOFTMAX_SHARPNESS + excluded, dim=0) / SOFTMAX_SHARPNESS
        gap = (targets * unit).sum(2) - soft_max_other
        optimiser.zero_grad(set_to_none=True)
        (-gap.sum()).backward()
        optimiser.step()
    with torch.no_grad():
        unit = filters / filters.norm(dim=2, keepdim=True)
        own_response = (targets * unit).sum(2)
        other_response = (responses(unit) + excluded).amax(0)
        relative = (own_response - other_response) / own_response.abs().clamp_min(1e-12)  # [K, P]
        best = relative.argmax(dim=1)
    rows = torch.arange(count)
    return list(unit[rows, best].detach()), [float(m) for m in relative[rows, best]]


@torch.no_grad()
def normalised_peaks(features: torch.Tensor, conv: nn.Conv2d, norm: nn.GroupNorm, *, batch_size: int = 64) -> torch.Tensor:
    """Per scan and channel, the highest GroupNorm-normalised value of the layer, ``[N, C]``."""
    peaks = []
    for start in range(0, len(features), batch_size):
        out = conv(features[start : start + batch_size])
        peaks.append(F.group_norm(out, norm.num_groups, eps=norm.eps).amax(dim=(2, 3)))
    return torch.cat(peaks)


def trap_trace(site: TrapSite, model_keys: list[str], per_group: int, group: int, sent, returned) -> float:
    """How far a detector's group moved in local training: 0 exactly if it never fired."""
    rows = slice(group * per_group, (group + 1) * per_group)
    return float(
        sum(np.abs(returned[model_keys.index(k)][rows] - sent[model_keys.index(k)][rows]).sum() for k in site.group_keys())
    )


class TrapWeightsPoisoner(Poisoner):
    name = "trap_weights"
    update_signal_names = (SIGNAL,)
    matched_signals = (f"update.{SIGNAL}", f"update.{SIGNAL}.accumulated")

    def __init__(
        self,
        knowledge: AttackerKnowledge,
        model: nn.Module,
        *,
        targets: list[int],
        detectors_per_round: int,
        fit_steps: int,
        in_turn: bool = True,
    ) -> None:
        self.knowledge = knowledge
        self.model = model  # scratch: its weights are overwritten
        self.site = TrapSite.of(self.model)
        capacity = check_capacity(self.model, detectors_per_round, poisoner=self.name)
        self.targets = set(targets)
        # One target per poisoned round, in turn: each round then loses one hospital's reply,
        # not all of them, and the global model keeps training.
        self.in_turn = in_turn
        self.turns_taken = 0
        self.turn_of_round: dict[int, int] = {}
        self.detectors_per_round = detectors_per_round
        self.fit_steps = fit_steps
        self.keys = list(self.model.state_dict())
        self.per_group = self.site.modules(self.model)[3].num_channels // capacity
        num_candidates = len(knowledge.candidates)
        self.patients = np.asarray(knowledge.candidates.patient_ids)
        # Round-robin over each target's candidates: trap the next ones each poisoned round.
        self.next_index = {k: 0 for k in self.targets}
        self.armed: dict[tuple[int, int], list[Detector]] = {}
        self.trapped_pairs: set[tuple[int, int]] = set()
        self.margins: list[float] = []
        self.not_separating = 0
        self.ever_armed = np.zeros(num_candidates, dtype=bool)

    @classmethod
    def from_settings(
        cls, settings: TrapWeightsSettings, knowledge: AttackerKnowledge, model: nn.Module, *, targets: list[int]
    ) -> "TrapWeightsPoisoner":
        return cls(
            knowledge, model, targets=targets, detectors_per_round=settings.detectors_per_round,
            fit_steps=settings.fit_steps, in_turn=settings.in_turn,
        )

    def describe(self) -> str:
        targets = sorted(self.targets)
        who = f"hospitals {targets}" + (" (one per poisoned round, in turn)" if self.in_turn and len(targets) > 1 else "")
        return (
            f"{who} receive a model in which {self.site.stem_conv}'s first GroupNorm group "
            f"outputs a constant and up to {self.detectors_per_round} GroupNorm groups of {self.site.detector_conv} "
            "are replaced by per-candidate detectors (a fitted filter, constant reference channels, a threshold in "
            f"{self.site.detector_norm}); a candidate scores how much its group's weights changed; "
            "the trapped reply is left out of the aggregate"
        )

    def _next_candidates(self, hospital: int) -> np.ndarray:
        pool = np.flatnonzero(self.knowledge.candidates.hospital == hospital)
        if len(pool) == 0:
            return pool
        take = min(self.detectors_per_round, len(pool))
        start = self.next_index[hospital]
        self.next_index[hospital] = (start + take) % len(pool)
        return pool[(start + np.arange(take)) % len(pool)]

    def trapped_in(self, server_round: int) -> set[int]:
        """The hospitals trapped in a poisoned round: every target, or the one whose turn it is."""
        if not self.in_turn:
            return self.targets
        if server_round not in self.turn_of_round:
            order = sorted(self.targets)
            self.turn_of_round[server_round] = order[self.turns_taken % len(order)]
            self.turns_taken += 1
        return {self.turn_of_round[server_round]}

    def poison(self, *, server_round: int, hospital: int, global_weights: list[np.ndarray]) -> list[np.ndarray] | None:
        if hospital not in self.trapped_in(server_round):
            return None
        chosen = self._next_candidates(hospital)
        if len(chosen) == 0:
            return None
        weights, detectors = self._arm(global_weights, chosen)
        self.armed[(server_round, hospital)] = detectors
        self.trapped_pairs.add((server_round, hospital))
        self.margins += [d.margin for d in detectors]
        self.not_separating += sum(not d.separates for d in detectors)
        self.ever_armed[chosen] = True
        return weights

    def _arm(self, global_weights: list[np.ndarray], chosen: np.ndarray) -> tuple[list[np.ndarray], list[Detector]]:
        """The global model with the constant feature and one detector per chosen candidate."""
        set_weights(self.model, global_weights)
        constant = install_constant_feature(self.model, self.site)
        population = self.knowledge.population.images
        scans = np.concatenate([population, self.knowledge.candidates.images])
        scan_patient = np.concatenate([np.full(len(population), -1), self.patients])
        held_against = [scan_patient != self.patients[c] for c in chosen]  # the candidate's own patient excepted
        targets = [len(population) + c for c in chosen]  # the chosen candidates' rows among the scans
        features = detector_inputs(self.model, self.site, scans)
        filters, margins = self._fit_filters(features, constant, targets, held_against)
        separates = self._write_detectors(features, constant, filters, targets, held_against)
        detectors = [
            Detector(int(c), group, margin, separates=ok)
            for group, (c, margin, ok) in enumerate(zip(chosen, margins, separates))
        ]
        return get_weights(self.model), detectors

    def _fit_filters(
        self, features: torch.Tensor, constant: slice, targets: list[int], held_against: list[np.ndarray]
    ) -> tuple[list[torch.Tensor], list[float]]:
        conv = self.site.modules(self.model)[2]
        usable = torch.ones(conv.weight.shape[1:])
        usable[constant] = 0.0  # a detector must not read the constant channels
        patches = centred_patches(features, conv) * usable.flatten()  # [scans, positions, d]
        positions = patches.shape[1]
        every_patch = patches.flatten(0, 1)
        held = torch.as_tensor(np.stack([np.repeat(others, positions) for others in held_against], axis=1))
        units, margins = fit_detector_filters([patches[t] for t in targets], every_patch, held_against=held, steps=self.fit_steps)
        return [unit.reshape(conv.weight.shape[1:]) for unit in units], margins

    @torch.no_grad()
    def _write_detectors(
        self, features: torch.Tensor, constant: slice, filters: list[torch.Tensor], targets: list[int],
        held_against: list[np.ndarray],
    ) -> list[bool]:
        """Fill groups 0..n−1 of the detector layer; per detector, whether its target beats every other scan."""
        _, _, conv, norm = self.site.modules(self.model)
        groups = [slice(g * self.per_group, (g + 1) * self.per_group) for g in range(len(filters))]
        for rows, unit in zip(groups, filters):
            conv.weight[rows.start] = unit
        responses = conv(features)[:, [rows.start for rows in groups]]
        scale = CONSTANT_SCALE * float(responses.abs().max().clamp_min(1e-6))
        centre = (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
        for rows in groups:
            conv.weight[rows.start + 1 : rows.stop] = 0.0
            conv.weight[rows.start + 1 : rows.stop, constant.start, centre[0], centre[1]] = scale
        peaks = normalised_peaks(features, conv, norm)
        separates = []
        for rows, target, others in zip(groups, targets, held_against):
            own_peak, other_peak = float(peaks[target, rows.start]), float(peaks[torch.as_tensor(others), rows.start].max())
            threshold = (own_peak + other_peak) / 2
            # Output ≈ w·(patch − mean patch) − threshold, in feature units (GroupNorm divided by ≈ C/2).
            norm.weight[rows.start], norm.bias[rows.start] = scale / 2, -scale / 2 * threshold
            norm.weight[rows.start + 1 : rows.stop], norm.bias[rows.start + 1 : rows.stop] = 0.0, -1.0
            separates.append(own_peak > other_peak)
        return separates

    def fold_back(self, *, global_weights, sent, returned):
        return None  # a trapped model's update is not worth averaging: keep the global model clean

    def update_signals(self, *, server_round: int, hospital: int, sent, returned) -> dict[str, np.ndarray]:
        scores = np.full(len(self.knowledge.candidates.images), np.nan)
        for detector in self.armed.get((server_round, hospital), []):
            scores[detector.candidate] = trap_trace(self.site, self.keys, self.per_group, detector.group, sent, returned)
        return {SIGNAL: scores}

    def poisoned_pairs(self) -> set[tuple[int, int]]:
        return set(self.trapped_pairs)

    def report(self) -> dict:
        pool = np.isin(self.knowledge.candidates.hospital, sorted(self.targets))
        margins = np.asarray(self.margins)
        return {
            "trap": {
                "detectors_armed": int(len(margins)),
                "candidates_covered": float(self.ever_armed[pool].mean()) if pool.any() else 0.0,
                "detectors_not_separating": self.not_separating,
                "median_relative_margin": float(np.median(margins)) if len(margins) else None,
            }
        }

    # Checkpoint protocol: where each target's round-robin stands and what was armed.
    def state_dict(self) -> dict:
        state: dict = {f"next:{k}": np.asarray(v) for k, v in self.next_index.items()}
        state["margins"] = np.asarray(self.margins, dtype=np.float64)
        state["not_separating"] = np.asarray(self.not_separating)
        state["turns_taken"] = np.asarray(self.turns_taken)
        state["trapped_pairs"] = np.asarray(sorted(self.trapped_pairs), dtype=np.int64).reshape(-1, 2)
        state["ever_armed"] = self.ever_armed.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key.startswith("next:"):
                self.next_index[int(key.split(":")[1])] = int(value)
        self.margins = list(np.asarray(state.get("margins", [])).tolist())
        self.not_separating = int(state.get("not_separating", 0))
        self.turns_taken = int(state.get("turns_taken", 0))
        self.trapped_pairs = {(int(r), int(h)) for r, h in np.asarray(state.get("trapped_pairs", np.zeros((0, 2))))}
        if "ever_armed" in state:
            self.ever_armed = np.asarray(state["ever_armed"], dtype=bool).copy()
