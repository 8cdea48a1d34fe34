"""Flower command lines and environment: SuperLink, SuperNodes, the ``flwr`` connection, key registration.

Builds what a consortium would type; :mod:`fl_mia.app.local_deployment` starts it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from fl_mia.app.certificates import Tls
from fl_mia.app.processes import READY_TIMEOUT_S
from fl_mia.config import ConfigError
from fl_mia.run_folder import write_toml

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
CONNECTION_NAME = "fl-mia-local"


def flower_executable(name: str) -> str:
    """``flower-superlink`` etc. from this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} not found: install fl-mia's environment (flwr[simulation]) and activate it")
    return found


def child_environment(flwr_home: Path) -> dict[str, str]:
    """Environment of every process started here.

    ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION`` keeps the SuperLink from running
    ``uv sync`` on the app (the environment is already complete; a sync would fail offline).
    ``PYTHONPATH`` puts this checkout first, so ServerApp and ClientApps import this code.
    """
    env = os.environ.copy()
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def superlink_command(*, port: int, log_path: Path, tls: Tls | None, supernode_auth: bool = False) -> list[str]:
    """``supernode_auth``: admit only SuperNodes whose public keys were registered beforehand."""
    if supernode_auth and tls is None:
        # flower-superlink itself exits on this combination (its exit code 104), but only after its slow start.
        raise ValueError("SuperNode authentication needs TLS: Flower's SuperLink refuses --enable-supernode-auth "
                         "with --insecure; give it certificates (--tls-self-signed)")
    security = (
        ["--ssl-ca-certfile", str(tls.ca_certfile), "--ssl-certfile", str(tls.server_certfile),
         "--ssl-keyfile", str(tls.server_keyfile)]
        if tls is not None else ["--insecure"]
    )
    if supernode_auth:
        security.append("--enable-supernode-auth")
    return [
        flower_executable("flower-superlink"), *security,
        "--isolation", "subprocess",
        "--disable-runtime-dependency-installation",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-file", str(log_path),
    ]


def supernode_command(
    *, superlink: str, partition_id: int, num_partitions: int, port: int, tls: Tls | None,
    private_key: Path | None = None,
) -> list[str]:
    """One hospital: ``partition-id`` selects its shard; ``--port`` is its own ClientApp API;
    ``private_key`` signs its requests (its public key must be registered with the SuperLink)."""
    security = ["--root-certificates", str(tls.ca_certfile)] if tls is not None else ["--insecure"]
    if private_key is not None:
        security += ["--auth-supernode-private-key", str(private_key)]
    return [
        flower_executable("flower-supernode"), *security,
        "--superlink", superlink,
        "--node-config", f"partition-id={partition_id} num-partitions={num_partitions}",
        "--isolation", "subprocess",
        "--host", "127.0.0.1", "--port", str(port),
    ]


def write_connection(flwr_home: Path, *, address: str, tls: Tls | None) -> None:
    """The ``flwr`` CLI's connection to this deployment's SuperLink (``$FLWR_HOME/config.toml``)."""
    connection: dict = {"address": address}
    if tls is None:
        connection["insecure"] = True
    else:
        connection["root-certificates"] = str(tls.ca_certfile)
    flwr_home.mkdir(parents=True, exist_ok=True)
    write_toml(flwr_home / "config.toml", {"superlink": {"default": CONNECTION_NAME, CONNECTION_NAME: connection}})


def register_supernode_command(public_key: Path) -> list[str]:
    """``flwr supernode register``: adds a public key to the SuperLink through its Control API
    (the connection written by :func:`write_connection`); prints the new node id as JSON."""
    return [flower_executable("flwr"), "supernode", "register", str(public_key), CONNECTION_NAME, "--format", "json"]


def register_supernodes(public_keys: list[Path], *, env: dict[str, str], log_path: Path) -> list[int]:
    """Register every key with the SuperLink; return their node ids in the same order.

    Each ``flwr`` call imports Flower (seconds on a busy machine), so a few run at once.
    """
    import json
    from concurrent.futures import ThreadPoolExecutor

    def register(public_key: Path) -> tuple[subprocess.CompletedProcess, int | None]:
        try:
            done = subprocess.run(register_supernode_command(public_key), env=env, capture_output=True, text=True,
                                  timeout=READY_TIMEOUT_S * 5, check=False)
        except subprocess.TimeoutExpired as expired:
            done = subprocess.CompletedProcess(expired.cmd, returncode=-1, stdout="",
                                               stderr=f"(no answer within {expired.timeout:.0f}s)")
        try:
            node_id = int(json.loads(done.stdout)["node-id"]) if done.returncode == 0 else None
        except (ValueError, KeyError, TypeError):
            node_id = None
        return done, node_id

    with ThreadPoolExecutor(max_workers=min(4, len(public_keys) or 1)) as pool:
        results = list(pool.map(register, public_keys))
    with open(log_path, "a") as log:
        for public_key, (done, node_id) in zip(public_keys, results, strict=True):
            log.write(f"$ {' '.join(done.args)}\n{done.stdout}{done.stderr}\n")
            if node_id is None:
                raise RuntimeError(f"registering {public_key} with the SuperLink failed (exit code {done.returncode}); "
                                   f"see {log_path}")
    return [node_id for _, node_id in results]
