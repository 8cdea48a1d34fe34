"""The experiment runner: config → run folder → Flower simulation → outputs.

The only module of ``fl_mia`` that composes the Flower apps (``clients/``, ``server/``);
everything it calls below them is plain Python, NumPy and torch.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_mia.config import ExperimentConfig
from fl_mia.reporting import read_metrics
from fl_mia.round_log import RoundProgress
from fl_mia.run_folder import create_run_folder, set_status, write_toml
from fl_mia.simulation_resources import backend_config, check_resources

logger = logging.getLogger("fl_mia")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


class _HideKnownDeprecation(logging.Filter):
    """``run_simulation`` is deprecated in favour of ``flwr run``; fl-mia supports both on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in str(record.msg)


@contextmanager
def run_logging(run_dir: Path, *, console_level: int = logging.WARNING):
    """Send fl-mia's and Flower's logs to ``run.log``; keep the console for warnings."""
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger("fl_mia"), logging.getLogger("flwr")]
    hide = _HideKnownDeprecation()
    saved = []
    for log in loggers:
        saved.append((log, log.level, [h.level for h in log.handlers], log.propagate))
        log.setLevel(logging.INFO)
        log.propagate = False  # Flower or Ray may have configured the root logger
        for existing in log.handlers:
            existing.setLevel(max(existing.level, console_level))
            existing.addFilter(hide)
        log.addHandler(handler)
    try:
        yield
    finally:
        for log, level, handler_levels, propagate in saved:
            log.removeHandler(handler)
            log.setLevel(level)
            log.propagate = propagate
            for existing, previous in zip(log.handlers, handler_levels):
                existing.setLevel(previous)
                existing.removeFilter(hide)
        handler.close()


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
    set_status(run_dir, "running")
    started = time.perf_counter()
    try:
        with run_logging(run_dir):
            _simulate(cfg, run_dir, on_round_end)
    except BaseException as error:
        set_status(run_dir, "failed", error=f"{type(error).__name__}: {error}")
        raise
    set_status(run_dir, "complete", wall_time_s=time.perf_counter() - started)
    return RunResult(run_dir, read_metrics(run_dir))


def _simulate(cfg: ExperimentConfig, run_dir: Path, on_round_end) -> None:
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
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
    run_simulation(
        server_app=make_server_app(cfg, run_dir, progress),
        client_app=make_client_app(cfg),
        num_supernodes=cfg.federation.num_hospitals,
        backend_config=backend_config(cfg.simulation),
    )
