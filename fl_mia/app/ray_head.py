"""A private Ray head on localhost: started with ``ray start --head``, stopped by process id.

Other people's Ray and Flower processes may run on the same machine, so nothing here uses
``ray stop`` or a name-wide kill: every process is found through a marker (its private
temp dir) in its command line and stopped by id.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from fl_mia.app.processes import free_port, stop_processes


def processes_mentioning(marker: str) -> list[psutil.Process]:
    """This user's processes whose command line contains ``marker`` (a path only they use)."""
    found = []
    me = psutil.Process()
    spared = {me.pid, *(parent.pid for parent in me.parents())}  # e.g. a shell whose command names the marker
    for process in psutil.process_iter(["cmdline", "pid"]):
        if process.info["pid"] in spared:
            continue
        try:
            if any(marker in part for part in (process.info["cmdline"] or [])):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@contextmanager
def ray_head(temp_dir: Path, *, num_cpus: int = 2, num_gpus: int = 0) -> Iterator[str]:
    """``ray start --head`` on free ports with a private temp dir; yields the cluster address.

    ``temp_dir`` must be short (Ray's socket paths have a length limit). Stopped by killing
    the processes whose command line names ``temp_dir`` (gcs_server, raylet, workers).
    """
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    command = [
        ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}", f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats",
        # Ports with fixed defaults (another Ray on the machine may hold them); the rest Ray picks free.
        f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
    ]
    stop_processes(processes_mentioning(str(temp_dir)))  # a head left behind by a killed run with this marker
    try:
        started = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if started.returncode != 0:
            raise RuntimeError(f"ray start failed ({started.returncode}): {started.stderr[-3000:]}{started.stdout[-2000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        stop_processes(processes_mentioning(str(temp_dir)))
