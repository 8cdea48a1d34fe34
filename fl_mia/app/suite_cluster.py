"""Suite cells at once: ``--jobs N`` on this machine, or Ray tasks over an existing Ray cluster.

Design: every cell runs as its own process, ``python -m fl_mia.app.suite_cluster CONFIG FOLDER
STATE OVERRIDES`` (the same ``run_experiment`` / ``resume_experiment`` a sequential suite calls),
so a cell is still an ordinary run folder ``OUT/cells/<cell>/`` and its numbers equal a local run's.
Inside that process Flower's ``run_simulation`` starts a *private* Ray for the cell's hospitals,
exactly as a cell run alone does: the process gets ``RAY_ADDRESS=local``, which keeps it from
joining the cluster that ``ray start`` recorded on its node (``/tmp/ray/ray_current_cluster``).
Why not let the cell's simulation join the cluster: a task holding CPUs while its hospitals' actors
wait for CPUs on the same cluster can deadlock, and a cell's actors would spread over nodes that
may not hold its data. Here a cell never leaves the node it was placed on.

* ``--jobs N``: a thread pool keeps N cell processes running on this machine.
* ``--ray-address ADDR`` (or ``RAY_ADDRESS``): the suite connects to the cluster and submits
  one Ray task per cell asking for the CPUs and GPUs its simulation takes
  (``simulation.total_cpus``, else ``cpus_per_client``; GPUs when ``gpus_per_client`` > 0), so
  Ray's own scheduler places cells on whichever node has room. The task launches the cell process
  on its node and returns the node's hostname, Ray node id and IP, which ``suite.json`` records.
  The suite folder, config files and (for real data) the data must be on a path every node sees.

The attacker's shared knowledge (``OUT/knowledge/``) is passed to every cell process through its
environment; its writes are atomic and per-key locked, so concurrent cells are safe.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

logger = logging.getLogger("fl_mia")
RESULT_PREFIX = "FL_MIA_CELL_RESULT "
SubmitCell = Callable[[Any, Path, str], Future]


def cell_environment() -> dict[str, str]:
    """What a cell process needs from the suite's environment (a Ray worker does not inherit it)."""
    from fl_mia.attacker.knowledge_cache import KNOWLEDGE_CACHE_ENV

    env = {"RAY_ADDRESS": "local"}  # the cell's simulation starts its own Ray on its node
    if os.environ.get(KNOWLEDGE_CACHE_ENV):
        env[KNOWLEDGE_CACHE_ENV] = os.environ[KNOWLEDGE_CACHE_ENV]
    return env


def cell_command(config: str, folder: str, state: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "fl_mia.app.suite_cluster", config, folder, state, json.dumps(overrides)]


# Cell processes of this suite still running. Each runs in a session of its own, so a terminal's
# Ctrl-C reaches the suite alone, which then asks each cell to stop exactly once (stop_cells):
# every cell keeps its last checkpoint, and no queued cell starts.
_live_cells: set[subprocess.Popen] = set()
_live_cells_lock = threading.Lock()
CELL_STOP_TIMEOUT_S = 60.0  # a cell gets GRACE_S to stop at its next message, then ends itself


def run_cell_process(config: str, folder: str, state: str, overrides: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one cell in a child process; return its label, error and seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(
        cell_command(config, folder, state, overrides), env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    with _live_cells_lock:
        _live_cells.add(process)
    try:
        stdout, stderr = process.communicate()
    except KeyboardInterrupt:  # a Ray task cancelled by the suite: pass the stop on, as Ctrl-C would
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=CELL_STOP_TIMEOUT_S)
        raise
    finally:
        with _live_cells_lock:
            _live_cells.discard(process)
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if lines:
        result = json.loads(lines[-1][len(RESULT_PREFIX):])
    else:
        result = {"label": "failed", "error": f"cell process exited {process.returncode}: {stderr.strip()[-800:]}"}
    return {**result, "cell_seconds": time.perf_counter() - started, "hostname": socket.gethostname()}


def stop_cells(timeout_s: float = CELL_STOP_TIMEOUT_S) -> None:
    """Ask every running cell process to stop (one SIGINT each) and wait for them to end."""
    with _live_cells_lock:
        live = [process for process in _live_cells if process.poll() is None]
    for process in live:
        process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for process in live:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def local_pool(jobs: int) -> tuple[SubmitCell, Callable[[], None]]:
    """Up to ``jobs`` cell processes at once on this machine; returns (submit, close).

    ``close`` drops the cells not started yet and stops the running ones: after a Ctrl-C the
    suite ends within a cell's grace period, and ``--resume`` continues every cell it touched.
    """
    threads = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="suite-cell")

    def submit(cell, folder: Path, state: str) -> Future:  # the environment as run_suite has set it (knowledge)
        return threads.submit(run_cell_process, str(cell.config_path), str(folder), state, cell.overrides, cell_environment())

    def close() -> None:
        threads.shutdown(wait=False, cancel_futures=True)
        stop_cells()
        threads.shutdown(wait=True)

    return submit, close


def cell_resources(cell) -> dict[str, float]:
    """The CPUs and GPUs a cell's simulation takes on its node: what its Ray task asks for."""
    simulation = cell.cfg.simulation
    cpus = simulation.total_cpus or max(1.0, simulation.cpus_per_client)
    return {"num_cpus": float(cpus), "num_gpus": float(simulation.gpus_per_client) if simulation.gpus_per_client > 0 else 0.0}


def _ray_cell_task(config: str, folder: str, state: str, overrides: list[str], env: dict[str, str]) -> dict[str, Any]:
    import ray

    context = ray.get_runtime_context()
    result = run_cell_process(config, folder, state, overrides, env)
    return {**result, "ray_node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def ray_pool(address: str) -> tuple[SubmitCell, Callable[[], None]]:
    """One Ray task per cell on the cluster at ``address``; returns (submit, close)."""
    import ray

    from fl_mia.app.suite import SuiteError

    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise SuiteError(f"--ray-address {address}: no Ray cluster answers there ({error}); start one with `ray start --head` or fix the address") from None
    task = ray.remote(max_retries=0)(_ray_cell_task)
    submitted: list = []

    def submit(cell, folder: Path, state: str) -> Future:
        env = cell_environment()  # as run_suite has set it (the shared knowledge folder)
        ref = task.options(**cell_resources(cell)).remote(str(cell.config_path), str(folder), state, cell.overrides, env)
        submitted.append(ref)
        return ref.future()

    def close() -> None:
        # Cells still queued never start; a running one gets KeyboardInterrupt in its task,
        # which run_cell_process passes on to the cell process as one SIGINT.
        _, unfinished = ray.wait(submitted, num_returns=len(submitted), timeout=0) if submitted else ([], [])
        for ref in unfinished:
            ray.cancel(ref, force=False)
        if unfinished:
            ray.wait(unfinished, num_returns=len(unfinished), timeout=CELL_STOP_TIMEOUT_S)
        ray.shutdown()

    return submit, close


def cell_pool(jobs: int, ray_address: str | None, *, shared_ray: bool) -> tuple[SubmitCell | None, Callable[[], None]]:
    """The CLI's choice: Ray tasks with an address (``local`` is none), a local pool for ``jobs`` > 1, else one by one (None)."""
    from fl_mia.app.suite import SuiteError

    ray_address = ray_address if ray_address and ray_address != "local" else None
    if shared_ray and (jobs > 1 or ray_address):
        raise SuiteError("--shared-ray: cells run at once (--jobs, --ray-address) each start their own Ray; drop --shared-ray")
    if ray_address:
        logger.info("cells run as Ray tasks on the cluster at %s", ray_address)
        return ray_pool(ray_address)
    return local_pool(jobs) if jobs > 1 else (None, lambda: None)


def _as_they_end(futures: dict[Future, Any]) -> Iterator[Future]:
    """Each future as it ends. Waits a second at a time: a signal handler (Ctrl-C, SIGTERM) runs
    only when the main thread wakes, and a process-directed signal may land on a cell's thread."""
    pending = set(futures)
    while pending:
        ended, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
        yield from ended


def cells_runner(submit: SubmitCell) -> Callable[..., None]:
    """A ``run_suite`` cell runner that starts every cell to run through ``submit`` and records each as it ends."""

    def run_cells(suite, out, states, records, summary, started, *, on_cell, **_) -> None:
        from fl_mia.app.suite import CELLS, SUITE_JSON, _cell_record, _report, _times
        from fl_mia.run_folder import read_status, write_json

        by_name: dict[str, dict[str, Any]] = {}
        running: dict[Future, Any] = {}
        done = 0
        for cell in suite.running_order():
            folder = out / CELLS / cell.name
            if states[cell.name] == "complete":
                by_name[cell.name] = _cell_record(cell, folder, state="complete", skipped=True, **_times(folder))
                done += 1
                _report(on_cell, cell, "skipped", done, len(suite.cells), 0.0)
            elif states[cell.name] == "running":
                error = f"still running in process {read_status(folder).get('pid')}; left alone (resume the suite once it ends)"
                by_name[cell.name] = _cell_record(cell, folder, state="failed", skipped=True, error=error)
                done += 1
                _report(on_cell, cell, "failed", done, len(suite.cells), 0.0, error)
            else:
                running[submit(cell, folder, states[cell.name])] = cell
        for future in _as_they_end(running):
            cell = running[future]
            folder = out / CELLS / cell.name
            try:
                result = future.result()
            except Exception as failure:  # the task itself failed (a node lost): record it, go on
                result = {"label": "failed", "error": f"{type(failure).__name__}: {failure}", "cell_seconds": None}
            label, error = result.pop("label"), result.pop("error", None)
            state = "complete" if label in ("complete", "resumed") else "failed"
            by_name[cell.name] = _cell_record(cell, folder, state=state, skipped=False, error=error, **result, **_times(folder))
            records[:] = suite.in_listing_order(list(by_name.values()))
            done += 1
            summary["wall_time_s"] = time.perf_counter() - started
            write_json(out / SUITE_JSON, summary)
            _report(on_cell, cell, label, done, len(suite.cells), result.get("cell_seconds") or 0.0, error)
        records[:] = [by_name[c.name] for c in suite.cells]

    return run_cells


def _main(config: str, folder: str, state: str, overrides: str) -> None:
    """Run one cell (the child process): the same calls a sequential suite makes."""
    import flwr.common  # noqa: F401  Flower's console handler must exist before run_logging quiets it

    from fl_mia.app.experiment import resume_experiment, run_experiment
    from fl_mia.app.interrupt import EXIT_CODE
    from fl_mia.app.preflight import load_experiment
    from fl_mia.app.suite import Cell, _run_cell

    cfg = load_experiment(Path(config), json.loads(overrides))
    cell = Cell(Path(folder).name, {}, cfg.seed, Path(config), json.loads(overrides), cfg, "")
    try:
        label, error = _run_cell(cell, Path(folder), state, run=run_experiment, resume_run=resume_experiment)
    except KeyboardInterrupt as stopped:  # asked to stop by the suite: status.json says where it can resume
        print(RESULT_PREFIX + json.dumps({"label": "interrupted", "error": str(stopped)}), flush=True)
        sys.exit(EXIT_CODE)
    print(RESULT_PREFIX + json.dumps({"label": label, "error": error}), flush=True)


if __name__ == "__main__":
    _main(*sys.argv[1:5])
