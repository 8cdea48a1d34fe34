"""The ServerApp's side of ``flwr run .``: the run folder, its ``run.log``, and each log line once.

Under ``flwr run`` the ServerApp's process output is what the user sees (``flwr run
--stream`` prints it). This module makes that output say where the run folder is and
print a line per round (``fl-mia deploy`` echoes those lines), and writes the same log
into the run folder's ``run.log`` as ``fl-mia run`` does.
"""

from __future__ import annotations

import logging
import traceback
from contextlib import contextmanager
from pathlib import Path

from fl_mia.app.run_logging import run_logging
from fl_mia.console_logging import drop_opacus_root_handler, flower_lines_once
from fl_mia.round_log import RoundProgress, round_line

logger = logging.getLogger("fl_mia")


@contextmanager
def flwr_run_logging(run_dir: Path):
    """fl-mia's and Flower's log to ``run_dir/run.log`` and, at INFO, once each to the console
    (:mod:`fl_mia.console_logging` says why Flower's lines came twice).

    fl-mia's records use Flower's console handler, so they reach the ``flwr run`` stream
    formatted as Flower's own lines.
    """
    from flwr.common.logger import console_handler

    flower_lines_once()
    drop_opacus_root_handler()
    fl_mia_logger = logging.getLogger("fl_mia")
    with run_logging(run_dir, console_level=logging.INFO):
        fl_mia_logger.addHandler(console_handler)
        try:
            yield
        except BaseException as error:
            with open(run_dir / "run.log", "a", encoding="utf-8") as log:
                log.write("".join(traceback.format_exception(error)))
            raise
        finally:
            fl_mia_logger.removeHandler(console_handler)


def log_round(progress: RoundProgress) -> None:
    """The round line ``fl-mia run`` prints, as a log record (``fl-mia deploy`` picks it out of the stream)."""
    logger.info(round_line(progress))
