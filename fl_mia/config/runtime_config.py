"""``[simulation]`` and ``[failures]``: where hospitals run and how they fail."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fl_mia.config.base import Section


class SimulationConfig(Section):
    """Flower simulation through the Ray backend."""

    cpus_per_client: float = Field(1.0, gt=0.0, description="CPUs Ray reserves per hospital actor.")
    gpus_per_client: float = Field(0.0, ge=0.0, description="GPUs Ray reserves per hospital actor.")
    total_cpus: int | None = Field(
        None, ge=1, description="CPUs Ray may use in all (default: every core of the machine)."
    )
    threads_per_client: int = Field(1, ge=1, le=64, description="torch threads inside each hospital actor.")
    server_threads: int = Field(
        2,
        ge=1,
        le=256,
        description="torch threads of the server process (evaluation, attacks, poisoning). A fixed count, not "
        "'every core', so that a run scores the same on any machine or Ray node: float sums split over more "
        "threads round differently in the last bits.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where tensors go: 'cuda' needs a GPU (hospitals: gpus_per_client > 0); 'auto' uses one when there is one.",
    )

    ray_address: str | None = Field(
        None,
        min_length=1,
        description="Join this running Ray cluster (e.g. '10.0.0.5:6379' or 'auto') instead of starting one; "
        "default: the RAY_ADDRESS environment variable, else a local Ray.",
    )

    @model_validator(mode="after")
    def _hospitals_get_the_gpus_they_use(self) -> "SimulationConfig":
        if self.device == "cuda" and self.gpus_per_client == 0:
            raise ValueError(
                "device='cuda' needs gpus_per_client > 0 so that Ray gives each hospital a GPU "
                "(e.g. 0.25 packs four hospitals on one GPU)"
            )
        return self



class ScheduledFailure(Section):
    """One hospital failing at given rounds."""

    hospital: int = Field(ge=0, description="Partition id of the hospital (0-based).")
    rounds: list[int] = Field(min_length=1, description="Rounds (1-based, absolute) in which it fails.")

    @field_validator("rounds")
    @classmethod
    def _positive_rounds(cls, value: list[int]) -> list[int]:
        if any(r < 1 for r in value):
            raise ValueError("rounds are counted from 1")
        return value


class FailuresConfig(Section):
    """Simulated hospital failures: crashes and stragglers; the round goes on with the survivors."""

    crash_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Chance that a hospital crashes in a round it trains in (seeded per round and hospital: every run crashes the same ones).",
    )
    crashes: list[ScheduledFailure] = Field(
        default_factory=list,
        description="Hospitals that crash at given rounds, e.g. [{hospital = 1, rounds = [2]}].",
    )
    stragglers: list[ScheduledFailure] = Field(
        default_factory=list,
        description="Hospitals that reply only after the round timeout at given rounds; their late update is dropped.",
    )
    round_timeout_s: float | None = Field(
        None,
        gt=0.0,
        description="Seconds the server waits for training replies per round; later replies are dropped (default: wait for all).",
    )
    first_round_allowance_s: float = Field(
        60.0,
        ge=0.0,
        description="Extra seconds on the timeout of a process's first round (fresh or resumed): Ray actors start and import torch then.",
    )
    straggle_delay_s: float | None = Field(
        None,
        gt=0.0,
        description="How long a straggler sleeps before training; must exceed round_timeout_s + first_round_allowance_s (default: that sum + 5).",
    )

    @model_validator(mode="after")
    def _stragglers_need_a_timeout(self) -> "FailuresConfig":
        if self.stragglers and self.round_timeout_s is None:
            raise ValueError(
                "stragglers need failures.round_timeout_s: without a timeout the server waits for them"
            )
        if self.straggle_delay_s is not None and self.round_timeout_s is not None:
            # Past the longest deadline a round can have, so a straggler is late in every round,
            # fresh or resumed, and reruns agree on who was dropped.
            longest = self.round_timeout_s + self.first_round_allowance_s
            if self.straggle_delay_s <= longest:
                raise ValueError(
                    f"straggle_delay_s={self.straggle_delay_s:g} must exceed round_timeout_s + "
                    f"first_round_allowance_s = {longest:g}, or stragglers may arrive in time"
                )
        return self

    def straggle_seconds(self) -> float:
        """The sleep of a straggler (only meaningful when a timeout is set)."""
        if self.straggle_delay_s is not None:
            return self.straggle_delay_s
        return (self.round_timeout_s or 0.0) + self.first_round_allowance_s + 5.0
