"""Scores candidates on every hospital's update, round by round, as the server sees them.

A :class:`~fl_mia.contracts.RoundObserver`: the strategy hands it each round's replies
(the model sent to each hospital and the one that came back). Nothing but images, masks
and weights reaches it: membership is joined later, by the evaluation step.

With ``every_candidate`` (source inference) each update is scored on every candidate, so
the server can also ask which hospital a scan came from; the cost then grows with
candidates × hospitals trained per round. Without it each update is scored only on the
candidates asked about its own hospital, which is all the membership scores use: the cost
per round stays proportional to the hospitals trained in it.

The loss signals read the candidates' logits from :class:`~fl_mia.attacker.forwards.CandidateForwards`:
each distinct model (the one sent to a group of hospitals, each one returned) runs over the
candidates once, and a model the per-round attacks already ran (last round's global model is
this round's sent model) is not run again.
"""

from __future__ import annotations

import copy
import time

import numpy as np
from torch import nn

from fl_mia.attacker.forwards import CandidateForwards, weights_fingerprint
from fl_mia.attacker.knowledge import AttackerKnowledge
from fl_mia.attacker.predictions.output_signals import per_image_loss
from fl_mia.models import set_weights
from fl_mia.attacker.updates.settings import LOSS_SIGNALS, UPDATE_SIGNALS
from fl_mia.attacker.updates.signals import gradient_alignment, loss_signals, update_vector


class UpdateAttackRecorder:
    """Per-round update signals: ``scores[signal]`` is ``[rounds, candidates, hospitals]``.

    Entries stay NaN where the server saw nothing (a hospital not sampled, crashed, or
    hidden by secure aggregation). Higher = more likely a member of that hospital.
    """

    def __init__(
        self,
        knowledge: AttackerKnowledge,
        *,
        model: nn.Module,
        num_hospitals: int,
        total_rounds: int,
        signals: tuple[str, ...] | None = None,
        every_candidate: bool = True,
        forwards: CandidateForwards | None = None,
    ) -> None:
        """``signals``: the registered update signals to score (default: all of them);
        ``forwards``: the candidates' forward passes shared with the prediction attacks
        (default: the recorder's own, on a copy of ``model``)."""
        self.model = model  # scratch: its weights are overwritten
        self.training = knowledge.training
        self.images = knowledge.candidates.images
        self.masks = knowledge.candidates.masks
        self.asked_about = knowledge.candidates.hospital
        self.forwards = forwards or CandidateForwards(copy.deepcopy(model), self.images)
        signals = UPDATE_SIGNALS.names() if signals is None else tuple(UPDATE_SIGNALS.check(name) for name in signals)
        self.with_loss_signals = any(name in LOSS_SIGNALS for name in signals)
        self.with_gradient_alignment = "gradient_alignment" in signals
        self.every_candidate = every_candidate
        self.seconds_by_round: dict[int, float] = {}
        self._shape = (total_rounds, len(self.images), num_hospitals)
        self.scores: dict[str, np.ndarray] = {name: np.full(self._shape, np.nan) for name in signals}
        self._listed = frozenset(signals)
        self.signal_sources: list = []

    def add_signal_source(self, source) -> None:
        """Also record ``source.update_signals(...)`` (a poisoner's own signals, e.g. a trap's trace)."""
        if not source.update_signal_names:
            return
        self.signal_sources.append(source)
        for name in source.update_signal_names:
            self.scores.setdefault(name, np.full(self._shape, np.nan))

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(self.scores)

    @property
    def observed_anything(self) -> bool:
        return any(np.isfinite(values).any() for values in self.scores.values())

    def _rows(self, hospitals: list[int]) -> np.ndarray | None:
        """Candidate rows to score for these hospitals' updates (None: every candidate)."""
        if self.every_candidate:
            return None
        return np.flatnonzero(np.isin(self.asked_about, hospitals))

    def _candidates(self, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return (self.images, self.masks) if rows is None else (self.images[rows], self.masks[rows])

    def _losses(self, weights: list[np.ndarray], rows: np.ndarray | None, fingerprint: str) -> np.ndarray:
        logits = self.forwards.rows(weights, rows, fingerprint=fingerprint)
        masks = self.masks if rows is None else self.masks[rows]
        return per_image_loss(logits, masks, dice_weight=self.training.dice_weight, ce_weight=self.training.ce_weight)

    def _record_loss_signals(self, index: int, members: list, sent, union, own: dict, rows: dict, at: dict) -> None:
        sent_losses = self._losses(sent, union, weights_fingerprint(sent))
        # Under SecAgg+ every hospital's visible model is the same aggregate: score it once.
        returned_losses: dict[str, np.ndarray] = {}
        for reply in members:
            h = reply.hospital
            fingerprint = weights_fingerprint(reply.weights)
            key = fingerprint if self.every_candidate else str(h)
            if key not in returned_losses:
                returned_losses[key] = self._losses(reply.weights, own[h], fingerprint)
            for name, values in loss_signals(sent_losses[at[h]], returned_losses[key]).items():
                if name in self._listed:
                    self.scores[name][index, rows[h], h] = values

    def on_fit_replies(self, server_round: int, replies: list, failures: int) -> None:
        started = time.perf_counter()
        observed = [r for r in replies if r.weights is not None and r.sent_weights is not None]
        # Hospitals that were sent the same model share its loss and gradient pass.
        groups: dict[str, list] = {}
        for reply in observed:
            groups.setdefault(weights_fingerprint(reply.sent_weights), []).append(reply)
        index = server_round - 1
        for members in groups.values():
            sent = members[0].sent_weights
            union = self._rows([reply.hospital for reply in members])
            if union is not None and len(union) == 0:
                continue  # no candidate is asked about these hospitals
            # Per reply: its rows of the score matrix, and where they sit in the group's passes.
            own = {reply.hospital: self._rows([reply.hospital]) for reply in members}
            rows = {h: slice(None) if r is None else r for h, r in own.items()}
            at = {h: slice(None) if r is None else np.searchsorted(union, r) for h, r in own.items()}
            if self.with_loss_signals:
                self._record_loss_signals(index, members, sent, union, own, rows, at)
            if self.with_gradient_alignment:
                set_weights(self.model, sent)
                updates = [update_vector(self.model, sent, reply.weights) for reply in members]
                images, masks = self._candidates(union)
                cosines = gradient_alignment(
                    self.model, updates, images, masks,
                    dice_weight=self.training.dice_weight, ce_weight=self.training.ce_weight,
                )
                for column, reply in enumerate(members):
                    h = reply.hospital
                    self.scores["gradient_alignment"][index, rows[h], h] = cosines[at[h], column]
        for source in self.signal_sources:
            for reply in observed:
                signals = source.update_signals(
                    server_round=server_round, hospital=reply.hospital, sent=reply.sent_weights, returned=reply.weights
                )
                for name, values in signals.items():
                    self.scores[name][index, :, reply.hospital] = values
        self.seconds_by_round[server_round] = time.perf_counter() - started

    # Checkpoint protocol: the signals gathered so far.
    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"update:{name}": values for name, values in self.scores.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for key, values in state.items():
            name = key.removeprefix("update:")
            if key.startswith("update:") and name in self.scores:
                self.scores[name] = np.asarray(values, dtype=np.float64).copy()

    def final_round(self, signal: str) -> np.ndarray:
        """``[candidates, hospitals]``: each hospital's last observed round."""
        values = self.scores[signal]
        out = np.full(values.shape[1:], np.nan)
        for r in range(values.shape[0]):
            seen = ~np.isnan(values[r])
            out[seen] = values[r][seen]
        return out

    def accumulated(self, signal: str) -> np.ndarray:
        """``[candidates, hospitals]``: the signal summed over every round the server observed."""
        values = self.scores[signal]
        seen_any = (~np.isnan(values)).any(0)
        return np.where(seen_any, np.nansum(values, axis=0), np.nan)


def _fill_unobserved(values: np.ndarray) -> np.ndarray:
    """Candidates of a hospital the server never observed get the lowest score seen: no evidence."""
    finite = np.isfinite(values)
    if finite.all():
        return values
    floor = values[finite].min() if finite.any() else 0.0
    return np.where(finite, values, floor)


def candidate_scores(recorder: UpdateAttackRecorder, drawn_for: np.ndarray) -> dict[str, np.ndarray]:
    """One score per candidate and attack: the signal on the hospital the candidate is asked about.

    Names are ``update.<signal>`` (that hospital's last observed round) and
    ``update.<signal>.accumulated`` (summed over every observed round).
    """
    rows = np.arange(len(drawn_for))
    scores = {}
    for signal in recorder.signals:
        scores[f"update.{signal}"] = _fill_unobserved(recorder.final_round(signal)[rows, drawn_for])
        scores[f"update.{signal}.accumulated"] = _fill_unobserved(recorder.accumulated(signal)[rows, drawn_for])
    return scores


def candidate_round_scores(recorder: UpdateAttackRecorder, drawn_for: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
    """Per round (1-based) and signal, the candidates' scores; rounds nobody was observed in are left out."""
    rows = np.arange(len(drawn_for))
    out: dict[str, dict[int, np.ndarray]] = {}
    for signal in recorder.signals:
        per_round = {}
        for index in range(recorder.scores[signal].shape[0]):
            values = recorder.scores[signal][index][rows, drawn_for]
            if np.isfinite(values).any():
                per_round[index + 1] = _fill_unobserved(values)
        out[f"update.{signal}"] = per_round
    return out


def source_guess(recorder: UpdateAttackRecorder, signal: str = "returned_loss") -> np.ndarray:
    """Source inference: for every candidate, the hospital whose updates most suggest it, ``[N]``.

    Each hospital's accumulated signal is standardised over the candidates first, so that a
    hospital with larger losses overall does not claim every record.
    """
    matrix = recorder.accumulated(signal)
    mean = np.nanmean(matrix, axis=0, keepdims=True)
    std = np.nanstd(matrix, axis=0, keepdims=True) + 1e-12
    standardised = np.where(np.isfinite(matrix), (matrix - mean) / std, -np.inf)
    return standardised.argmax(axis=1)
