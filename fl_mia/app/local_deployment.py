"""Hospitals as real Flower SuperNodes: a local deployment (Flower's deployment engine).

One ``flower-superlink`` and one ``flower-supernode`` per hospital run as separate
processes on free localhost ports; the experiment is submitted with ``flwr run .`` exactly
as a consortium would submit it, and everything started here is stopped again, whatever
happens.

A real consortium runs the same programs on different machines, with TLS and SuperNode
authentication on (docs/deployment.md); both can be tried here on localhost.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from fl_mia.app.certificates import SupernodeKey, Tls, supernode_key
from fl_mia.app.flower_commands import (
    CONNECTION_NAME,
    PROJECT_ROOT,
    child_environment,
    flower_executable,
    register_supernodes,
    superlink_command,
    supernode_command,
    write_connection,
)
from fl_mia.app.processes import StartedProcesses, free_port, wait_until_listening
from fl_mia.config import ExperimentConfig
from fl_mia.run_folder import write_toml

logger = logging.getLogger("fl_mia")

_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
_ROUND_LINE = re.compile(r"\bround \d+/\d+ · [^\n]*")


@contextmanager
def local_deployment(workdir: Path, *, num_hospitals: int, tls: Tls | None = None, supernode_auth: bool = False):
    """A SuperLink and ``num_hospitals`` SuperNodes on free localhost ports; stopped on exit.

    With ``supernode_auth`` (needs ``tls``) every hospital gets its own key pair under
    ``workdir/supernode-keys``, its public key is registered with the SuperLink before any
    SuperNode starts, and its SuperNode signs with the private key; the SuperLink refuses
    any other SuperNode.

    Yields the environment (``FLWR_HOME`` with the connection) under which ``flwr run``
    reaches this SuperLink.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    flwr_home = workdir / "flwr-home"
    env = child_environment(flwr_home)
    port = free_port()
    write_connection(flwr_home, address=f"127.0.0.1:{port}", tls=tls)
    started = StartedProcesses()
    try:
        superlink_log = workdir / "superlink.log"
        superlink = started.start(
            superlink_command(port=port, log_path=superlink_log, tls=tls, supernode_auth=supernode_auth),
            env=env, log_path=workdir / "superlink.out",
        )
        wait_until_listening(port, superlink, what="flower-superlink", log_path=superlink_log)
        keys: list[SupernodeKey | None] = [None] * num_hospitals
        if supernode_auth:
            keys = [supernode_key(workdir / "supernode-keys", f"hospital-{k}") for k in range(num_hospitals)]
            node_ids = register_supernodes([key.public_key for key in keys], env=env,
                                           log_path=workdir / "supernode-register.log")
            logger.info("local deployment: registered %d SuperNode keys (node ids %s)", len(node_ids), node_ids)
        supernodes = []
        for hospital, key in enumerate(keys):
            node_port = free_port()
            log_path = workdir / f"supernode-{hospital}.log"
            process = started.start(
                supernode_command(superlink=f"127.0.0.1:{port}", partition_id=hospital, num_partitions=num_hospitals,
                                  port=node_port, tls=tls, private_key=key.private_key if key is not None else None),
                env=env, log_path=log_path,
            )
            supernodes.append((hospital, node_port, process, log_path))
        # Started together, awaited after: on a small machine their imports overlap.
        for hospital, node_port, process, log_path in supernodes:
            wait_until_listening(node_port, process, what=f"flower-supernode of hospital {hospital}", log_path=log_path)
        logger.info("local deployment: SuperLink on 127.0.0.1:%d, %d SuperNodes", port, num_hospitals)
        yield env
    finally:
        started.stop()


def _new_run_folders(runs_root: Path, before: set[Path]) -> list[Path]:
    return sorted(p for p in runs_root.iterdir() if p.is_dir() and p not in before) if runs_root.exists() else []


def round_lines(text: str) -> list[str]:
    """The ServerApp's round lines (:func:`fl_mia.round_log.round_line`) in ``flwr run``'s output."""
    plain = _COLOURS.sub("", text)
    return [match.group(0).rstrip() for match in _ROUND_LINE.finditer(plain)]


def follow_rounds(process: subprocess.Popen, log_path: Path, *, timeout_s: float, on_line: Callable[[str], None]) -> None:
    """Wait for ``process``, passing each round line it writes to ``log_path`` to ``on_line`` as it comes."""
    deadline = time.monotonic() + timeout_s
    offset, pending = 0, ""
    while True:
        finished = process.poll() is not None
        with open(log_path, "rb") as log:
            log.seek(offset)
            chunk = log.read()
        offset += len(chunk)
        pending += chunk.decode("utf-8", errors="replace")
        complete, _, pending = pending.rpartition("\n")
        for line in round_lines(complete):
            on_line(line)
        if finished:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the run did not finish within {timeout_s:.0f}s; see {log_path}")
        time.sleep(0.5)


def submit_run(
    experiment: Path, *, env: dict[str, str], workdir: Path, runs_root: Path, timeout_s: float,
    on_round_line: Callable[[str], None] = lambda line: None,
) -> Path:
    """``flwr run`` the experiment file on the deployment ``env`` reaches; return its run folder.

    ``on_round_line`` gets each round's line (as ``fl-mia run`` prints it) while the run goes on.

    ``flwr run`` returns 0 even when the run fails, so the outcome is read from the run
    folder's ``status.json`` (written by the ServerApp, as under simulation).
    """
    import json

    runs_root.mkdir(parents=True, exist_ok=True)
    before = set(runs_root.iterdir())
    command = [
        flower_executable("flwr"), "run", str(PROJECT_ROOT), CONNECTION_NAME, "--stream",
        "--run-config", f'experiment="{experiment}" runs-root="{runs_root}"',
    ]
    log_path = workdir / "flwr-run.log"
    with open(log_path, "wb") as log:
        submitted = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            follow_rounds(submitted, log_path, timeout_s=timeout_s, on_line=on_round_line)
        finally:
            if submitted.poll() is None:
                submitted.kill()
                submitted.wait()
    if submitted.returncode != 0:
        raise RuntimeError(f"flwr run exited with code {submitted.returncode}; see {workdir / 'flwr-run.log'}")
    folders = _new_run_folders(runs_root, before)
    if len(folders) != 1:
        raise RuntimeError(
            f"expected one new run folder under {runs_root}, found {len(folders)}; see {workdir / 'flwr-run.log'} "
            f"and {workdir / 'superlink.log'}"
        )
    status = json.loads((folders[0] / "status.json").read_text())
    if status.get("state") != "complete":
        raise RuntimeError(
            f"deployed run {folders[0]} ended {status.get('state')!r}: {status.get('error', 'no error recorded')}; "
            f"see {folders[0] / 'run.log'} and {workdir}"
        )
    return folders[0]


def run_deployed(
    cfg: ExperimentConfig,
    *,
    workdir: Path,
    runs_root: Path,
    tls: Tls | None = None,
    supernode_auth: bool = False,
    timeout_s: float = 3600.0,
    on_round_line: Callable[[str], None] = lambda line: None,
) -> Path:
    """Run ``cfg`` on a local deployment, one SuperNode per hospital; return its run folder.

    ``on_round_line`` gets each round's line while the run goes on (``fl-mia deploy`` prints them).
    """
    workdir = workdir.resolve()
    runs_root = runs_root.resolve()
    experiment = workdir / "experiment.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    write_toml(experiment, cfg.to_toml_dict())
    with local_deployment(workdir, num_hospitals=cfg.federation.num_hospitals, tls=tls,
                          supernode_auth=supernode_auth) as env:
        return submit_run(experiment, env=env, workdir=workdir, runs_root=runs_root, timeout_s=timeout_s,
                          on_round_line=on_round_line)
