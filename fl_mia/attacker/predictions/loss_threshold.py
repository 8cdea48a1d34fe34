"""Loss threshold attack (Yeom et al. 2018; the seed paper's "global" attack)."""

from __future__ import annotations

import numpy as np

from fl_mia.attacker.predictions.base import AttackerKnowledge, MembershipAttack, TargetView
from fl_mia.attacker.predictions.shadow_data import reference_shadow
from fl_mia.attacker.predictions.output_signals import per_image_loss
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.training import predict_logits


class LossThresholdAttack(MembershipAttack):
    """Score = minus the per-image training loss (Dice + CE) under the target.

    Higher = more likely a member (members were fitted, so their loss is low). The hard
    decision "member when loss ≤ τ" takes τ = the reference shadow model's mean loss on its
    own training images, as in Chobola et al.; ``decision_threshold_`` is −τ.
    """

    name = "loss"
    uses_shadows = True

    @classmethod
    def from_settings(cls, settings: None = None, **_unused: object) -> "LossThresholdAttack":
        return cls()

    def __init__(self) -> None:
        pass  # nothing to choose: the loss is the hospitals' own, which the server configured

    def fit(self, knowledge: AttackerKnowledge, candidates: CandidateSet) -> "LossThresholdAttack":
        self.loss_weights_ = {"dice_weight": knowledge.dice_weight, "ce_weight": knowledge.ce_weight}
        shadow, members, _ = reference_shadow(knowledge)
        logits = predict_logits(shadow, members.images)
        self.shadow_train_loss_ = float(per_image_loss(logits, members.masks, **self.loss_weights_).mean())
        self.decision_threshold_ = -self.shadow_train_loss_
        return self

    def score(self, target: TargetView, candidates: CandidateSet) -> np.ndarray:
        return -per_image_loss(target.logits(candidates.images), candidates.masks, **self.loss_weights_)
