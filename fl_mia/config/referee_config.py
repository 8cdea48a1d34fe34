"""``[referee]``: the candidates the referee draws and judges the attacker's scores on."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from fl_mia.config.base import Section


class RefereeConfig(Section):
    """The referee: draws members and non-members, keeps their ledger, scores the attacks."""

    moved_keys: ClassVar[dict[str, str]] = {
        "privacy.enabled": "referee.enabled",
        "privacy.candidates_per_hospital": "referee.candidates_per_hospital",
        "privacy.match_lesion_area": "referee.match_lesion_area",
        # Checked after every key of the old section, so a key names its own new place first.
        "privacy": "[attacker] (attacks, shadows) and [referee] (candidates) (see docs/config-reference.md)",
    }

    enabled: bool = Field(True, description="Run the membership inference step after training.")
    candidates_per_hospital: int | None = Field(
        None,
        ge=1,
        description="Members drawn per hospital (and as many non-members); default: as many as both pools allow.",
    )
    match_lesion_area: bool = Field(
        False,
        description="Draw members and non-members with the same mix of lesion-free, small- and large-lesion scans, so that the mask alone cannot tell them apart (metrics.json privacy.candidate_set.lesion_area_auc shows how much it could).",
    )
