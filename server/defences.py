"""Server side of the defences: strategy wrappers and the SecAgg+ fit workflow.

``wrap_strategy`` stacks the wrappers (Flower's style: each wraps another strategy)::

    DifferentialPrivacy*FixedClipping( DeltaToGlobal( HonestFedAvg ) )

and ``fit_workflow`` swaps DefaultWorkflow's fit step for Flower's ``SecAggPlusWorkflow``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.server.workflow import SecAggPlusWorkflow

from fl_mia.config import CentralDpConfig, DefencesConfig, DpSgdConfig, SecAggConfig
from fl_mia.defences.accounting import REFERENCE_DELTA, central_dp_epsilon


class DeltaToGlobal(Strategy):
    """Hospitals send ``returned − received``; add the aggregated delta to the model sent.

    Under SecAgg+ the hospitals send deltas (``clients.mods.make_delta_mod``) so that
    SecAgg+'s clipping range is never reached. The wrapped strategy averages the
    deltas exactly as it would average weights (FedAvg is linear, so
    ``sent + mean(returned − sent) = mean(returned)``); this wrapper adds the result to
    the global model the server sent this round.
    """

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self._sent: list[np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"DeltaToGlobal({self.strategy!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        self._sent = parameters_to_ndarrays(parameters)
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures) -> tuple[Parameters | None, dict[str, Scalar]]:
        aggregated, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        if aggregated is None or self._sent is None:
            return aggregated, metrics
        deltas = parameters_to_ndarrays(aggregated)
        updated = [
            (np.asarray(sent, np.float64) + np.asarray(delta, np.float64)).astype(sent.dtype)
            if np.issubdtype(sent.dtype, np.floating)
            else np.rint(sent + delta).astype(sent.dtype)
            for sent, delta in zip(self._sent, deltas)
        ]
        return ndarrays_to_parameters(updated), metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures):
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters):
        return self.strategy.evaluate(server_round, parameters)


def wrap_strategy(defences: DefencesConfig, strategy: Strategy, *, sampled_per_round: int) -> Strategy:
    """The honest (or malicious) strategy wrapped by this experiment's server-side defences."""
    if defences.secagg.enabled:
        strategy = DeltaToGlobal(strategy)
    dp = defences.central_dp
    if dp.mode == "client_clipping":
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy, noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clipping_norm, num_sampled_clients=sampled_per_round
        )
    elif dp.mode == "server_clipping":
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clipping_norm, num_sampled_clients=sampled_per_round
        )
    return strategy


def fit_workflow(secagg: SecAggConfig, *, max_weight: float | None):
    """``SecAggPlusWorkflow`` when secure aggregation is on, else None (DefaultWorkflow's own).

    ``max_weight``: an upper bound on any hospital's num_examples (SecAgg+ scales updates by
    n / max_weight ≤ 1), from the composition root that knows the hospitals.
    """
    if not secagg.enabled:
        return None
    return SecAggPlusWorkflow(
        num_shares=secagg.num_shares or 1.0,  # 1.0: every sampled hospital holds a share (SecAgg)
        reconstruction_threshold=secagg.reconstruction_threshold or 0.66,  # Flower's default fraction
        clipping_range=secagg.clipping_range,
        quantization_range=secagg.quantization_range,
        max_weight=max_weight,
        timeout=secagg.timeout_s,
    )


@dataclass(frozen=True)
class RunShape:
    """What the defences' report needs of the federation: its size, rounds and SecAgg+ weight bound."""

    num_hospitals: int
    sampled_per_round: int
    rounds: int
    secagg_max_weight: float | None = None  # None: SecAgg+ is off

    @property
    def secure_aggregation(self) -> bool:
        return self.secagg_max_weight is not None


def privacy_section(
    defences: DefencesConfig, shape: RunShape, fit_metrics: dict[tuple[int, int], dict], *, consistency=None
) -> dict:
    """The ``defences`` block of metrics.json: what is in force, ε, what each ε protects against."""
    section: dict = {"active": defences.active()}
    if defences.secagg.enabled:
        s = defences.secagg
        section["secagg"] = {
            "clipping_range": s.clipping_range,
            "quantization_range": s.quantization_range,
            "max_weight": shape.secagg_max_weight,
            "server_sees": "the sum of the hospitals' deltas and each hospital's metrics and num_examples",
            "max_abs_delta": max((float(m.get("max_abs_delta", 0.0)) for m in fit_metrics.values()), default=None),
        }
    if defences.central_dp.mode != "off":
        section["central_dp"] = hospital_dp_block(defences.central_dp, shape)
    if defences.dp_sgd.enabled:
        section["dp_sgd"] = dp_sgd_block(defences.dp_sgd, fit_metrics)
    if defences.output.mode != "probabilities":
        section["output"] = {
            "mode": defences.output.mode,
            "noise_std": defences.output.noise_std,
            "applies_to": "every prediction attack's queries to the target (fl_mia.defences.output.HardenedTargetView); "
            "the attacker's own shadow models stay unhardened",
        }
    if defences.consistency.mode != "off":
        section["consistency"] = {"mode": defences.consistency.mode, "verdicts": consistency or {}}
    return section


PROTECTS = {
    "patient": "one patient: all of its slices at a hospital together (patient-level DP-SGD)",
    "slice": "one slice (scan); NOT a patient with several slices (see patient_by_group_privacy)",
    "hospital": "one hospital: its whole update in every round it is sampled (DP-FedAvg)",
}


def epsilon_entry(value: float | None, *, unit: str, delta: float, at_reference_delta: float | None) -> dict:
    """metrics.json's ``…epsilon``: the value with its unit (what one neighbouring record is) and δ."""
    return {
        "value": _finite(value) if value is not None else None,
        "unit": unit,
        "delta": delta,
        "value_at_reference_delta": _finite(at_reference_delta) if at_reference_delta is not None else None,
        "reference_delta": REFERENCE_DELTA,
        "protects": PROTECTS[unit],
    }


def hospital_dp_block(dp: CentralDpConfig, shape: RunShape) -> dict:
    """Hospital-level DP (server noise, or hospitals' noise shares under SecAgg+): settings and ε per hospital."""
    rate = shape.sampled_per_round / shape.num_hospitals
    epsilon = central_dp_epsilon(noise_multiplier=dp.noise_multiplier, sample_rate=rate, rounds=shape.rounds, delta=dp.delta)
    at_reference = central_dp_epsilon(
        noise_multiplier=dp.noise_multiplier, sample_rate=rate, rounds=shape.rounds, delta=REFERENCE_DELTA
    )
    if dp.mode == "distributed":
        protects = ("everyone, the server included, as long as SecAgg+ hides each update: each hospital clips and adds "
                    "its share of the noise (std σ·C/√n), so the sum the server opens carries σ·C")
    else:
        protects = "whoever sees the released global models; NOT the server, which adds the noise " + (
            "and sees every clipped update" if dp.mode == "server_clipping" else "(and, without SecAgg+, sees every clipped update)"
        )
    return {
        "mode": dp.mode,
        "noise_multiplier": dp.noise_multiplier,
        "clipping_norm": dp.clipping_norm,
        "sample_rate": rate,
        "rounds": shape.rounds,
        "delta": dp.delta,
        "accountant": "rdp (opacus RDPAccountant: subsampled Gaussian, steps = rounds)",
        "epsilon": epsilon_entry(epsilon, unit="hospital", delta=dp.delta, at_reference_delta=at_reference),
        "reference_delta": REFERENCE_DELTA,
        "epsilon_at_reference_delta": _finite(at_reference),
        "protects_against": protects,
    }


def dp_sgd_block(dp: DpSgdConfig, fit_metrics: dict[tuple[int, int], dict]) -> dict:
    """DP-SGD's ε per hospital after all rounds (later rounds overwrite), with its unit."""
    last: dict[str, dict] = {}
    for (_, hospital), metrics in sorted(fit_metrics.items()):
        if "dp_epsilon" in metrics or "dp_epsilon_at_reference_delta" in metrics:
            last[str(hospital)] = {**last.get(str(hospital), {}), **metrics}
    per_hospital = {h: float(m["dp_epsilon"]) for h, m in last.items() if "dp_epsilon" in m}
    at_reference = {h: float(m["dp_epsilon_at_reference_delta"]) for h, m in last.items() if "dp_epsilon_at_reference_delta" in m}
    deltas = {h: float(m["dp_delta"]) for h, m in last.items() if "dp_delta" in m}
    worst = max(per_hospital, key=per_hospital.get) if per_hospital else None
    block = {
        "unit": dp.unit,
        "epsilon": epsilon_entry(
            per_hospital.get(worst), unit=dp.unit, delta=deltas.get(worst, REFERENCE_DELTA),
            at_reference_delta=max(at_reference.values(), default=None),
        ),
        "epsilon_per_hospital": per_hospital,
        "epsilon_max": max(per_hospital.values(), default=None),
        "delta_per_hospital": deltas,
        "reference_delta": REFERENCE_DELTA,
        "epsilon_per_hospital_at_reference_delta": at_reference,
        "epsilon_max_at_reference_delta": max(at_reference.values(), default=None),
        "noise_multiplier": next((float(m["dp_noise_multiplier"]) for m in last.values() if "dp_noise_multiplier" in m), None),
        "max_grad_norm": dp.max_grad_norm,
        "accountant": dp.accountant,
        "protects_against": "everyone, the server included: each hospital adds its own noise before anything leaves it",
    }
    group = {h: m for h, m in last.items() if "dp_patient_epsilon_by_group_privacy" in m}
    if group:
        h = max(group, key=lambda k: group[k]["dp_patient_epsilon_by_group_privacy"])
        block["patient_by_group_privacy"] = {
            "epsilon": _finite(float(group[h]["dp_patient_epsilon_by_group_privacy"])),
            "delta": float(group[h]["dp_patient_delta_by_group_privacy"]),
            "max_slices_per_patient": int(group[h]["dp_max_slices_per_patient"]),
            "from": "group privacy over a patient's slices of the slice-level ε at δ = 1e-5 (k·ε, k·e^((k−1)ε)·δ); "
            "a δ of 1 means no per-patient guarantee at all",
            "hospital": h,
        }
    return block


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def defence_outputs(defences: DefencesConfig, shape: RunShape, round_log, *, run_id: int) -> dict:
    """metrics.json's ``defences`` (names in force) and ``defence_report`` (settings, ε, verdicts)."""
    from fl_mia.defences.consistency import HospitalChannel

    fit_metrics = {
        (row["round"], row["hospital"]): row
        for row in round_log.rows()
        if row["hospital"] != "all" and row["participated"]
    }
    verdicts = None
    if defences.consistency.mode != "off":
        channel = HospitalChannel(run_id=run_id)
        verdicts = channel.verdicts()
        channel.remove()
    section = privacy_section(defences, shape, fit_metrics, consistency=verdicts)
    return {"defences": section.pop("active"), "defence_report": section}
