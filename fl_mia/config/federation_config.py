"""``[federation]``: hospitals, their shards and the rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fl_mia.config.base import Section


class FederationConfig(Section):
    """Hospitals, their shards and the rounds of federated training."""

    num_hospitals: int = Field(4, ge=1, le=100, description="Number of hospitals (Flower clients).")
    patients_per_hospital: int | list[int] = Field(
        24, description="Patients per hospital: one number for all, or one per hospital (size skew)."
    )
    train_fraction: float = Field(
        0.5, gt=0.0, lt=1.0, description="Share of a hospital's patients in its training shard (members)."
    )
    heldout_fraction: float = Field(
        0.25,
        gt=0.0,
        lt=1.0,
        description="Share kept as a held-out pool (future non-members); the rest is the test split.",
    )
    attacker_patients: int = Field(
        48, ge=0, description="Patients of the attacker's own population data, disjoint from all hospitals."
    )
    label_skew: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Spread of lesion prevalence across hospitals (0 = same prevalence everywhere).",
    )
    partition: Literal["iid", "size_skew", "manifest", "dirichlet"] = Field(
        "iid",
        description=(
            "Datasets from disk: how patients become hospitals. 'iid': equal random shares; 'size_skew': "
            "patients_per_hospital patients each; 'manifest': sites of federation.manifest (or the NPZ's sites); "
            "'dirichlet': Dirichlet(dirichlet_alpha) shares over lesion strata. The phantom uses patients_per_hospital."
        ),
    )
    manifest: Path | None = Field(
        None, description="partition='manifest': CSV with columns case,site (site 'attacker' = the attacker's population)."
    )
    dirichlet_alpha: float = Field(0.5, gt=0.0, le=1000.0, description="partition='dirichlet': concentration (small = skewed).")
    rounds: int = Field(5, ge=1, le=10_000, description="Federated rounds.")
    fraction_fit: float = Field(1.0, gt=0.0, le=1.0, description="Share of hospitals sampled each round.")
    server_learning_rate: float = Field(
        1.0, gt=0.0, le=100.0, description="FedAvgM's server step on the aggregated update (1 with momentum 0 = FedAvg)."
    )
    server_momentum: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description=(
            "FedAvgM's server momentum (0 = FedAvg). Applied to the released aggregate, after any DP noise: "
            "post-processing, so it costs no privacy."
        ),
    )

    @field_validator("patients_per_hospital")
    @classmethod
    def _positive_sizes(cls, value: int | list[int]) -> int | list[int]:
        sizes = value if isinstance(value, list) else [value]
        if not sizes or any(size < 4 for size in sizes):
            raise ValueError("every hospital needs at least 4 patients (train, held-out and test splits)")
        return value

    @model_validator(mode="after")
    def _splits_leave_a_test_set(self) -> "FederationConfig":
        if self.train_fraction + self.heldout_fraction >= 1.0:
            raise ValueError(
                "train_fraction + heldout_fraction must be below 1 so that a test split remains"
            )
        if isinstance(self.patients_per_hospital, list) and len(self.patients_per_hospital) != self.num_hospitals:
            raise ValueError(
                f"patients_per_hospital lists {len(self.patients_per_hospital)} sizes "
                f"but num_hospitals is {self.num_hospitals}"
            )
        return self

    def uses_server_momentum(self) -> bool:
        """Whether the server steps the aggregate with FedAvgM instead of taking it as the new model."""
        return self.server_momentum > 0.0 or self.server_learning_rate != 1.0

    def hospital_sizes(self) -> list[int]:
        """Number of patients of every hospital, in partition order."""
        if isinstance(self.patients_per_hospital, list):
            return list(self.patients_per_hospital)
        return [self.patients_per_hospital] * self.num_hospitals
