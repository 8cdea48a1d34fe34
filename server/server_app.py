"""Flower ServerApp.

``app`` serves ``flwr run .`` (experiment file and run folder from the run config);
``make_server_app(cfg, run_dir)`` serves ``fl-mia run``, whose simulation hands the
server an empty run config.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.server import ServerApp
from flwr.serverapp.grid import Grid

from fl_mia.run_config import experiment_from_run_config, run_folder_from_run_config
from fl_mia.config import ExperimentConfig
from fl_mia.app.flwr_run import flwr_run_logging, log_round
from fl_mia.app.preflight import preflight
from fl_mia.console_logging import flower_lines_once
from fl_mia.devices import torch_threads
from fl_mia.run_folder import set_status
from server.federation import run_federation

logger = logging.getLogger("fl_mia")
# Flower's lines once: opacus, imported on the way, gives the root logger a handler of its own.
flower_lines_once()


def make_server_app(
    cfg: ExperimentConfig | None = None, run_dir: Path | None = None, on_round_end=None, *, resume=None
) -> ServerApp:
    """``resume``: a :class:`fl_mia.checkpoint.Checkpoint` of ``run_dir`` to continue from."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        # The server computes with simulation.server_threads, not the process's default (every core
        # locally, the task's CPUs on a Ray node), so that a run scores the same wherever it runs;
        # hospitals do the same with threads_per_client.
        if cfg is not None and run_dir is not None:
            with torch_threads(cfg.simulation.server_threads):
                run_federation(grid, context, cfg, run_dir, on_round_end, resume=resume)
            return
        # `flwr run .`: this process owns the run folder from start to finish.
        # The one place under `flwr run` where the experiment is checked beyond its schema;
        # hospitals read the same file and trust this check.
        experiment = preflight(experiment_from_run_config(context.run_config))
        folder = run_folder_from_run_config(context.run_config, name=experiment.name, resolved=experiment.to_toml_dict())
        with flwr_run_logging(folder):
            logger.info("run folder: %s", folder.resolve())
            try:
                with torch_threads(experiment.simulation.server_threads):
                    run_federation(grid, context, experiment, folder, log_round)
            except BaseException as error:
                set_status(folder, "failed", error=f"{type(error).__name__}: {error}")
                logger.error("the run failed (%s: %s); details in %s", type(error).__name__, error, folder / "run.log")
                raise
            set_status(folder, "complete")
            logger.info("run complete; run folder: %s", folder.resolve())

    return app


app = make_server_app()
