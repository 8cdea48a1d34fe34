"""Ctrl-C and SIGTERM during a run: the first one stops the federation within seconds, keeps
the last checkpoint and says how to continue; a second one (or a federation that does not stop
in time) ends the process at once, with the same message.

The handler never raises inside Flower: it sets :data:`fl_mia.stop_request.STOP`, which the
server's grid reads between pulls, so the ServerApp thread ends and Flower's simulation
returns on its own. Ray's and Flower's complaints about the torn-down actors go to
``run.log`` only; the console gets one line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from fl_mia.checkpoint import checkpoint_round
from fl_mia.run_folder import set_status
from fl_mia.stop_request import STOP

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a run stopped by Ctrl-C
# Seconds the federation gets to stop at its next message before the process ends anyway.
GRACE_S = 12.0


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal; :meth:`message` names the command that continues it."""

    def __init__(self, run_dir: Path, last_round: int | None, reason: str) -> None:
        self.run_dir = run_dir
        self.last_round = last_round
        self.reason = reason
        super().__init__(self.message())

    def message(self, resume_command: str | None = None) -> str:
        after = f"after round {self.last_round}" if self.last_round is not None else "before its first checkpoint"
        command = resume_command or f"fl-mia run --resume {self.run_dir}"
        if self.last_round is None:
            return f"interrupted {after} ({self.reason}); nothing to resume: run {self.run_dir}'s config again"
        return f"interrupted {after}; continue with: {command}"


# What the CLI prints when the process must end before the run returns (a suite names its own resume).
_resume_command: str | None = None


@contextmanager
def resume_command(command: str) -> Iterator[None]:
    """Name the command that continues what is running (a suite's ``--resume``) in the interrupt line."""
    global _resume_command
    previous, _resume_command = _resume_command, command
    try:
        yield
    finally:
        _resume_command = previous


def mark_interrupted(run_dir: Path) -> RunInterrupted:
    """Record in ``status.json`` that the run was stopped, and where it can continue from."""
    error = RunInterrupted(run_dir, checkpoint_round(run_dir), STOP.reason or "a signal")
    set_status(run_dir, "interrupted", reason=error.reason, last_round=error.last_round)
    return error


def _end_now(run_dir: Path) -> None:
    """The federation did not stop in time (or a second signal came): end the process now."""
    error = mark_interrupted(run_dir)
    print(f"error: {error.message(_resume_command)}", file=sys.stderr, flush=True)
    # Ray's head and workers are this process's children: without them nothing is left behind.
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=3.0)
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    os._exit(EXIT_CODE)


def _quiet_console(names: tuple[str, ...] = ("flwr", "fl_mia")) -> None:
    """After a stop request the actors' deaths are expected: their errors go to run.log only."""
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL + 1)


@contextmanager
def stop_on_first_signal(run_dir: Path, *, grace_s: float = GRACE_S) -> Iterator[None]:
    """Within this block, SIGINT and SIGTERM ask the federation to stop (see the module doc)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; elsewhere the caller's handling stands
        return
    STOP.clear()
    watchdog: list[threading.Timer] = []

    def handle(signum: int, _frame) -> None:
        if STOP.is_set():
            _end_now(run_dir)
        STOP.set(signal.Signals(signum).name)
        _quiet_console()
        timer = threading.Timer(grace_s, _end_now, args=(run_dir,))
        timer.daemon = True
        timer.start()
        watchdog.append(timer)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for timer in watchdog:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def terminate_as_ctrl_c() -> Iterator[None]:
    """Within this block SIGTERM raises KeyboardInterrupt, as Ctrl-C does.

    For a suite whose cells are processes of their own (``--jobs``, ``--ray-address``): the
    default SIGTERM would end the suite at once and leave its cells running, orphaned; this way
    the suite stops them first (:func:`fl_mia.app.suite_cluster.stop_cells`).
    """

    def handle(signum: int, _frame) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
