"""Server side of one experiment: directory, strategy, workflow, then the run folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.compat import LegacyContext
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp.grid import Grid

from fl_mia.checkpoint import Checkpoint, Checkpointer, config_fingerprint
from fl_mia.config import ExperimentConfig
from fl_mia.devices import process_device
from fl_mia.global_eval import GlobalModelEvaluator
from fl_mia.models import build_experiment_model, get_weights
from fl_mia.attacker.poisoning.registry import make_poisoner
from fl_mia.attacker.poisoning.threat_summary import models_differed, threat_report
from fl_mia.attacker.knowledge import CandidateSet
from fl_mia.attacker.knowledge_cache import knowledge_cache_folder
from fl_mia.attacker.predictions.shadows import ShadowStore, TargetRecipe
from fl_mia.attacker.server_attacker import ServerAttacker
from fl_mia.data import build_attacker_population, build_hospital, forget_rendered_hospitals, num_classes, patient_names
from fl_mia.referee.candidates import MembershipLedger, build_candidates
from fl_mia.referee.evaluation import Referee
from fl_mia.referee.scopes import ScoringScope
from fl_mia.run_outputs import write_federation_outputs
from fl_mia.round_log import RoundLog, RoundProgress
from fl_mia.seeding import int_seed
from server.defences import RunShape, defence_outputs, fit_workflow, wrap_strategy
from fl_mia.contracts import DP_PRIOR_STEPS_KEY
from server.hospital_directory import HospitalDiscovery
from server.round_timeout import RoundDeadlines, RoundTimeoutGrid
from strategies.honest import HonestFedAvg, PartitionSeededClientManager, fit_config_fn
from strategies.malicious import PoisoningFedAvg
from strategies.round_offset import RoundOffsetStrategy
from strategies.server_momentum import ServerMomentum, ServerMomentumStrategy

logger = logging.getLogger("fl_mia")


def global_evaluator(cfg: ExperimentConfig) -> GlobalModelEvaluator:
    """The testbed's utility instrument, on the server's device, over every hospital's test split."""
    return GlobalModelEvaluator(
        data=cfg.data, federation=cfg.federation, model=cfg.model, training=cfg.training,
        device=process_device(cfg.simulation, role="server"), seed=cfg.seed,
    )


def initial_weights(cfg: ExperimentConfig) -> list[np.ndarray]:
    """The untrained global model, a function of the seed alone."""
    torch.manual_seed(int_seed(cfg.seed, "initial-model"))
    return get_weights(build_experiment_model(cfg.model, cfg.data))


def build_strategy(
    cfg: ExperimentConfig,
    directory: dict[int, int],
    round_log: RoundLog,
    evaluator,
    *,
    initial: list[np.ndarray] | None = None,
    after_evaluation=None,
    fit_config_extra: dict | None = None,
    update_observer=None,
    poisoner=None,
) -> HonestFedAvg:
    """``initial``: the global model to start from (a checkpoint's); ``after_evaluation(round, weights)``
    runs once each round's global model is evaluated (privacy observation, then the checkpoint).
    ``update_observer`` gets every hospital's sent and returned model (the update attacks);
    ``poisoner`` makes the server dishonest (:class:`strategies.malicious.PoisoningFedAvg`)."""

    def evaluate_fn(server_round: int, weights, _config):
        evaluation = evaluator.evaluate(weights)
        round_log.on_evaluation(server_round, evaluation)
        if after_evaluation is not None:
            after_evaluation(server_round, weights)
        return evaluation["overall"]["loss"], {"dice": evaluation["overall"]["dice"]}

    k = cfg.federation.num_hospitals
    sampled = max(1, int(round(cfg.federation.fraction_fit * k)))
    strategy_class, extra = HonestFedAvg, {}
    if poisoner is not None:
        strategy_class, extra = PoisoningFedAvg, {"poisoner": poisoner, "threat": cfg.threat}
    return strategy_class(
        **extra,
        directory=directory,
        observer=[round_log] + ([update_observer] if update_observer is not None else []),
        keep_weights=update_observer is not None,
        secure_aggregation=cfg.defences.secagg.enabled,
        fraction_fit=cfg.federation.fraction_fit,
        fraction_evaluate=0.0,  # utility is measured centrally on every hospital's test split
        min_fit_clients=sampled,
        min_available_clients=k,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=fit_config_fn(fit_config_extra),
        fit_metrics_aggregation_fn=weighted_train_loss,
        initial_parameters=ndarrays_to_parameters(initial if initial is not None else initial_weights(cfg)),
    )


def secagg_max_weight(cfg: ExperimentConfig) -> float | None:
    """An upper bound on any hospital's num_examples (SecAgg+ scales updates by n / max_weight ≤ 1); None without SecAgg+."""
    if not cfg.defences.secagg.enabled:
        return None
    if cfg.defences.central_dp.mode == "distributed":
        return 1.0  # every hospital reports weight 1 (uniform DP-FedAvg, clients/mods.py)
    if cfg.data.source != "phantom":
        from fl_mia.data import build_hospital

        return float(max(len(build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed).train) for k in range(cfg.federation.num_hospitals)))
    return float(max(cfg.federation.hospital_sizes()) * cfg.data.phantom.slices_per_patient)


def run_shape(cfg: ExperimentConfig) -> RunShape:
    """What the defences and their report need of the federation."""
    return RunShape(
        num_hospitals=cfg.federation.num_hospitals, sampled_per_round=cfg.sampled_per_round(),
        rounds=cfg.federation.rounds, secagg_max_weight=secagg_max_weight(cfg),
    )


def draw_candidates(cfg: ExperimentConfig) -> tuple[CandidateSet, MembershipLedger]:
    """The referee's candidates and their ledger, drawn from every hospital's data.

    The referee keeps the ledger; the attacker (the server itself, in this process) gets the
    candidates alone."""
    return build_candidates(
        cfg.referee,
        hospital=lambda k: build_hospital(cfg.data, cfg.federation, k, seed=cfg.seed),
        num_hospitals=cfg.federation.num_hospitals,
        seed=cfg.seed,
        task=cfg.data.task,
    )


def scoring_scope(cfg: ExperimentConfig, poisoner) -> ScoringScope:
    """The hospitals the threat targets and whether they were sent other models (the referee scores by it)."""
    if poisoner is None:
        return ScoringScope(targets=tuple(cfg.threat.target_hospitals))
    return ScoringScope(
        targets=poisoner.declaration(poison_rounds=cfg.threat.poison_rounds).targets or tuple(cfg.threat.target_hospitals),
        models_differed=models_differed(
            poisoner, poison_rounds=cfg.threat.poison_rounds, rounds_run=cfg.federation.rounds,
            num_hospitals=cfg.federation.num_hospitals,
        ),
    )


def make_referee(
    cfg: ExperimentConfig, candidates: CandidateSet, ledger: MembershipLedger, run_dir: Path | None, *, poisoner=None
) -> Referee:
    return Referee(
        cfg.referee, candidates, ledger, run_dir, seed=cfg.seed, task=cfg.data.task, run_name=cfg.name,
        scope=scoring_scope(cfg, poisoner), patient_names=patient_names(cfg.data),
    )


def _dp_shadow_trainer(cfg: ExperimentConfig):
    """One round of the target's DP-SGD for the attacker's ``as_target`` shadows (None: no DP-SGD)."""
    if not cfg.defences.dp_sgd.enabled:
        return None
    from fl_mia.defences.dp_sgd import train_local_dp  # Opacus only when the target uses it

    def train_dp(model, shard, *, secret: int, tags: tuple) -> None:
        train_local_dp(
            model, shard, cfg.defences.dp_sgd, cfg.training, rounds=cfg.federation.rounds, history=[], secret=secret, tags=tags,
        )

    return train_dp


def _server_model_maker(cfg: ExperimentConfig):
    device = process_device(cfg.simulation, role="server")

    def make_model():
        return build_experiment_model(cfg.model, cfg.data, device=device)

    return make_model


def make_shadow_store(cfg: ExperimentConfig, folder: Path | None, make_model=None) -> ShadowStore:
    """The attacker's shadow models, trained with the target's recipe and cached in ``folder``
    (and, inside a suite, in the suite's knowledge folder that the cells share)."""
    recipe = TargetRecipe(
        model=cfg.model, training=cfg.training, federation=cfg.federation, sampled_per_round=cfg.sampled_per_round(),
        dp_sgd=cfg.defences.dp_sgd, output=cfg.defences.output, threads_per_client=cfg.simulation.threads_per_client,
    )
    return ShadowStore(
        cfg.attacker.shadows, recipe, seed=cfg.seed, folder=folder,
        make_model=make_model or _server_model_maker(cfg), train_dp=_dp_shadow_trainer(cfg),
        shared_folder=shared / "shadows" if (shared := knowledge_cache_folder()) is not None else None,
    )


def make_server_attacker(cfg: ExperimentConfig, candidates: CandidateSet, run_dir: Path | None) -> ServerAttacker | None:
    """The run's attacker, or None when the privacy step is off, lists no attack, or has no data."""
    if not cfg.referee.enabled or not cfg.attacker.prediction_attacks:
        return None
    if cfg.federation.attacker_patients < 2:
        logger.warning("privacy step skipped: federation.attacker_patients < 2 leaves the attacker no shadow data")
        return None
    make_model = _server_model_maker(cfg)
    shadows = make_shadow_store(cfg, Path(run_dir) / "shadows" if run_dir is not None else None, make_model)
    return ServerAttacker(
        cfg.attacker, candidates, population=build_attacker_population(cfg.data, cfg.federation, seed=cfg.seed), shadows=shadows, training=cfg.training,
        output=cfg.defences.output, make_model=make_model, num_hospitals=cfg.federation.num_hospitals,
        total_rounds=cfg.federation.rounds, seed=cfg.seed, classes=num_classes(cfg.data.task),
    )


def judge_the_attacker(
    cfg: ExperimentConfig,
    attacker: ServerAttacker,
    candidates: CandidateSet,
    ledger: MembershipLedger,
    run_dir: Path,
    round_log: RoundLog,
    final: list[np.ndarray],
    poisoner=None,
) -> dict:
    """The attacker scores the final model; the referee joins the scores with the ledger."""
    finishing = time.perf_counter()
    scores = attacker.finish(final)
    referee = make_referee(cfg, candidates, ledger, run_dir, poisoner=poisoner)
    # The accountant's sample-level ε (δ = 1e-5) of the most exposed hospital, for the ROC's DP bound.
    dp_epsilons = round_log.latest_fit_metric("dp_epsilon_at_reference_delta")
    section = referee.judge(
        scores, population_images=len(attacker.knowledge.population), shadows=attacker.shadows,
        dp_epsilon=max(dp_epsilons.values()) if dp_epsilons else None,
    )
    section["candidate_set"]["finish_seconds"] = time.perf_counter() - finishing
    if dp_epsilons:
        from fl_mia.referee.dp_audit import audit_against_accountant

        section["dp_audit"] = audit_against_accountant(
            section, accountant_epsilon=max(dp_epsilons.values()), unit=cfg.defences.dp_sgd.unit
        )
    return section


def make_server_poisoner(cfg: ExperimentConfig, attacker: ServerAttacker | None):
    """The dishonest server's poisoner, armed with what the attacker knows (never the ledger)."""
    if cfg.threat.poisoning == "none":
        return None
    return make_poisoner(cfg.threat, attacker.knowledge, build_experiment_model(cfg.model, cfg.data))


def weighted_train_loss(fit_metrics: list[tuple[int, dict]]) -> dict:
    reported = [(n, m) for n, m in fit_metrics if "train_loss" in m]  # hospitals under DP-SGD keep theirs
    total = sum(n for n, _ in reported)
    return {"train_loss": sum(n * m["train_loss"] for n, m in reported) / total} if total else {}


def log_progress(progress: RoundProgress) -> None:
    if progress.round == 0:
        logger.info("round 0 (untrained model): Dice %.3f", progress.overall["dice"])
        return
    logger.info(
        "round %d/%d: %d hospitals replied, %d failed; global Dice %.3f, IoU %.3f",
        progress.round, progress.total_rounds, progress.replies, progress.failures,
        progress.overall["dice"], progress.overall["iou"],
    )


def _checkpointer(
    cfg: ExperimentConfig, run_dir: Path, resume: Checkpoint | None, *, round_log: RoundLog, client_manager, attacker, poisoner,
    server_momentum: ServerMomentum | None,
) -> Checkpointer:
    """The per-round checkpoint of everything a resume must restore, in a fixed order."""
    checkpointer = Checkpointer(
        run_dir, config_fingerprint(cfg.to_toml_dict()), wall_time_before_s=resume.wall_time_s if resume else 0.0
    )
    checkpointer.register("round_log", round_log)
    checkpointer.register("client_manager", client_manager)
    if server_momentum is not None:
        checkpointer.register("server_momentum", server_momentum)
    if attacker is not None:
        checkpointer.register("privacy", attacker)
    if poisoner is not None:
        checkpointer.register("poisoner", poisoner)
        if attacker is not None and attacker.updates is not None:
            attacker.updates.add_signal_source(poisoner)  # e.g. the trap's trace, before a resume restores it
    return checkpointer


def layered_strategy(cfg: ExperimentConfig, strategy, *, server_momentum: ServerMomentum | None):
    """The honest (or poisoning) strategy inside the defences' wrappers, inside server momentum if any.

    Momentum is outermost: it steps with the released aggregate (noised under DP), so it is
    post-processing; inside a DP wrapper it would carry un-noised updates into later rounds.
    """
    strategy = wrap_strategy(cfg.defences, strategy, sampled_per_round=cfg.sampled_per_round())
    return strategy if server_momentum is None else ServerMomentumStrategy(strategy, server_momentum)


def _train_rounds(
    grid: Grid, context: Context, cfg: ExperimentConfig, strategy, *, shape: RunShape, directory: dict[int, int],
    client_manager, round_log: RoundLog, done: int,
) -> list[np.ndarray]:
    """Flower's DefaultWorkflow (SecAgg+ when asked) over the rounds left after ``done``; the final global model."""
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=cfg.federation.rounds - done),
        strategy=RoundOffsetStrategy(strategy, round_offset=done),
        client_manager=client_manager,
    )
    deadlines = RoundDeadlines(
        round_timeout_s=cfg.failures.round_timeout_s, first_round_allowance_s=cfg.failures.first_round_allowance_s
    )
    timed_grid = RoundTimeoutGrid(
        grid, deadlines=deadlines, directory=directory, round_offset=done, on_outcomes=round_log.on_fit_outcomes
    )
    DefaultWorkflow(fit_workflow=fit_workflow(cfg.defences.secagg, max_weight=shape.secagg_max_weight))(timed_grid, legacy)
    return parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    )


def run_federation(
    grid: Grid,
    context: Context,
    cfg: ExperimentConfig,
    run_dir: Path,
    on_round_end=None,
    *,
    resume: Checkpoint | None = None,
) -> None:
    """Run every round of FedAvg over the hospitals and write the run folder's outputs.

    With ``resume``, continue after the checkpoint's round: same absolute round numbers,
    same sampler state, same round log, so the outputs equal an uninterrupted run's.
    """
    started = time.perf_counter()
    k = cfg.federation.num_hospitals
    discovery = HospitalDiscovery(grid, expected=k)  # the hospitals start up while the server prepares below
    round_log = RoundLog(num_hospitals=k, total_rounds=cfg.federation.rounds, on_round_end=on_round_end or log_progress)
    evaluator = global_evaluator(cfg)
    candidates, ledger = draw_candidates(cfg) if cfg.referee.enabled else (None, None)
    attacker = make_server_attacker(cfg, candidates, run_dir) if candidates is not None else None
    if attacker is not None:
        attacker.fit_attacks()  # shadows and calibrations need only the attacker's knowledge
    forget_rendered_hospitals()  # the server keeps the test splits and candidates, not every hospital's data
    directory = discovery.directory()
    client_manager = PartitionSeededClientManager(seed=cfg.seed, directory=directory)
    poisoner = make_server_poisoner(cfg, attacker)
    server_momentum = (
        ServerMomentum(learning_rate=cfg.federation.server_learning_rate, momentum=cfg.federation.server_momentum)
        if cfg.federation.uses_server_momentum()
        else None
    )
    checkpointer = _checkpointer(
        cfg, run_dir, resume, round_log=round_log, client_manager=client_manager, attacker=attacker, poisoner=poisoner,
        server_momentum=server_momentum,
    )
    done = checkpointer.restore(resume) if resume is not None else 0

    def after_round(server_round: int, weights: list[np.ndarray]) -> None:
        if attacker is not None:
            attacker.observe_round(server_round, weights)
        checkpointer.save(server_round=server_round, weights=weights, wall_time_s=time.perf_counter() - started)

    strategy = layered_strategy(
        cfg,
        build_strategy(
            cfg, directory, round_log, evaluator,
            initial=resume.weights if resume is not None else None,
            after_evaluation=lambda server_round, weights: after_round(server_round, weights),
            # Fresh nodes after a resume rebuild their DP-SGD accountant from these step counts.
            fit_config_extra={
                f"{DP_PRIOR_STEPS_KEY}{hospital}": int(steps)
                for hospital, steps in round_log.latest_fit_metric("dp_steps_total").items()
            },
            update_observer=attacker.updates if attacker is not None else None,
            poisoner=poisoner,
        ),
        server_momentum=server_momentum,
    )
    shape = run_shape(cfg)
    final = _train_rounds(
        grid, context, cfg, strategy, shape=shape, directory=directory, client_manager=client_manager,
        round_log=round_log, done=done,
    )
    privacy_section = None if attacker is None else judge_the_attacker(cfg, attacker, candidates, ledger, run_dir, round_log, final, poisoner)
    write_federation_outputs(
        run_dir, round_log, final_weights=final, model=evaluator.model,
        experiment=cfg.name, seed=cfg.seed, threat_model=cfg.threat.threat_model, num_hospitals=k,
        wall_time_s=checkpointer.wall_time_before_s + time.perf_counter() - started, privacy=privacy_section,
        threat=threat_report(cfg.threat, round_log, poisoner, num_hospitals=k, secure_aggregation=shape.secure_aggregation,
                             final_weights=final, evaluator=evaluator),
        defences=defence_outputs(cfg.defences, shape, round_log, run_id=context.run_id),
    )
