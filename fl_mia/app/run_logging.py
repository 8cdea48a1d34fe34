"""The run folder's ``run.log``: fl-mia's and Flower's log records there, the console kept for warnings.

Shared by ``fl-mia run`` (:mod:`fl_mia.app.experiment`) and the ServerApp under ``flwr run``
(:mod:`fl_mia.app.flwr_run`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path


class _HideKnownDeprecation(logging.Filter):
    """``run_simulation`` is deprecated in favour of ``flwr run``; fl-mia supports both on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in str(record.msg)


class _HideSimulatedCrashes(logging.Filter):
    """Crashes injected by ``[failures]`` are expected: their tracebacks go to run.log only.

    The round line on the console already says how many hospitals failed.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            "(failures config)" in message or message.startswith("An exception was raised when processing a message by")
        )


@contextmanager
def run_logging(run_dir: Path, *, console_level: int = logging.WARNING):
    """Send fl-mia's and Flower's logs to ``run.log``; keep the console for warnings."""
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger("fl_mia"), logging.getLogger("flwr")]
    hide = _HideKnownDeprecation()
    hide_crashes = _HideSimulatedCrashes()
    saved = []
    for log in loggers:
        saved.append((log, log.level, [h.level for h in log.handlers], log.propagate))
        log.setLevel(logging.INFO)
        log.propagate = False  # Flower or Ray may have configured the root logger
        for existing in log.handlers:
            existing.setLevel(max(existing.level, console_level))
            existing.addFilter(hide)
            existing.addFilter(hide_crashes)
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
                existing.removeFilter(hide_crashes)
        handler.close()
