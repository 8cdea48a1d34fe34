"""``[defences]``: SecAgg+, central DP, DP-SGD, output hardening, the consistency check, the hospitals' detector."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fl_mia.config.base import Section
from fl_mia.defences.distributed_dp import noise_share_std


class SecAggConfig(Section):
    """Flower's SecAgg+ protocol: the server-side strategy sees only the sum of the updates."""

    enabled: bool = Field(False, description="Secure aggregation with Flower's SecAgg+ (SecAggPlusWorkflow + secaggplus_mod).")
    num_shares: int = Field(
        0, ge=0, description="Shares of each hospital's secrets (SecAgg+ neighbours); 0 = every sampled hospital (plain SecAgg)."
    )
    reconstruction_threshold: int = Field(
        0, ge=0, description="Shares needed to unmask; 0 = Flower's default, two thirds of num_shares (at least 2). Must not exceed num_shares."
    )
    clipping_range: float = Field(
        1.0,
        gt=0.0,
        description="SecAgg+ clips every sent value to ±clipping_range before quantising; hospitals send deltas "
        "(returned − received weights) and refuse to send one beyond it, so nothing is clipped silently.",
    )
    quantization_range: int = Field(
        2**22, ge=2**8, le=2**30, description="Integer levels over [−clipping_range, clipping_range] (resolution of the sum)."
    )
    timeout_s: float | None = Field(None, gt=0.0, description="Seconds each SecAgg+ stage waits for replies (default: no limit).")


class CentralDpConfig(Section):
    """Hospital-level DP (DP-FedAvg): Flower's fixed-clipping wrappers, or distributed noise under SecAgg+."""

    mode: Literal["off", "client_clipping", "server_clipping", "distributed"] = Field(
        "off",
        description="'client_clipping': hospitals clip their update (fixedclipping_mod), the server adds noise; "
        "'server_clipping': the server clips every update and adds noise. Server noise does not protect against the server. "
        "'distributed' (needs secagg): each hospital clips its update and adds its share of the noise "
        "(std noise_multiplier·clipping_norm/√sampled), so the secure sum carries the full noise and the server never "
        "sees an update without it. ε is per hospital in every mode.",
    )
    noise_multiplier: float = Field(0.5, ge=0.0, description="Gaussian noise std as a multiple of clipping_norm (on the sum of updates).")
    clipping_norm: float = Field(1.0, gt=0.0, description="L2 bound on each hospital's update (returned − received weights).")
    delta: float = Field(1e-3, gt=0.0, lt=1.0, description="δ of the (ε, δ) client-level guarantee reported.")


class DpSgdConfig(Section):
    """DP-SGD on every hospital with Opacus: per patient (default) or per slice."""

    enabled: bool = Field(False, description="Train each hospital with Opacus DP-SGD (clipping, Poisson sampling, noise).")
    unit: Literal["patient", "slice"] = Field(
        "patient",
        description="What one clipped gradient is, and so what ε protects. 'patient': Poisson-sample patients, clip the "
        "gradient of each sampled patient's slices together, ε per patient (membership is asked by patient). "
        "'slice': Poisson-sample slices, clip each slice's gradient, ε per slice (a patient's ε is then only bounded by "
        "group privacy over its slices, also reported).",
    )
    patients_per_step: int | None = Field(
        None,
        ge=1,
        description="unit 'patient': expected patients per step (Poisson rate = this / the hospital's patients); "
        "default: as many patients as training.batch_size slices hold on average.",
    )
    noise_multiplier: float | None = Field(
        1.0, ge=0.0, description="Noise std as a multiple of max_grad_norm; ignored when target_epsilon is set."
    )
    target_epsilon: float | None = Field(
        None, gt=0.0, description="Aim for this ε after all rounds (make_private_with_epsilon over every local step of the run)."
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Clipping bound on each unit's gradient (a patient's or a slice's).")
    delta: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="δ per hospital; default min(1e-5, 1/(10·n)) for n training units (patients or slices) of the "
        "hospital (well below 1/n). ε is also always reported at δ = 1e-5.",
    )
    accountant: Literal["rdp", "prv", "gdp"] = Field("rdp", description="Opacus privacy accountant used for ε.")


class OutputConfig(Section):
    """What a prediction attacker may see of a model's outputs (output hardening)."""

    mode: Literal["probabilities", "argmax", "noisy_probabilities"] = Field(
        "probabilities", description="'argmax': one-hot masks only; 'noisy_probabilities': Gaussian noise on the probabilities."
    )
    noise_std: float = Field(0.1, ge=0.0, description="Std of the Gaussian noise added to probabilities (noisy_probabilities).")


class ConsistencyConfig(Section):
    """Hospitals check that they all received the same model (against model inconsistency)."""

    mode: Literal["off", "flag", "refuse"] = Field(
        "off",
        description="Compare hashes of the received model on a channel the server does not control: 'refuse' withholds "
        "the SecAgg+ unmasking shares so the round's aggregate cannot be opened; 'flag' only records the mismatch.",
    )


class DetectorConfig(Section):
    """Would the hospitals notice? A check of every received model from what a hospital alone can see."""

    enabled: bool = Field(
        False,
        description="Each hospital compares the model it receives with the previous one and with its own last reply, "
        "and its first-batch loss with last round's, and flags the round (fl_mia/defences/detector.py).",
    )
    loss_jump: float | None = Field(
        1.5, gt=0.0,
        description="Flag when the first-batch training loss is more than this many times last round's (none: off).",
    )
    weight_change: float | None = Field(
        1.5, gt=0.0,
        description="Flag when a layer (64+ values) moved by more than this fraction of its norm since the previous "
        "received model (none: off).",
    )
    dead_units: bool = Field(True, description="Flag norm channels or filters set to exactly 0 since the previous model.")
    echo: bool = Field(True, description="Flag a received model identical to the hospital's own last reply (isolation).")


class DefencesConfig(Section):
    """Defences switched on for this experiment (all off by default; they combine)."""

    secagg: SecAggConfig = Field(default_factory=SecAggConfig)
    central_dp: CentralDpConfig = Field(default_factory=CentralDpConfig)
    dp_sgd: DpSgdConfig = Field(default_factory=DpSgdConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)

    @model_validator(mode="after")
    def _self_consistent(self) -> "DefencesConfig":
        if self.dp_sgd.enabled and self.dp_sgd.target_epsilon is None and self.dp_sgd.noise_multiplier is None:
            raise ValueError("dp_sgd.noise_multiplier: set a noise multiplier or dp_sgd.target_epsilon")
        if self.secagg.enabled and self.central_dp.mode == "server_clipping":
            raise ValueError(
                "central_dp.mode: 'server_clipping' needs every hospital's update, which SecAgg+ hides; "
                "use 'client_clipping' with secagg"
            )
        if self.central_dp.mode == "distributed" and not self.secagg.enabled:
            raise ValueError(
                "central_dp.mode: 'distributed' noise protects only a sum (each hospital adds a share too small alone); "
                "enable secagg, or use 'client_clipping'"
            )
        if self.consistency.mode != "off" and not self.secagg.enabled:
            raise ValueError(
                "consistency.mode: the check guards the SecAgg+ aggregate (hospitals withhold unmasking shares); "
                "enable secagg, or set consistency.mode = 'off'"
            )
        if self.detector.enabled and self.secagg.enabled:
            raise ValueError(
                "detector.enabled: under SecAgg+ a reply carries no metrics to flag a round with; the hospitals' check "
                "there is defences.consistency"
            )
        return self

    def active(self) -> list[str]:
        """Names of the defences in force, for metrics.json and the report."""
        names = []
        if self.secagg.enabled:
            names.append("secagg+")
        if self.central_dp.mode != "off":
            names.append(f"central_dp:{self.central_dp.mode}")
        if self.dp_sgd.enabled:
            names.append(f"dp_sgd:{self.dp_sgd.unit}")
        if self.output.mode != "probabilities":
            names.append(f"output:{self.output.mode}")
        if self.consistency.mode != "off":
            names.append(f"consistency:{self.consistency.mode}")
        if self.detector.enabled:
            names.append("detector")
        return names


DISTRIBUTED_NOISE_STDS = 6  # the largest of ~10⁹ Gaussian values is about 6 std


def check_defences(defences: DefencesConfig, *, num_hospitals: int, sampled: int, norm: str) -> None:
    """Cross-section checks (defences against federation and model); ``ValueError`` naming the field."""
    secagg = defences.secagg
    if secagg.enabled:
        if sampled < 2:
            raise ValueError(
                f"defences.secagg.enabled: SecAgg+ needs at least 2 hospitals per round, {sampled} are sampled"
            )
        if secagg.num_shares > sampled:
            raise ValueError(
                f"defences.secagg.num_shares={secagg.num_shares} exceeds the {sampled} hospitals sampled per round"
            )
        if secagg.reconstruction_threshold > (secagg.num_shares or sampled):
            raise ValueError(
                f"defences.secagg.reconstruction_threshold={secagg.reconstruction_threshold} exceeds the "
                f"{secagg.num_shares or sampled} shares per secret (num_shares, or the {sampled} sampled hospitals)"
            )
    central = defences.central_dp
    if central.mode == "distributed" and sampled >= 1:
        # Each update sent is the clipped delta (at most C in any value) plus a noise share; over a
        # model's weights the share's largest values pass 5 std, and SecAgg+ would clip them.
        share = noise_share_std(noise_multiplier=central.noise_multiplier, clipping_norm=central.clipping_norm, sampled=sampled)
        needed = central.clipping_norm + DISTRIBUTED_NOISE_STDS * share
        if secagg.clipping_range < needed:
            raise ValueError(
                f"defences.secagg.clipping_range={secagg.clipping_range:g} is below what a hospital's distributed-DP update "
                f"reaches (its clipped delta up to central_dp.clipping_norm={central.clipping_norm:g} plus a noise share of "
                f"std {share:.3g}, whose largest values over a model pass {DISTRIBUTED_NOISE_STDS} std): set it to at least {needed:.3g}"
            )
    if defences.dp_sgd.enabled and norm != "groupnorm":
        raise ValueError(
            "defences.dp_sgd.enabled: DP-SGD needs per-image gradients, which BatchNorm mixes; set model.norm = 'groupnorm'"
        )
