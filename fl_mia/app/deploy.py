"""Hospitals as real Flower SuperNodes: a local deployment (Flower's deployment engine).

One ``flower-superlink`` and one ``flower-supernode`` per hospital run as separate
processes on free localhost ports; the experiment is submitted with ``flwr run .`` exactly
as a consortium would submit it, and everything this module started is stopped again,
whatever happens. Every process keeps its own process group, so stopping touches nothing
but what was started here (other users' Flower or Ray processes are left alone).

A real consortium runs the same programs on different machines, with TLS and SuperNode
authentication on (docs/deployment.md); both can be tried here on localhost
(``--tls-self-signed``, ``--supernode-auth``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import psutil
import typer

from fl_mia.config import ConfigError, ExperimentConfig
from fl_mia.run_folder import write_toml

logger = logging.getLogger("fl_mia")

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
CONNECTION_NAME = "fl-mia-local"
# A SuperNode pulls for work at a fixed interval; the run needs them all registered first.
_READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


@dataclass(frozen=True)
class Tls:
    """Certificates for an encrypted deployment (``--ssl-*`` on the SuperLink, ``--root-certificates``
    on SuperNodes and in the ``flwr`` connection)."""

    ca_certfile: Path
    server_certfile: Path
    server_keyfile: Path


def self_signed_tls(folder: Path, *, host: str = "127.0.0.1") -> Tls:
    """A throw-away CA and a SuperLink certificate for ``host`` (localhost tests and trials only).

    A consortium uses certificates from its own CA; the SuperLink's must name the address
    the SuperNodes dial (a subject alternative name), or TLS verification fails.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5), "not_valid_after": now + datetime.timedelta(days=2)}

    def certificate(subject: str, key, issuer: x509.Name, issuer_key, *, ca: bool, san=None) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid["not_valid_before"])
            .not_valid_after(valid["not_valid_after"])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fl-mia test CA")])
    ca_cert = certificate("fl-mia test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    try:
        san = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        san = [x509.DNSName(host)]
    server_cert = certificate(host, server_key, ca_name, ca_key, ca=False, san=[*san, x509.DNSName("localhost")])
    tls = Tls(ca_certfile=folder / "ca.pem", server_certfile=folder / "server.pem", server_keyfile=folder / "server.key")
    tls.ca_certfile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.server_certfile.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    tls.server_keyfile.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    tls.server_keyfile.chmod(0o600)
    return tls


@dataclass(frozen=True)
class SupernodeKey:
    """One SuperNode's authentication key pair: an EC (NIST P-384) key, the private half in
    OpenSSH's private-key format (what ``flower-supernode --auth-supernode-private-key``
    reads), the public half as an OpenSSH public key (what ``flwr supernode register`` reads)."""

    private_key: Path
    public_key: Path


def supernode_key(folder: Path, name: str) -> SupernodeKey:
    """A new key pair ``folder/name`` and ``folder/name.pub``, as ``ssh-keygen -t ecdsa -b 384
    -N "" -f folder/name`` would write it (the private file readable by its owner only).

    In a consortium each hospital makes its own and hands only the ``.pub`` to the SuperLink's
    operator; here one process plays every hospital.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    pair = SupernodeKey(private_key=folder / name, public_key=folder / f"{name}.pub")
    pair.private_key.touch(mode=0o600)
    pair.private_key.chmod(0o600)  # also when the file was there before
    pair.private_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    pair.public_key.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"
    )
    return pair


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
                                  timeout=_READY_TIMEOUT_S * 5, check=False)
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


def _wait_until_listening(port: int, process: subprocess.Popen, *, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}; see {log_path}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on port {port} within {_READY_TIMEOUT_S:.0f}s; see {log_path}")


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
        _wait_until_listening(port, superlink, what="flower-superlink", log_path=superlink_log)
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
            _wait_until_listening(node_port, process, what=f"flower-supernode of hospital {hospital}", log_path=log_path)
        logger.info("local deployment: SuperLink on 127.0.0.1:%d, %d SuperNodes", port, num_hospitals)
        yield env
    finally:
        started.stop()


def _new_run_folders(runs_root: Path, before: set[Path]) -> list[Path]:
    return sorted(p for p in runs_root.iterdir() if p.is_dir() and p not in before) if runs_root.exists() else []


def submit_run(experiment: Path, *, env: dict[str, str], workdir: Path, runs_root: Path, timeout_s: float) -> Path:
    """``flwr run`` the experiment file on the deployment ``env`` reaches; return its run folder.

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
    with open(workdir / "flwr-run.log", "wb") as log:
        try:
            submitted = subprocess.run(command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                       timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"the run did not finish within {timeout_s:.0f}s; see {workdir / 'flwr-run.log'}"
            ) from None
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
) -> Path:
    """Run ``cfg`` on a local deployment, one SuperNode per hospital; return its run folder."""
    workdir = workdir.resolve()
    runs_root = runs_root.resolve()
    experiment = workdir / "experiment.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    write_toml(experiment, cfg.to_toml_dict())
    with local_deployment(workdir, num_hospitals=cfg.federation.num_hospitals, tls=tls,
                          supernode_auth=supernode_auth) as env:
        return submit_run(experiment, env=env, workdir=workdir, runs_root=runs_root, timeout_s=timeout_s)


def deploy_command(
    config: Annotated[Path, typer.Argument(help="Experiment file (.toml), e.g. configs/quickstart.toml.")],
    hospitals: Annotated[
        int | None, typer.Option("--hospitals", help="SuperNodes to start, one per hospital (sets federation.num_hospitals).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value: dotted.key=value (repeatable).")
    ] = None,
    runs_root: Annotated[Path, typer.Option("--runs-root", help="Where the run folder goes.")] = Path("runs"),
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Logs of the SuperLink, SuperNodes and flwr run (default: a new temp folder)."),
    ] = None,
    tls_self_signed: Annotated[
        bool, typer.Option("--tls-self-signed", help="Encrypt with a throw-away CA made in the workdir (a trial of TLS).")
    ] = False,
    supernode_auth: Annotated[
        bool,
        typer.Option(
            "--supernode-auth",
            help="Admit only registered SuperNodes: a key pair per hospital made in the workdir, each public key "
                 "registered with `flwr supernode register` before the SuperNodes start (needs --tls-self-signed).",
        ),
    ] = False,
) -> None:
    """Run one experiment on a local Flower deployment: a SuperLink and one SuperNode process per hospital.

    --tls-self-signed and --supernode-auth try on localhost what a consortium turns on
    (docs/deployment.md, "What a real consortium turns on").
    """
    import tempfile

    from rich.console import Console

    from fl_mia.preflight import load_experiment
    from fl_mia.console_summary import render_summary
    from fl_mia.run_outputs import read_metrics

    overrides = list(set_ or []) + ([f"federation.num_hospitals={hospitals}"] if hospitals is not None else [])
    errors = Console(stderr=True)
    if supernode_auth and not tls_self_signed:
        errors.print("[bold red]error:[/] --supernode-auth needs --tls-self-signed: Flower's SuperLink refuses "
                     "SuperNode authentication without TLS", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2)
    try:
        cfg = load_experiment(config, overrides)
    except ConfigError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="fl-mia-deploy-"))
    Console().print(
        f"fl-mia deploy · {cfg.name} · {cfg.federation.num_hospitals} SuperNodes · {cfg.federation.rounds} rounds · "
        f"{'TLS' if tls_self_signed else 'no TLS'}{' · SuperNode authentication' if supernode_auth else ''} · "
        f"logs in {workdir}"
    )
    try:
        tls = self_signed_tls(workdir / "certificates") if tls_self_signed else None
        run_dir = run_deployed(cfg, workdir=workdir, runs_root=runs_root, tls=tls, supernode_auth=supernode_auth)
    except RuntimeError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    typer.echo(render_summary(read_metrics(run_dir)), nl=False)
    Console().print(f"run folder: {run_dir}")
