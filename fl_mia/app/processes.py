"""Processes started for a local deployment or a Ray head: free ports, start, wait, stop.

Every process keeps its own process group (session), so stopping touches nothing but what
was started here; other users' Flower or Ray processes are left alone.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# A SuperNode pulls for work at a fixed interval; the run needs them all registered first.
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_processes(processes: list[psutil.Process], *, grace_s: float = 10.0) -> None:
    """SIGTERM every process, then SIGKILL those still alive after ``grace_s``."""
    for process in processes:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


@dataclass
class StartedProcesses:
    """Processes started here, each the leader of its own session; stopped with their descendants."""

    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self, command: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen:
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it; closed in stop()
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        process.log_file = log  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def stop(self, *, grace_s: float = 10.0) -> None:
        """SIGTERM each started process and every descendant (SuperExec and app processes
        start their own sessions), then SIGKILL what is left after ``grace_s``."""
        tree: list[psutil.Process] = []
        for process in self.processes:
            try:
                parent = psutil.Process(process.pid)
                tree.extend([parent, *parent.children(recursive=True)])
            except psutil.NoSuchProcess:
                pass
        stop_processes(tree, grace_s=grace_s)
        for process in self.processes:
            process.wait(timeout=grace_s)
            process.log_file.close()  # type: ignore[attr-defined]
        self.processes.clear()


def wait_until_listening(port: int, process: subprocess.Popen, *, what: str, log_path: Path) -> None:
    """Return once ``port`` on localhost accepts connections; fail if ``process`` exits or time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}; see {log_path}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on port {port} within {READY_TIMEOUT_S:.0f}s; see {log_path}")
