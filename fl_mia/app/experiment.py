"""The experiment runner: config → run folder → Flower simulation → outputs.

The only module of ``fl_mia`` that composes the Flower apps (``clients/``, ``server/``);
everything it calls below them is plain Python, NumPy and torch.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_mia.checkpoint import Checkpoint
from fl_mia.config import ExperimentConfig
from fl_mia.run_outputs import read_metrics
from fl_mia.round_log import RoundProgress
from fl_mia.run_folder import create_run_folder, set_status, write_toml
from fl_mia.app.interrupt import mark_interrupted, stop_on_first_signal
from fl_mia.app.run_logging import run_logging
from fl_mia.app.simulation_resources import backend_config, check_resources
from fl_mia.stop_request import STOP

logger = logging.getLogger("fl_mia")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def run_experiment(
    cfg: ExperimentConfig,
    *,
    out: Path | None = None,
    runs_root: Path = Path("runs"),
    on_round_end: Callable[[RoundProgress], None] | None = None,
) -> RunResult:
    """Run one experiment end to end and return its run folder and metrics.

    Resource problems are caught before Ray starts; the run folder is marked
    ``complete`` only after every output is written, ``failed`` otherwise.
    """
    check_resources(cfg.simulation, num_hospitals=cfg.federation.num_hospitals)
    run_dir = create_run_folder(cfg.name, out=out, runs_root=runs_root)
    write_toml(run_dir / "config.toml", cfg.to_toml_dict())
    return _run_in_folder(cfg, run_dir, on_round_end, resume=None)


def resume_experiment(
    run_dir: Path,
    *,
    cfg: ExperimentConfig | None = None,
    on_round_end: Callable[[RoundProgress], None] | None = None,
) -> RunResult:
    """Continue an interrupted run in its own folder from its last checkpoint.

    ``cfg``, when given, must equal the run's config. The outputs equal an uninterrupted
    run's except the wall-clock fields (docs/reproducibility.md).
    """
    from fl_mia.app.resume import resumable_run

    saved, checkpoint = resumable_run(Path(run_dir), cfg)
    check_resources(saved.simulation, num_hospitals=saved.federation.num_hospitals)
    logger.info("resuming %s after round %d", run_dir, checkpoint.round)
    return _run_in_folder(saved, Path(run_dir), on_round_end, resume=checkpoint)


def _run_in_folder(cfg: ExperimentConfig, run_dir: Path, on_round_end, *, resume: Checkpoint | None) -> RunResult:
    # pid and host let a later --resume refuse a run that is still alive.
    running = {"pid": os.getpid(), "host": socket.gethostname()}
    if resume is not None:
        running["resumed_after_round"] = resume.round
    set_status(run_dir, "running", **running)
    started = time.perf_counter()
    try:
        with run_logging(run_dir), stop_on_first_signal(run_dir):
            _simulate(cfg, run_dir, on_round_end, resume=resume)
            if not (run_dir / "metrics.json").is_file():
                # Flower's run_simulation returns normally when its runtime stops before the
                # ServerApp finished (it logs the cause, if any, and moves on): never call that complete.
                raise SimulationEndedEarly(
                    f"{run_dir}: the simulation ended before the server wrote its results (no metrics.json); "
                    "see run.log, then continue it with fl-mia run --resume RUN_DIR or run it again"
                )
    except BaseException as error:
        _log_traceback(run_dir, error)
        if STOP.is_set():  # whatever Flower raised on the way out, the user stopped the run
            raise mark_interrupted(run_dir) from None
        set_status(run_dir, "failed", error=f"{type(error).__name__}: {error}")
        error.fl_mia_run_dir = run_dir  # for the CLI's short report (failed_run_folder)
        raise
    set_status(run_dir, "complete", wall_time_s=time.perf_counter() - started)
    return RunResult(run_dir, read_metrics(run_dir))


class SimulationEndedEarly(RuntimeError):
    """Flower's simulation returned without the ServerApp having written the run's results."""


def _log_traceback(run_dir: Path, error: BaseException) -> None:
    """Append the full traceback to ``run.log``: the console gets one paragraph (fl_mia.app.cli)."""
    with open(run_dir / "run.log", "a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} fl_mia ERROR the run failed\n")
        log.write("".join(traceback.format_exception(error)))


def failed_run_folder(error: BaseException) -> Path | None:
    """The run folder of a run that raised ``error``, if it got as far as having one."""
    return getattr(error, "fl_mia_run_dir", None)


def _simulate(cfg: ExperimentConfig, run_dir: Path, on_round_end, *, resume: Checkpoint | None = None) -> None:
    # Imported here: the library core stays importable without Flower's apps.
    from flwr.simulation import run_simulation

    from clients.client_app import make_client_app
    from server.federation import log_progress
    from server.server_app import make_server_app

    def progress(event: RoundProgress) -> None:
        log_progress(event)
        if on_round_end is not None:
            on_round_end(event)

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray prestarts one idle worker per CPU when the driver connects; Flower's hospitals run in
    # actors, which get processes of their own, so those workers only took start-up CPU (~0.6 s
    # of ray.init here, bench/suite_cost.py part 3).
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
    run_simulation(
        server_app=make_server_app(cfg, run_dir, progress, resume=resume),
        client_app=make_client_app(cfg),
        num_supernodes=cfg.federation.num_hospitals,
        backend_config=backend_config(cfg.simulation),
    )
