"""``fl-mia deploy``: run one experiment with the hospitals as real Flower SuperNodes on localhost.

The command line only; the deployment itself is :mod:`fl_mia.app.local_deployment`
(``--tls-self-signed`` and ``--supernode-auth`` try what a consortium turns on, docs/deployment.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fl_mia.app.certificates import self_signed_tls
from fl_mia.app.local_deployment import run_deployed
from fl_mia.config import ConfigError


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

    from fl_mia.app.preflight import load_experiment
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
