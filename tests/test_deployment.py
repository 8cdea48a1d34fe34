"""Ray cluster and Flower deployment engine: commands and process handling (fast), then the
real thing on localhost (slow: a Ray head, a SuperLink with SuperNodes, `flwr run .`)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest

from fl_mia.app.certificates import self_signed_tls, supernode_key
from fl_mia.app.flower_commands import (
    CONNECTION_NAME,
    child_environment,
    register_supernode_command,
    superlink_command,
    supernode_command,
    write_connection,
)
from fl_mia.app.local_deployment import follow_rounds, round_lines
from fl_mia.app.processes import StartedProcesses, free_port
from fl_mia.app.simulation_resources import backend_config, check_resources, ray_cluster_address
from fl_mia.config import ConfigError, SimulationConfig
from fl_mia.config.loading import build_config
from tests.conftest import tiny_raw
from tests.local_services import processes_mentioning, ray_head, stop_processes

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# --- Ray cluster address -------------------------------------------------------------------

def test_ray_address_joins_a_cluster_without_local_resource_arguments(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    init_args = backend_config(SimulationConfig(ray_address="10.0.0.5:6379", total_cpus=1))["init_args"]
    # Ray refuses num_cpus/num_gpus when it joins a cluster.
    assert init_args["address"] == "10.0.0.5:6379"
    assert "num_cpus" not in init_args and "num_gpus" not in init_args


def test_ray_address_environment_variable_is_honoured_and_config_wins(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    assert ray_cluster_address(SimulationConfig()) == "10.0.0.9:6379"
    assert ray_cluster_address(SimulationConfig(ray_address="auto")) == "auto"
    monkeypatch.delenv("RAY_ADDRESS")
    assert ray_cluster_address(SimulationConfig()) is None
    assert "num_cpus" in backend_config(SimulationConfig())["init_args"]


def test_local_resource_check_applies_only_without_a_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    too_many = 10_000
    with pytest.raises(ConfigError, match="simulation.cpus_per_client"):
        check_resources(SimulationConfig(cpus_per_client=too_many), num_hospitals=2)
    # A cluster's CPUs are not this machine's: the same request is left to Ray.
    check_resources(SimulationConfig(cpus_per_client=too_many, ray_address="10.0.0.5:6379"), num_hospitals=2)


def test_empty_ray_address_is_refused_with_the_field_name():
    with pytest.raises(ConfigError, match="simulation.ray_address"):
        build_config(tiny_raw(simulation={"ray_address": ""}))


def test_up_to_100_hospitals_are_accepted_and_101_refused():
    raw = tiny_raw(federation={"num_hospitals": 100, "patients_per_hospital": 4, "attacker_patients": 4,
                               "fraction_fit": 0.08},
                   data={"image_size": 32, "phantom": {"num_patients": 420, "slices_per_patient": 2}})
    assert build_config(raw).federation.num_hospitals == 100
    raw["federation"]["num_hospitals"] = 101
    with pytest.raises(ConfigError, match="federation.num_hospitals"):
        build_config(raw)


# --- Deployment commands -------------------------------------------------------------------

def test_each_supernode_gets_its_partition_and_own_port():
    commands = [supernode_command(superlink="127.0.0.1:9000", partition_id=k, num_partitions=3, port=9100 + k, tls=None)
                for k in range(3)]
    for k, command in enumerate(commands):
        assert command[command.index("--node-config") + 1] == f"partition-id={k} num-partitions=3"
        assert command[command.index("--port") + 1] == str(9100 + k)
        assert "--insecure" in command
    assert len({c[c.index("--port") + 1] for c in commands}) == 3


def test_superlink_never_installs_dependencies_and_tls_replaces_insecure(tmp_path):
    insecure = superlink_command(port=9000, log_path=tmp_path / "l", tls=None)
    assert "--insecure" in insecure and "--disable-runtime-dependency-installation" in insecure
    tls = self_signed_tls(tmp_path / "certs")
    secure = superlink_command(port=9000, log_path=tmp_path / "l", tls=tls)
    assert "--insecure" not in secure
    assert secure[secure.index("--ssl-certfile") + 1] == str(tls.server_certfile)
    node = supernode_command(superlink="127.0.0.1:9000", partition_id=0, num_partitions=1, port=9100, tls=tls)
    assert node[node.index("--root-certificates") + 1] == str(tls.ca_certfile) and "--insecure" not in node


def test_supernode_auth_adds_flowers_flags_and_refuses_to_run_without_tls(tmp_path):
    tls = self_signed_tls(tmp_path / "certs")
    link = superlink_command(port=9000, log_path=tmp_path / "l", tls=tls, supernode_auth=True)
    assert "--enable-supernode-auth" in link and "--insecure" not in link
    assert "--enable-supernode-auth" not in superlink_command(port=9000, log_path=tmp_path / "l", tls=tls)
    # flower-superlink exits on --enable-supernode-auth with --insecure; refused here before it starts.
    with pytest.raises(ValueError, match="needs TLS"):
        superlink_command(port=9000, log_path=tmp_path / "l", tls=None, supernode_auth=True)
    key = supernode_key(tmp_path / "keys", "hospital-0")
    node = supernode_command(superlink="127.0.0.1:9000", partition_id=0, num_partitions=1, port=9100, tls=tls,
                             private_key=key.private_key)
    assert node[node.index("--auth-supernode-private-key") + 1] == str(key.private_key)
    plain = supernode_command(superlink="127.0.0.1:9000", partition_id=0, num_partitions=1, port=9100, tls=tls)
    assert "--auth-supernode-private-key" not in plain


def test_registration_names_the_public_key_and_the_local_connection(tmp_path):
    command = register_supernode_command(tmp_path / "hospital-0.pub")
    assert command[1:5] == ["supernode", "register", str(tmp_path / "hospital-0.pub"), CONNECTION_NAME]
    assert command[command.index("--format") + 1] == "json"  # the node id is read from it


def test_registration_returns_node_ids_in_key_order_and_stops_on_a_refusal(tmp_path, monkeypatch):
    """`flwr supernode register --format json` stands in as a script printing what flwr 1.42
    prints (`{"success": true, "node-id": N}`), or failing as it does on a refused key."""
    from fl_mia.app import flower_commands

    def fake_register(public_key: Path) -> list[str]:
        if public_key.name == "refused.pub":
            return [sys.executable, "-c", "import sys; print('public key already in use'); sys.exit(1)"]
        node_id = int(public_key.stem.split("-")[1]) + 100
        return [sys.executable, "-c", f"print('{{\"success\": true, \"node-id\": {node_id}}}')"]

    monkeypatch.setattr(flower_commands, "register_supernode_command", fake_register)
    keys = [tmp_path / f"hospital-{k}.pub" for k in range(5)]
    node_ids = flower_commands.register_supernodes(keys, env=dict(os.environ), log_path=tmp_path / "log")
    assert node_ids == [100, 101, 102, 103, 104]
    with pytest.raises(RuntimeError, match="refused.pub"):
        flower_commands.register_supernodes([*keys[:2], tmp_path / "refused.pub"], env=dict(os.environ),
                                   log_path=tmp_path / "log")
    assert "public key already in use" in (tmp_path / "log").read_text()


def test_supernode_keys_load_with_flowers_own_readers_and_differ_per_hospital(tmp_path):
    """The formats flower-supernode (OpenSSH private key, EC) and `flwr supernode register`
    (OpenSSH public key on a NIST curve) accept, read by Flower's own loaders."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    keys = [supernode_key(tmp_path, f"hospital-{k}") for k in range(2)]
    for key in keys:
        private = serialization.load_ssh_private_key(key.private_key.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        # What registration sends is the public half of what the SuperNode signs with.
        assert try_load_public_key(key.public_key) == public_key_to_bytes(private.public_key())
        assert key.private_key.stat().st_mode & 0o077 == 0, "private key readable by others"
    assert keys[0].public_key.read_bytes() != keys[1].public_key.read_bytes()


def test_self_signed_server_certificate_verifies_against_its_ca_for_localhost(tmp_path):
    import ssl

    tls = self_signed_tls(tmp_path)
    context = ssl.create_default_context(cafile=str(tls.ca_certfile))
    context.load_cert_chain(str(tls.server_certfile), str(tls.server_keyfile))  # key matches certificate
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(tls.server_certfile.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_connection_file_names_the_local_superlink(tmp_path):
    write_connection(tmp_path, address="127.0.0.1:9000", tls=None)
    config = tomllib.loads((tmp_path / "config.toml").read_text())
    name = config["superlink"]["default"]
    assert config["superlink"][name] == {"address": "127.0.0.1:9000", "insecure": True}


def test_child_environment_disables_runtime_installation_and_imports_this_checkout(tmp_path):
    env = child_environment(tmp_path)
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["FLWR_HOME"] == str(tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(PROJECT_ROOT)


def test_stopping_reaches_descendants_in_their_own_sessions(tmp_path):
    """SuperExec and app processes start their own sessions: stopping must still reach them."""
    started = StartedProcesses()
    marker = tmp_path / "grandchild-marker"
    # The marker reaches the grandchild through the environment, so only its command line names it.
    script = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', os.environ['MARKER']], start_new_session=True)\n"
        "time.sleep(300)\n"
    )
    parent = started.start([sys.executable, "-c", script], env={**os.environ, "MARKER": str(marker)}, log_path=tmp_path / "log")
    deadline = time.monotonic() + 120  # a loaded machine starts Python slowly
    while not processes_mentioning(str(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchildren = processes_mentioning(str(marker))
    assert len(grandchildren) == 1
    started.stop(grace_s=5)
    assert parent.poll() is not None
    assert not grandchildren[0].is_running() or grandchildren[0].status() == psutil.STATUS_ZOMBIE


def test_free_ports_are_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# --- On localhost (slow) -------------------------------------------------------------------

def _tiny_deploy_raw(**sections) -> dict:
    # Privacy off: these tests are about the wiring; the privacy step runs in the ServerApp either way.
    return tiny_raw(referee={"enabled": False}, **sections)


def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_ray_cluster_runs_a_two_round_experiment(tmp_path):
    from fl_mia.app.experiment import run_experiment

    temp_dir = Path("/tmp") / f"flmia-ray-{os.getpid()}"  # short: Ray's socket paths have a length limit
    with ray_head(temp_dir) as address:
        cfg = build_config(_tiny_deploy_raw(simulation={"ray_address": address}))
        result = run_experiment(cfg, runs_root=tmp_path)
        # The run went through this head: its session logs name the hospitals' actors.
        actor_logs = list(temp_dir.glob("session_*/logs/*"))
    assert json.loads((result.run_dir / "status.json").read_text())["state"] == "complete"
    rows = _read_rows(result.run_dir / "rounds.csv")
    assert {r["round"] for r in rows} == {"0", "1", "2"}
    assert actor_logs, "no Ray logs under the private head's temp dir"
    assert not processes_mentioning(str(temp_dir)), "the Ray head was not stopped"


@pytest.mark.slow
def test_deployment_with_tls_equals_the_simulation(tmp_path):
    """Two SuperNodes against a TLS SuperLink through `flwr run`; rounds.csv as under simulation."""
    from fl_mia.app.local_deployment import run_deployed
    from fl_mia.app.experiment import run_experiment

    cfg = build_config(_tiny_deploy_raw())
    printed = []
    deployed = run_deployed(cfg, workdir=tmp_path / "deploy", runs_root=tmp_path / "deployed",
                            tls=self_signed_tls(tmp_path / "certs"), on_round_line=printed.append)
    assert "https://" in (tmp_path / "deploy" / "superlink.out").read_text()
    assert not processes_mentioning(str(tmp_path / "deploy")), "deployment processes left running"
    simulated = run_experiment(cfg, runs_root=tmp_path / "simulated").run_dir
    assert (deployed / "rounds.csv").read_bytes() == (simulated / "rounds.csv").read_bytes()
    assert {p.name for p in deployed.iterdir()} == {p.name for p in simulated.iterdir()}  # run.log included
    assert [line.split(" · ")[0] for line in printed] == ["round 0/2", "round 1/2", "round 2/2"], printed


@pytest.mark.slow
def test_supernode_auth_admits_the_registered_hospitals_and_refuses_strangers():
    """TLS + SuperNode authentication on localhost: both hospitals' keys are registered and the
    2-hospital run completes, while two strangers are refused before they get a node id (so
    they can never be sent work) and exit:

    - a plain SuperNode (no key: it would register itself) — admitted when authentication is
      off, so this is the check that fails if `--enable-supernode-auth` is lost;
    - a SuperNode signing with a key nobody registered (refused at activation).
    """
    import shutil
    import tempfile

    from fl_mia.app.flower_commands import flower_executable
    from fl_mia.app.local_deployment import local_deployment, submit_run
    from fl_mia.run_folder import write_toml

    workdir = Path(tempfile.mkdtemp(prefix="flmia-auth-", dir="/tmp"))  # short: Flower's state and logs
    cfg = build_config(_tiny_deploy_raw())
    experiment = workdir / "experiment.toml"
    write_toml(experiment, cfg.to_toml_dict())
    tls = self_signed_tls(workdir / "certs")
    unregistered_key = supernode_key(workdir / "stranger", "unregistered")
    strangers = StartedProcesses()
    try:
        with local_deployment(workdir, num_hospitals=2, tls=tls, supernode_auth=True) as env:
            address = tomllib.loads((Path(env["FLWR_HOME"]) / "config.toml").read_text())["superlink"][CONNECTION_NAME][
                "address"]
            for name, private_key in (("keyless", None), ("unregistered", unregistered_key.private_key)):
                strangers.start(
                    supernode_command(superlink=address, partition_id=0, num_partitions=2, port=free_port(), tls=tls,
                                      private_key=private_key),
                    env=env, log_path=workdir / f"stranger-{name}.log",
                )
            deadline = time.monotonic() + 300
            exit_codes = {}
            for name, stranger in zip(("keyless", "unregistered"), strangers.processes, strict=True):
                try:
                    exit_codes[name] = stranger.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pytest.fail(f"the {name} stranger SuperNode is still running after 300 s: it was admitted")
            run_dir = submit_run(experiment, env=env, workdir=workdir, runs_root=workdir / "runs", timeout_s=1800)
            listed = subprocess.run(
                [flower_executable("flwr"), "supernode", "list", CONNECTION_NAME, "--format", "json"],
                env=env, capture_output=True, text=True, timeout=300,
            )
    finally:
        strangers.stop()
    # On failure the workdir (logs, keys) stays for a look; on success it goes.
    assert not processes_mentioning(str(workdir)), "deployment processes left running"
    assert all(code != 0 for code in exit_codes.values()), exit_codes
    keyless_log = (workdir / "stranger-keyless.log").read_text()
    assert "[code: 2001] SuperNode authentication is enabled" in keyless_log, keyless_log[-2000:]
    unregistered_log = (workdir / "stranger-unregistered.log").read_text()
    assert "[code: 2004] Failed to activate SuperNode" in unregistered_log, unregistered_log[-2000:]
    assert "No SuperNode found with the given public key" in (workdir / "superlink.log").read_text()
    # The SuperLink knows exactly the two registered hospitals, both connected.
    nodes = json.loads(listed.stdout)["nodes"]
    assert sorted(node["status"] for node in nodes) == ["online", "online"], listed.stdout
    registered = (workdir / "supernode-register.log").read_text()
    assert all(str(node["node-id"]) in registered for node in nodes), registered
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    assert {r["round"] for r in _read_rows(run_dir / "rounds.csv")} == {"0", "1", "2"}
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow
def test_documented_flwr_run_commands_complete_on_a_dataset_from_disk(tmp_path):
    """docs/deployment.md's `flwr run .` recipe, with a private FLWR_HOME and ports, on a tiny
    MSD-layout dataset written by nibabel: the hospitals' actors read their shards from disk
    (through the shared cache) and the ServerApp attacks and reports at slice and patient level."""
    from fl_mia.config.loading import load_config
    from fl_mia.run_folder import write_toml
    from tests.disk_datasets import write_msd

    dataset = write_msd(tmp_path / "msd")
    experiment = tmp_path / "tiny.toml"
    cfg = load_config(PROJECT_ROOT / "configs" / "data" / "msd.toml", [
        f'data.path="{dataset}"', f'data.cache_dir="{tmp_path / "cache"}"', "data.image_size=32",
        "federation.num_hospitals=2", "federation.rounds=2", "federation.attacker_patients=4",
        "training.local_epochs=1", "attacker.shadows.epochs=1",
    ])
    write_toml(experiment, cfg.to_toml_dict())
    flwr_home = tmp_path / "flwr-home"
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(PROJECT_ROOT),
    })
    env.pop("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", None)  # the recipe must set it itself
    commands = (
        documented_flwr_run_commands()
        .replace('experiment="configs/quickstart.toml" runs-root="runs"',
                 f'experiment="{experiment}" runs-root="{tmp_path / "runs"}"')
        .replace("--num-supernodes 4", "--num-supernodes 2")  # the tiny experiment's hospitals
    )
    assert str(experiment) in commands and "--num-supernodes 2" in commands, (
        "docs/deployment.md's flwr run block changed: update this test"
    )
    try:
        for _ in range(5):
            done = subprocess.run(["bash", "-euc", commands], cwd=PROJECT_ROOT, env=env, capture_output=True,
                                  text=True, timeout=900)
            # flwr gives its local SuperLink 15 s to start; a busy machine needs another go (docs say so).
            superlink_too_slow = "Failed to start local SuperLink within" in done.stderr + done.stdout
            if not superlink_too_slow:
                break
    finally:
        # `flwr` leaves its local SuperLink running; ours logs under our FLWR_HOME.
        stop_processes(processes_mentioning(str(flwr_home)))
    if superlink_too_slow:
        pytest.skip("machine too busy: flwr's local SuperLink missed flwr's fixed 15 s start limit five times")
    assert done.returncode == 0, done.stderr[-2000:]
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1, done.stdout[-2000:]
    # `flwr run` returns 0 even when the run fails: the run folder says how it ended.
    assert json.loads((folders[0] / "status.json").read_text())["state"] == "complete"
    # The stream says where the run folder is, and that folder holds the ServerApp's log.
    assert f"run folder: {folders[0].resolve()}" in done.stdout, done.stdout[-2000:]
    assert "round 2/2 · " in (folders[0] / "run.log").read_text()
    # Each line once: opacus's root handler used to print every Flower line again, timestamped.
    assert done.stdout.count("[ROUND 1]") == 1 and ":INFO:" not in done.stdout, done.stdout[-3000:]
    assert {r["round"] for r in _read_rows(folders[0] / "rounds.csv")} == {"0", "1", "2"}
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    assert metrics["privacy"], "no attack scored"
    attacks = {name: result for name, result in metrics["privacy"].items() if isinstance(result, dict) and "overall" in result}
    assert attacks and all("auc" in result["patient"]["overall"] for result in attacks.values()), sorted(metrics["privacy"])


def documented_flwr_run_commands() -> str:
    """The bash block after the marker ``<!-- tested: flwr-run -->`` in docs/deployment.md."""
    text = (PROJECT_ROOT / "docs" / "deployment.md").read_text()
    after = text.split("<!-- tested: flwr-run -->", 1)[1]
    block = after.split("```bash\n", 1)[1].split("```", 1)[0]
    return "\n".join(line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def test_deploy_refuses_bad_input_in_one_line_before_starting_anything(tmp_path):
    from typer.testing import CliRunner

    from fl_mia.app.cli import app

    workdir = tmp_path / "work"
    result = CliRunner().invoke(
        app, ["deploy", "configs/quickstart.toml", "--hospitals", "101", "--runs-root", str(tmp_path / "runs"),
              "--workdir", str(workdir)],
    )
    assert result.exit_code == 2
    assert "federation.num_hospitals" in result.output
    assert not workdir.exists() and not (tmp_path / "runs").exists()


def test_deploy_refuses_supernode_auth_without_tls_before_starting_anything(tmp_path):
    from typer.testing import CliRunner

    from fl_mia.app.cli import app

    workdir = tmp_path / "work"
    result = CliRunner().invoke(
        app, ["deploy", "configs/quickstart.toml", "--supernode-auth", "--runs-root", str(tmp_path / "runs"),
              "--workdir", str(workdir)],
    )
    assert result.exit_code == 2
    assert "--tls-self-signed" in result.output
    assert not workdir.exists() and not (tmp_path / "runs").exists()


# --- fl-mia deploy --hospitals and its round lines ---------------------------------------------

QUICKSTART = PROJECT_ROOT / "configs" / "quickstart.toml"


def test_hospitals_keep_the_first_sizes_of_a_size_skewed_config_and_say_so():
    from fl_mia.app.deploy import hospitals_overrides
    from fl_mia.config.loading import load_config

    overrides, note = hospitals_overrides(QUICKSTART, [], 2)
    federation = load_config(QUICKSTART, overrides).federation
    assert federation.num_hospitals == 2 and federation.patients_per_hospital == [32, 24]
    assert note == "--hospitals 2: federation.patients_per_hospital = [32, 24] (the first 2 of [32, 24, 20, 16])"


def test_hospitals_leave_a_single_size_and_the_users_own_sizes_alone():
    from fl_mia.app.deploy import hospitals_overrides

    assert hospitals_overrides(QUICKSTART, [], 4) == (["federation.num_hospitals=4"], None)
    own = ["federation.patients_per_hospital=[8, 8]"]
    assert hospitals_overrides(QUICKSTART, own, 2) == ([*own, "federation.num_hospitals=2"], None)
    single = ["federation.patients_per_hospital=8"]
    assert hospitals_overrides(QUICKSTART, single, 3) == ([*single, "federation.num_hospitals=3"], None)


def test_more_hospitals_than_listed_sizes_names_the_set_to_add():
    from fl_mia.app.deploy import hospitals_overrides

    with pytest.raises(ConfigError, match=r"--hospitals 6: .* add --set federation.patients_per_hospital=16 "):
        hospitals_overrides(QUICKSTART, [], 6)


def test_deploy_hospitals_2_runs_the_quickstart_with_its_first_two_sizes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import fl_mia.app.deploy as deploy
    from fl_mia.app.cli import app

    handed = {}

    def run_deployed(cfg, **kwargs):
        handed["cfg"] = cfg
        raise RuntimeError("stopped here: the deployment itself is the slow tests' business")

    monkeypatch.setattr(deploy, "run_deployed", run_deployed)
    result = CliRunner().invoke(app, ["deploy", str(QUICKSTART), "--hospitals", "2", "--workdir", str(tmp_path / "w"),
                                      "--runs-root", str(tmp_path / "runs")])
    assert handed["cfg"].federation.num_hospitals == 2, result.output
    assert handed["cfg"].federation.patients_per_hospital == [32, 24]
    assert "federation.patients_per_hospital = [32, 24]" in result.output


def test_round_lines_are_picked_out_of_flowers_coloured_stream():
    stream = (
        "\x1b[92mINFO \x1b[0m:      [ROUND 1]\n"
        "\x1b[92mINFO \x1b[0m:      round 0/2 · untrained model · Dice 0.005\n"
        "\x1b[92mINFO \x1b[0m:      \t\tround 1: 1.41\n"  # Flower's own history: not a round line
        "\x1b[92mINFO \x1b[0m:      round 1/2 · hospitals 2 replied · Dice 0.136 · IoU 0.07 · test loss 1.413\n"
    )
    assert round_lines(stream) == [
        "round 0/2 · untrained model · Dice 0.005",
        "round 1/2 · hospitals 2 replied · Dice 0.136 · IoU 0.07 · test loss 1.413",
    ]


def test_round_lines_reach_the_caller_while_flwr_run_still_runs(tmp_path):
    """A stand-in for `flwr run` writes a round line, then waits: the line arrives before it ends."""
    log_path = tmp_path / "flwr-run.log"
    flag = tmp_path / "seen"
    script = (
        "import sys, time, pathlib\n"
        "print('INFO :  round 1/2 · hospitals 2 replied · Dice 0.5', flush=True)\n"
        f"while not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.05)\n"
        "print('INFO :  round 2/2 · hospitals 2 replied · Dice 0.6', flush=True)\n"
    )
    seen = []

    def on_line(line: str) -> None:
        seen.append(line)
        flag.touch()  # the stand-in finishes only once the first line got here

    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)
        follow_rounds(process, log_path, timeout_s=120, on_line=on_line)
    assert seen == ["round 1/2 · hospitals 2 replied · Dice 0.5", "round 2/2 · hospitals 2 replied · Dice 0.6"]


def test_deploy_prints_round_lines_as_they_come(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import fl_mia.app.deploy as deploy
    from fl_mia.app.cli import app

    def run_deployed(cfg, *, on_round_line, **kwargs):
        on_round_line("round 1/2 · hospitals 2 replied · Dice 0.500 · IoU 0.300 · test loss 1.000")
        raise RuntimeError("stopped after one round")

    monkeypatch.setattr(deploy, "run_deployed", run_deployed)
    result = CliRunner().invoke(app, ["deploy", str(QUICKSTART), "--workdir", str(tmp_path / "w")])
    assert "round 1/2 · hospitals 2 replied · Dice 0.500" in result.output


# --- the ServerApp under `flwr run`: each log line once, and into run.log -----------------------

def test_flwr_run_logging_prints_each_line_once_and_writes_run_log(tmp_path):
    """opacus (imported by the defences) installs a timestamped root handler; Flower's logger
    propagates to the root, so each of its lines printed twice. fl-mia's own lines printed never."""
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "import opacus.utils.module_utils  # installs the root handler, as in the ServerApp\n"
        "from fl_mia.app.flwr_run import flwr_run_logging\n"
        "with flwr_run_logging(Path(sys.argv[1])):\n"
        "    logging.getLogger('flwr').info('a line of flower')\n"
        "    logging.getLogger('fl_mia').info('a line of fl-mia')\n"
        "logging.getLogger('flwr').info('a line of flower after the run')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300, check=True)
    console = done.stdout + done.stderr
    for line in ("a line of flower", "a line of fl-mia", "a line of flower after the run"):
        assert sum(text.endswith(line) for text in console.splitlines()) == 1, console
    run_log = (tmp_path / "run.log").read_text()
    assert "a line of flower" in run_log and "a line of fl-mia" in run_log and "after the run" not in run_log
