"""Server side of the defences: strategy wrappers and the SecAgg+ fit workflow.

``wrap_strategy`` stacks the wrappers (Flower's style: each wraps another strategy)::

    DifferentialPrivacy*FixedClipping( DeltaToGlobal( HonestFedAvg ) )

and ``fit_workflow`` swaps DefaultWorkflow's fit step for Flower's ``SecAggPlusWorkflow``.
"""

from __future__ import annotations

import math

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

from fl_mia.config import ExperimentConfig
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


def wrap_strategy(cfg: ExperimentConfig, strategy: Strategy) -> Strategy:
    """The honest (or malicious) strategy wrapped by this experiment's server-side defences."""
    defences = cfg.defences
    if defences.secagg.enabled:
        strategy = DeltaToGlobal(strategy)
    dp = defences.central_dp
    if dp.mode == "client_clipping":
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy, noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clipping_norm, num_sampled_clients=cfg.sampled_per_round()
        )
    elif dp.mode == "server_clipping":
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clipping_norm, num_sampled_clients=cfg.sampled_per_round()
        )
    return strategy


def secagg_max_weight(cfg: ExperimentConfig) -> float:
    """An upper bound on any hospital's num_examples (SecAgg+ scales updates by n / max_weight ≤ 1)."""
    if cfg.data.source != "phantom":
        from fl_mia.data import build_hospital

        return float(max(len(build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed).train) for k in range(cfg.federation.num_hospitals)))
    return float(max(cfg.federation.hospital_sizes()) * cfg.data.phantom.slices_per_patient)


def fit_workflow(cfg: ExperimentConfig):
    """``SecAggPlusWorkflow`` when secure aggregation is on, else None (DefaultWorkflow's own)."""
    secagg = cfg.defences.secagg
    if not secagg.enabled:
        return None
    return SecAggPlusWorkflow(
        num_shares=secagg.num_shares or 1.0,  # 1.0: every sampled hospital holds a share (SecAgg)
        reconstruction_threshold=secagg.reconstruction_threshold or 0.66,  # Flower's default fraction
        clipping_range=secagg.clipping_range,
        quantization_range=secagg.quantization_range,
        max_weight=secagg_max_weight(cfg),
        timeout=secagg.timeout_s,
    )


def privacy_section(cfg: ExperimentConfig, fit_metrics: dict[tuple[int, int], dict], *, consistency=None) -> dict:
    """The ``defences`` block of metrics.json: what is in force, ε, what each ε protects against."""
    defences = cfg.defences
    section: dict = {"active": defences.active()}
    if defences.secagg.enabled:
        s = defences.secagg
        section["secagg"] = {
            "clipping_range": s.clipping_range,
            "quantization_range": s.quantization_range,
            "max_weight": secagg_max_weight(cfg),
            "server_sees": "the sum of the hospitals' deltas and each hospital's metrics and num_examples",
            "max_abs_delta": max((float(m.get("max_abs_delta", 0.0)) for m in fit_metrics.values()), default=None),
        }
    dp = defences.central_dp
    if dp.mode != "off":
        rate = cfg.sampled_per_round() / cfg.federation.num_hospitals
        section["central_dp"] = {
            "mode": dp.mode,
            "noise_multiplier": dp.noise_multiplier,
            "clipping_norm": dp.clipping_norm,
            "sample_rate": rate,
            "rounds": cfg.federation.rounds,
            "delta": dp.delta,
            "accountant": "rdp (opacus RDPAccountant: subsampled Gaussian, steps = rounds)",
            "epsilon": _finite(central_dp_epsilon(noise_multiplier=dp.noise_multiplier, sample_rate=rate, rounds=cfg.federation.rounds, delta=dp.delta)),
            "reference_delta": REFERENCE_DELTA,
            "epsilon_at_reference_delta": _finite(central_dp_epsilon(
                noise_multiplier=dp.noise_multiplier, sample_rate=rate, rounds=cfg.federation.rounds, delta=REFERENCE_DELTA
            )),
            "protects_against": "whoever sees the released global models; NOT the server, which adds the noise "
            + ("and sees every clipped update" if dp.mode == "server_clipping" else "(and, without SecAgg+, sees every clipped update)"),
        }
    if defences.dp_sgd.enabled:
        per_hospital: dict[str, float] = {}
        at_reference: dict[str, float] = {}
        for (_, hospital), metrics in sorted(fit_metrics.items()):
            if "dp_epsilon" in metrics:
                per_hospital[str(hospital)] = float(metrics["dp_epsilon"])  # later rounds overwrite: ε after all rounds
            if "dp_epsilon_at_reference_delta" in metrics:
                at_reference[str(hospital)] = float(metrics["dp_epsilon_at_reference_delta"])
        section["dp_sgd"] = {
            "epsilon_per_hospital": per_hospital,
            "epsilon_max": max(per_hospital.values(), default=None),
            "delta_per_hospital": {str(h): float(m["dp_delta"]) for (_, h), m in sorted(fit_metrics.items()) if "dp_delta" in m},
            "reference_delta": REFERENCE_DELTA,
            "epsilon_per_hospital_at_reference_delta": at_reference,
            "epsilon_max_at_reference_delta": max(at_reference.values(), default=None),
            "noise_multiplier": next((float(m["dp_noise_multiplier"]) for m in fit_metrics.values() if "dp_noise_multiplier" in m), None),
            "max_grad_norm": defences.dp_sgd.max_grad_norm,
            "accountant": defences.dp_sgd.accountant,
            "protects_against": "everyone, the server included: each hospital adds its own noise before anything leaves it",
        }
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


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def defence_outputs(cfg: ExperimentConfig, round_log, *, run_id: int) -> dict:
    """metrics.json's ``defences`` (names in force) and ``defence_report`` (settings, ε, verdicts)."""
    from fl_mia.defences.consistency import HospitalChannel

    fit_metrics = {
        (row["round"], row["hospital"]): row
        for row in round_log.rows()
        if row["hospital"] != "all" and row["participated"]
    }
    verdicts = None
    if cfg.defences.consistency.mode != "off":
        channel = HospitalChannel(run_id=run_id)
        verdicts = channel.verdicts()
        channel.remove()
    section = privacy_section(cfg, fit_metrics, consistency=verdicts)
    return {"defences": section.pop("active"), "defence_report": section}
