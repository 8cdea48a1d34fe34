"""Membership signals on the hospitals' updates by name (``attacker.update_attacks``).

A light module (pydantic and :mod:`fl_mia.registry` only), so the config takes the allowed
names from ``UPDATE_SIGNALS`` without importing torch. The signals have no knobs of their
own; :class:`~fl_mia.attacker.updates.recorder.UpdateAttackRecorder` computes the listed ones
(:mod:`fl_mia.attacker.updates.signals` says what each measures).
"""

from __future__ import annotations

from fl_mia.registry import Registry

UPDATE_SIGNALS = Registry("update signal", key="attacker.update_attacks")

# The loss-based signals share one loss pass on the sent and the returned model.
LOSS_SIGNALS = ("returned_loss", "loss_reduction", "loss_log_ratio")

_SIGNALS = "fl_mia.attacker.updates.signals"
UPDATE_SIGNALS.register(
    "returned_loss", summary="−loss of the candidate on the returned model", factory=f"{_SIGNALS}:loss_signals"
)
UPDATE_SIGNALS.register(
    "loss_reduction", summary="loss on the sent model minus loss on the returned one", factory=f"{_SIGNALS}:loss_signals"
)
UPDATE_SIGNALS.register(
    "loss_log_ratio", summary="log-ratio of the losses on the sent and the returned model", factory=f"{_SIGNALS}:loss_signals"
)
UPDATE_SIGNALS.register(
    "gradient_alignment",
    summary="cosine of the candidate's gradient at the sent model with the update (one per-sample gradient pass per round)",
    factory=f"{_SIGNALS}:gradient_alignment",
)
