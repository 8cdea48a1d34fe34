"""Typed experiment configuration: one TOML file = one experiment (the schema only).

A leaf module: it imports nothing else of fl_mia. Values and cross-field rules are checked
by pydantic at load, so a bad value fails with the name of its field. Reading files,
``extends`` and ``--set`` live in :mod:`fl_mia.config_loading`; checks that need a model,
a registry or a poisoner run once in :mod:`fl_mia.preflight`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ConfigError(ValueError):
    """A config file or override is wrong; the message is one line naming the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where images come from and how they look."""

    source: Literal["phantom", "folder", "msd", "nnunet", "npz"] = Field(
        "phantom",
        description=(
            "'phantom': the embedded synthetic hospital generator; from disk (data.path): 'folder' (2-D image/mask "
            "pairs), 'msd' (Medical Segmentation Decathlon), 'nnunet' (nnU-Net v2 raw), 'npz' (arrays). See docs/data.md."
        ),
    )
    path: Path | None = Field(
        None, description="Dataset folder (folder, msd, nnunet) or .npz file (npz); needed by every source but the phantom."
    )
    cache_dir: Path | None = Field(
        None, description="Where decoded, resized slices are cached (default: ~/.cache/fl-mia/data)."
    )
    slice_axis: int = Field(2, ge=0, le=2, description="Volumes: axis (after reorienting to RAS) cut into 2-D slices; 2 = axial.")
    empty_slice_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Volumes: share of slices without foreground that are kept (every foreground slice is)."
    )
    crop: Literal["none", "body", "foreground"] = Field(
        "none",
        description="Volumes: crop each case in-plane to its body (nonzero image) or foreground (labels) box before resizing.",
    )
    labels: dict[str, int | list[int]] | None = Field(
        None,
        description=(
            "folder: mask value of each class, e.g. {background = 0, polyp = 255}, or an [R, G, B] palette colour "
            "(default: binary, mask > half its maximum)."
        ),
    )
    lesion_labels: list[str] | None = Field(
        None, description="Label names that count as lesion for data.task (default: the dataset's last label)."
    )
    image_glob: str | None = Field(
        None, description="folder: glob of images relative to data.path (default: images/*); masks matched by stem."
    )
    mask_glob: str | None = Field(None, description="folder: glob of masks relative to data.path (default: masks/*).")
    patient_regex: str | None = Field(
        None,
        description="folder: regex on the image file stem whose first group is the patient id (default: every image its own patient).",
    )
    task: Literal["lesion", "organ_lesion"] = Field(
        "lesion",
        description="'lesion': binary lesion masks; 'organ_lesion': background/organ/lesion classes.",
    )
    image_size: int = Field(64, ge=32, le=512, description="Side of the square 2-D slices in pixels.")
    num_patients: int = Field(
        400, ge=2, description="Size of the whole data pool (patients) shared out to hospitals and attacker."
    )
    slices_per_patient: int = Field(
        2, ge=1, le=64, description="Neighbouring slices per patient; splits never cut a patient."
    )
    shift_strength: float = Field(
        1.0, ge=0.0, le=3.0, description="Scale of each hospital's acquisition shift (0 = identical scanners)."
    )
    normalize: Literal["zscore", "ct", "none"] = Field(
        "zscore",
        description=(
            "'zscore': each image (volume) scaled to mean 0, std 1 (nnU-Net's MRI scheme); 'ct': clip to the 0.5-99.5 "
            "percentiles of foreground voxels of the dataset, then z-score with their mean and std (nnU-Net's CT scheme); "
            "'none': raw values."
        ),
    )
    lesion_probability: float = Field(
        0.8, ge=0.0, le=1.0, description="Probability that a patient has at least one lesion."
    )

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        # smp encoders downsample 5 times; other sizes crash deep inside the decoder.
        if value % 32:
            raise ValueError("must be a multiple of 32 (smp encoders downsample by 32)")
        return value

    @model_validator(mode="after")
    def _disk_sources_need_a_path(self) -> "DataConfig":
        if self.source != "phantom" and self.path is None:
            raise ValueError(f"data.source={self.source!r} reads from disk: set data.path to the dataset")
        if self.source == "phantom" and self.normalize == "ct":
            raise ValueError("data.normalize='ct' needs a CT dataset from disk; the phantom uses 'zscore' or 'none'")
        return self


class FederationConfig(_Section):
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

    def hospital_sizes(self) -> list[int]:
        """Number of patients of every hospital, in partition order."""
        if isinstance(self.patients_per_hospital, list):
            return list(self.patients_per_hospital)
        return [self.patients_per_hospital] * self.num_hospitals


class ModelConfig(_Section):
    """segmentation-models-pytorch architecture, encoder and normalisation."""

    arch: str = Field("Unet", description="smp architecture name, e.g. Unet, UnetPlusPlus, FPN, DeepLabV3Plus.")
    encoder: str = Field("resnet18", description="Any smp encoder name, e.g. resnet18, mobilenet_v2.")
    encoder_depth: int = Field(3, ge=3, le=5, description="Encoder stages used (fewer = faster, smaller).")
    decoder_channels: list[int] | None = Field(
        None, description="Decoder widths (Unet family); default: 16 at the last stage, doubling towards the bottleneck."
    )
    norm: Literal["batchnorm", "groupnorm"] = Field(
        "batchnorm", description="GroupNorm is needed for DP-SGD and avoids averaging running statistics."
    )
    bn_momentum: float = Field(
        0.1, gt=0.0, le=1.0, description="BatchNorm momentum (some smp encoders ship 0.01, which lags in FL)."
    )
    encoder_weights_path: Path | None = Field(
        None, description="Local file of encoder weights (state dict); nothing is ever downloaded."
    )


class TrainingConfig(_Section):
    """Local training on each hospital."""

    local_epochs: int = Field(1, ge=1, le=1000, description="Epochs over the training shard per round.")
    batch_size: int = Field(8, ge=1, le=1024, description="Images per local batch.")
    optimizer: Literal["adam", "nadam", "sgd"] = Field("adam", description="Local optimiser, fresh each round.")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="Local learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 weight decay.")
    dice_weight: float = Field(1.0, ge=0.0, description="Weight of the soft Dice term of the loss.")
    ce_weight: float = Field(1.0, ge=0.0, description="Weight of the BCE/CE term of the loss.")
    amp: Literal["off", "bf16"] = Field(
        "off", description="Mixed precision of the forward pass: 'bf16' autocasts on the process's device."
    )

    @model_validator(mode="after")
    def _some_loss(self) -> "TrainingConfig":
        if self.dice_weight == 0 and self.ce_weight == 0:
            raise ValueError("dice_weight and ce_weight are both 0: the loss would be constant")
        return self


class SimulationConfig(_Section):
    """Flower simulation through the Ray backend."""

    cpus_per_client: float = Field(1.0, gt=0.0, description="CPUs Ray reserves per hospital actor.")
    gpus_per_client: float = Field(0.0, ge=0.0, description="GPUs Ray reserves per hospital actor.")
    total_cpus: int | None = Field(
        None, ge=1, description="CPUs Ray may use in all (default: every core of the machine)."
    )
    threads_per_client: int = Field(1, ge=1, le=64, description="torch threads inside each hospital actor.")
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


# Above this many hospitals source inference is off unless asked for: scoring every candidate
# on every update costs candidates × hospitals per round, and candidates grow with hospitals.
SOURCE_INFERENCE_MAX_HOSPITALS = 8


class ThreatConfig(_Section):
    """What the server does: honest-but-curious FedAvg, or a poisoning strategy."""

    poisoning: Literal[
        "none", "gradient_ascent", "isolation", "model_inconsistency", "backdoor", "trap_weights", "trap_inconsistency"
    ] = Field(
        "none",
        description="'none': honest-but-curious server; otherwise the malicious strategy it runs "
        "('trap_inconsistency': trap weights for one hospital per round, silenced models for the others, against SecAgg+).",
    )
    target_hospitals: list[int] = Field(
        [0], description="Hospitals the poisoning targets (model_inconsistency: the one whose update it isolates)."
    )
    poison_rounds: list[int] | None = Field(
        None, description="Rounds in which the server poisons (default: every round)."
    )
    compensate: bool = Field(
        True,
        description="Aggregate a poisoned hospital as global + its own update, so the poison does not reach the global model.",
    )
    ascent_loss_ratio: float = Field(
        2.0, gt=1.0, le=1000.0, description="gradient_ascent: stop once the candidates' mean loss is this many times higher."
    )
    ascent_max_steps: int = Field(30, ge=1, le=10_000, description="gradient_ascent: most ascent steps per round.")
    ascent_lr: float = Field(1e-3, gt=0.0, le=1.0, description="gradient_ascent: Adam step size of the ascent.")
    ascent_layers: Literal["all", "decoder", "head"] = Field(
        "all", description="gradient_ascent: which layers the ascent may change."
    )
    backdoor_trigger_size: int = Field(6, ge=1, le=64, description="backdoor: side of the bottom-right trigger square (px).")
    backdoor_trigger_value: float = Field(4.0, description="backdoor: value written into the trigger (normalised units).")
    backdoor_steps: int = Field(20, ge=1, le=10_000, description="backdoor: fine-tuning steps before each sending.")
    backdoor_lr: float = Field(1e-3, gt=0.0, le=1.0, description="backdoor: learning rate of the implanting.")
    trap_detectors_per_round: int = Field(
        16, ge=1, le=4096,
        description="trap_weights, trap_inconsistency: candidates trapped per targeted hospital and poisoned round (one GroupNorm group of encoder.layer1.0.conv1 each).",
    )
    trap_in_turn: bool = Field(
        True,
        description="trap_weights: trap one target hospital per poisoned round, in turn (one reply left out per round), rather than all targets at once (trap_inconsistency always traps in turn).",
    )
    trap_fit_steps: int = Field(
        60, ge=0, le=10_000, description="trap_weights, trap_inconsistency: optimisation steps that separate a detector's target from the server's other scans."
    )
    update_attacks: bool = Field(
        True, description="Score candidates on each hospital's update (loss reduction, gradient alignment, ...)."
    )
    gradient_alignment: bool = Field(
        True, description="Include the gradient-alignment signal (one per-sample gradient pass per round)."
    )
    source_inference: bool | None = Field(
        None,
        description="Score every candidate on every hospital's update, so the server also guesses which hospital "
        "each scan came from (metrics.json privacy.source_inference). Off: each update is scored only on the "
        "candidates asked about its hospital (the membership scores are the same; the cost stays proportional to "
        f"the hospitals trained per round). Unset: on up to {SOURCE_INFERENCE_MAX_HOSPITALS} hospitals, off above.",
    )

    def scores_every_candidate(self, num_hospitals: int) -> bool:
        """Whether update attacks score every candidate on every update (source inference)."""
        if self.source_inference is not None:
            return self.source_inference
        return num_hospitals <= SOURCE_INFERENCE_MAX_HOSPITALS

    @field_validator("poison_rounds")
    @classmethod
    def _positive_rounds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(r < 1 for r in value):
            raise ValueError("rounds are numbered from 1")
        return value

    @property
    def threat_model(self) -> str:
        return "honest-but-curious" if self.poisoning == "none" else f"malicious ({self.poisoning})"

    def poisons(self, server_round: int) -> bool:
        return self.poisoning != "none" and (self.poison_rounds is None or server_round in self.poison_rounds)


class ScheduledFailure(_Section):
    """One hospital failing at given rounds."""

    hospital: int = Field(ge=0, description="Partition id of the hospital (0-based).")
    rounds: list[int] = Field(min_length=1, description="Rounds (1-based, absolute) in which it fails.")

    @field_validator("rounds")
    @classmethod
    def _positive_rounds(cls, value: list[int]) -> list[int]:
        if any(r < 1 for r in value):
            raise ValueError("rounds are counted from 1")
        return value


class FailuresConfig(_Section):
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


class SecAggConfig(_Section):
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


class CentralDpConfig(_Section):
    """Client-level central DP with Flower's fixed-clipping wrappers."""

    mode: Literal["off", "client_clipping", "server_clipping"] = Field(
        "off",
        description="'client_clipping': hospitals clip their update (fixedclipping_mod), the server adds noise; "
        "'server_clipping': the server clips every update and adds noise. Server noise does not protect against the server.",
    )
    noise_multiplier: float = Field(0.5, ge=0.0, description="Gaussian noise std as a multiple of clipping_norm (on the sum of updates).")
    clipping_norm: float = Field(1.0, gt=0.0, description="L2 bound on each hospital's update (returned − received weights).")
    delta: float = Field(1e-3, gt=0.0, lt=1.0, description="δ of the (ε, δ) client-level guarantee reported.")


class DpSgdConfig(_Section):
    """Sample-level DP-SGD on every hospital with Opacus."""

    enabled: bool = Field(False, description="Train each hospital with Opacus DP-SGD (per-image clipping, Poisson batches, noise).")
    noise_multiplier: float | None = Field(
        1.0, ge=0.0, description="Noise std as a multiple of max_grad_norm; ignored when target_epsilon is set."
    )
    target_epsilon: float | None = Field(
        None, gt=0.0, description="Aim for this ε after all rounds (make_private_with_epsilon over every local step of the run)."
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Per-image gradient clipping bound.")
    delta: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="δ per hospital; default min(1e-5, 1/(10·n)) for n training images of the hospital "
        "(well below 1/n). ε is also always reported at δ = 1e-5.",
    )
    accountant: Literal["rdp", "prv", "gdp"] = Field("rdp", description="Opacus privacy accountant used for ε.")


class OutputConfig(_Section):
    """What a prediction attacker may see of a model's outputs (output hardening)."""

    mode: Literal["probabilities", "argmax", "noisy_probabilities"] = Field(
        "probabilities", description="'argmax': one-hot masks only; 'noisy_probabilities': Gaussian noise on the probabilities."
    )
    noise_std: float = Field(0.1, ge=0.0, description="Std of the Gaussian noise added to probabilities (noisy_probabilities).")


class ConsistencyConfig(_Section):
    """Hospitals check that they all received the same model (against model inconsistency)."""

    mode: Literal["off", "flag", "refuse"] = Field(
        "off",
        description="Compare hashes of the received model on a channel the server does not control: 'refuse' withholds "
        "the SecAgg+ unmasking shares so the round's aggregate cannot be opened; 'flag' only records the mismatch.",
    )


class DefencesConfig(_Section):
    """Defences switched on for this experiment (all off by default; they combine)."""

    secagg: SecAggConfig = Field(default_factory=SecAggConfig)
    central_dp: CentralDpConfig = Field(default_factory=CentralDpConfig)
    dp_sgd: DpSgdConfig = Field(default_factory=DpSgdConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)

    @model_validator(mode="after")
    def _self_consistent(self) -> "DefencesConfig":
        if self.dp_sgd.enabled and self.dp_sgd.target_epsilon is None and self.dp_sgd.noise_multiplier is None:
            raise ValueError("dp_sgd.noise_multiplier: set a noise multiplier or dp_sgd.target_epsilon")
        if self.secagg.enabled and self.central_dp.mode == "server_clipping":
            raise ValueError(
                "central_dp.mode: 'server_clipping' needs every hospital's update, which SecAgg+ hides; "
                "use 'client_clipping' with secagg"
            )
        if self.consistency.mode != "off" and not self.secagg.enabled:
            raise ValueError(
                "consistency.mode: the check guards the SecAgg+ aggregate (hospitals withhold unmasking shares); "
                "enable secagg, or set consistency.mode = 'off'"
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
            names.append("dp_sgd")
        if self.output.mode != "probabilities":
            names.append(f"output:{self.output.mode}")
        if self.consistency.mode != "off":
            names.append(f"consistency:{self.consistency.mode}")
        return names


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
    if defences.dp_sgd.enabled and norm != "groupnorm":
        raise ValueError(
            "defences.dp_sgd.enabled: DP-SGD needs per-image gradients, which BatchNorm mixes; set model.norm = 'groupnorm'"
        )


class PrivacyConfig(_Section):
    """Membership inference run by the server after training (attacks on predictions)."""

    enabled: bool = Field(True, description="Run the membership inference step after training.")
    attacks: list[str] = Field(
        default_factory=lambda: ["loss", "label_only"],
        description="Attacks on the final global model, by registry name: loss, learned_type1, learned_type2, "
        "loss_map, lira_offline, lira_online, rmia, label_only.",
    )
    per_round_attacks: list[str] = Field(
        default_factory=lambda: ["loss"],
        description="Attacks (a subset of privacy.attacks) also scored on every round's global model.",
    )
    candidates_per_hospital: int | None = Field(
        None,
        ge=1,
        description="Members drawn per hospital (and as many non-members); default: as many as both pools allow.",
    )
    match_lesion_area: bool = Field(
        False,
        description="Draw members and non-members with the same mix of lesion-free, small- and large-lesion scans, so that the mask alone cannot tell them apart (metrics.json privacy.candidate_set.lesion_area_auc shows how much it could).",
    )
    shadow_epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Epochs of each shadow model over its data; default: federation.rounds × training.local_epochs.",
    )
    shadow_mode: Literal["central", "federated", "as_target"] = Field(
        "central",
        description="How shadow models train: 'central' (one model, shadow_epochs epochs), 'federated' (a FedAvg "
        "federation of shadow hospitals with the target's rounds, sampling and local epochs; shadow_epochs is not "
        "used), 'as_target' (federated, plus the target's DP-SGD and output hardening when it uses them).",
    )
    shadow_models: int = Field(
        4, ge=2, le=256, description="Shadow models K of LiRA (and reference models of RMIA), each trained on a random half (even numbers balance IN/OUT)."
    )
    lira_global_variance: Literal["auto", "always", "never"] = Field(
        "auto", description="LiRA: one pooled variance for all candidates ('auto': when shadow_models < 64)."
    )
    rmia_offline_a: float = Field(
        0.3, ge=0.0, le=1.0,
        description="RMIA offline: Pr(x) ≈ ½((1 + a)·Pr_OUT(x) + (1 − a)) from OUT-only reference models (Zarifzadeh et al. 2024).",
    )
    rmia_gamma: float = Field(1.0, gt=0.0, description="RMIA: x dominates z when LR(x) / LR(z) > gamma.")
    attack_epochs: int = Field(
        30, ge=1, le=1000, description="Epochs of the learned attack classifiers (output map, loss map)."
    )
    attack_lr: float = Field(1e-3, gt=0.0, le=1.0, description="Learning rate of the learned attack classifiers.")
    loss_map_patch: int = Field(
        16, ge=4, le=512, description="Side of the square patches the loss-map attack classifies (pixels)."
    )
    label_only_queries: int = Field(
        8, ge=0, le=256, description="Label-only attack: noisy copies of each candidate queried besides the clean one."
    )
    label_only_noise: float = Field(
        0.1, ge=0.0, le=10.0, description="Label-only attack: std of the Gaussian noise added to the (z-scored) image."
    )

    @field_validator("attacks", "per_round_attacks")
    @classmethod
    def _registered(cls, value: list[str]) -> list[str]:
        # Whether each name is a registered attack is checked by the preflight (fl_mia.preflight).
        if len(set(value)) != len(value):
            raise ValueError("lists an attack twice")
        return value

    @model_validator(mode="after")
    def _per_round_subset(self) -> "PrivacyConfig":
        extra = [name for name in self.per_round_attacks if name not in self.attacks]
        if extra:
            raise ValueError(f"per_round_attacks names {extra[0]!r}, which is not in privacy.attacks")
        return self


class ExperimentConfig(_Section):
    """One experiment: data, federation, model, training and simulation settings."""

    name: str = Field("experiment", min_length=1, description="Run name; the run folder starts with it.")
    seed: int = Field(0, ge=0, description="Seed of every random choice of the run.")
    data: DataConfig = Field(default_factory=DataConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    threat: ThreatConfig = Field(default_factory=ThreatConfig)
    failures: FailuresConfig = Field(default_factory=FailuresConfig)
    defences: DefencesConfig = Field(default_factory=DefencesConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @model_validator(mode="after")
    def _pool_fills_hospitals(self) -> "ExperimentConfig":
        needed = sum(self.federation.hospital_sizes()) + self.federation.attacker_patients
        # A dataset from disk is counted by the preflight, once it has been read.
        if self.data.source == "phantom" and needed > self.data.num_patients:
            raise ValueError(
                f"federation.num_hospitals={self.federation.num_hospitals} hospitals need {needed} patients "
                f"(with federation.attacker_patients) but data.num_patients is {self.data.num_patients}: "
                "use fewer or smaller hospitals, or a larger pool"
            )
        if self.data.source == "phantom" and self.federation.partition not in ("iid", "size_skew"):
            raise ValueError(
                f"federation.partition={self.federation.partition!r} needs a dataset from disk; "
                "the phantom's hospitals come from patients_per_hospital and federation.label_skew"
            )
        check_defences(
            self.defences, num_hospitals=self.federation.num_hospitals, sampled=self.sampled_per_round(), norm=self.model.norm
        )
        return self

    @model_validator(mode="after")
    def _targets_exist(self) -> "ExperimentConfig":
        k = self.federation.num_hospitals
        bad = [t for t in self.threat.target_hospitals if not 0 <= t < k]
        if bad:
            raise ValueError(f"threat.target_hospitals: {bad} outside 0..{k - 1} (federation.num_hospitals = {k})")
        if self.threat.poisoning != "none" and not (self.privacy.enabled and self.privacy.attacks):
            raise ValueError(
                f"threat.poisoning={self.threat.poisoning} needs the attacker's candidate set: "
                "set privacy.enabled = true with at least one privacy.attacks entry"
            )
        if self.threat.poisoning != "none" and self.federation.attacker_patients < 2:
            raise ValueError("threat.poisoning needs attacker data: set federation.attacker_patients >= 2")
        late = [r for r in self.threat.poison_rounds or [] if r > self.federation.rounds]
        if late:
            raise ValueError(f"threat.poison_rounds: round {late[0]} is after the last round (federation.rounds)")
        if self.threat.poisoning in ("trap_weights", "trap_inconsistency"):
            self._trap_weights_fit_the_model()
        if self.threat.poisoning == "trap_inconsistency":
            self._trap_inconsistency_leaves_training_rounds()
        return self

    def _trap_weights_fit_the_model(self) -> None:
        # The trap reads "this parameter never moved" as "its detector never fired".
        poisoning = self.threat.poisoning
        if self.training.weight_decay != 0:
            raise ValueError(
                f"threat.poisoning={poisoning}: training.weight_decay must be 0 (decay moves every weight and hides the trap)"
            )
        if not self.threat.update_attacks:
            raise ValueError(f"threat.poisoning={poisoning} reads the hospitals' updates: set threat.update_attacks = true")
        # Whether the model has the trap's site and room for its detectors: fl_mia.preflight.

    def _trap_inconsistency_leaves_training_rounds(self) -> None:
        threat = self.threat
        if not threat.trap_in_turn and len(set(threat.target_hospitals)) > 1:
            raise ValueError(
                "threat.trap_in_turn=false: trap_inconsistency traps one hospital per round (an aggregate isolates "
                "only one unsilenced update); set threat.trap_in_turn = true"
            )
        trapped = set(threat.poison_rounds) if threat.poison_rounds is not None else set(range(1, self.federation.rounds + 1))
        if threat.compensate and trapped >= set(range(1, self.federation.rounds + 1)):
            raise ValueError(
                "threat.poison_rounds: trap_inconsistency keeps the previous global model in every trapped round, so "
                "trapping every round leaves the model untrained; list only the trap rounds, after the training rounds"
            )

    @model_validator(mode="after")
    def _failures_name_real_hospitals_and_rounds(self) -> "ExperimentConfig":
        k, rounds = self.federation.num_hospitals, self.federation.rounds
        for kind in ("crashes", "stragglers"):
            for entry in getattr(self.failures, kind):
                if entry.hospital >= k:
                    raise ValueError(
                        f"failures.{kind}: hospital {entry.hospital} does not exist "
                        f"(federation.num_hospitals={k}, ids 0..{k - 1})"
                    )
                late = [r for r in entry.rounds if r > rounds]
                if late:
                    raise ValueError(
                        f"failures.{kind}: round {late[0]} of hospital {entry.hospital} is after "
                        f"the last round (federation.rounds={rounds})"
                    )
        return self

    def sampled_per_round(self) -> int:
        """Hospitals sampled each round (what the server's strategy asks for)."""
        return max(1, int(round(self.federation.fraction_fit * self.federation.num_hospitals)))

    def shadow_epochs(self) -> int:
        """Epochs of a shadow model: as many passes over its data as a hospital makes over its shard."""
        return self.privacy.shadow_epochs or self.federation.rounds * self.training.local_epochs

    def to_toml_dict(self) -> dict[str, Any]:
        """Plain dict with only TOML-representable values (None dropped, paths as text)."""
        return _drop_none(json.loads(self.model_dump_json()))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    return value
