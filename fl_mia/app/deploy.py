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
from fl_mia.config.loading import load_config

SIZES_KEY = "federation.patients_per_hospital"


def hospitals_overrides(config: Path, overrides: list[str], hospitals: int | None) -> tuple[list[str], str | None]:
    """The ``--set`` list that gives ``config`` ``hospitals`` hospitals, and a line saying what else it changed.

    A config that lists one size per hospital (the quickstart's size skew) keeps its first
    ``hospitals`` sizes; asked for more hospitals than it lists sizes, it raises
    :class:`ConfigError` naming the ``--set`` to add. Sizes the user sets are left alone.
    """
    if hospitals is None:
        return overrides, None
    with_count = [*overrides, f"federation.num_hospitals={hospitals}"]
    if hospitals < 1 or any(o.partition("=")[0].strip() == SIZES_KEY for o in overrides):
        return with_count, None
    try:
        sizes = load_config(config, overrides).federation.patients_per_hospital
    except ConfigError:
        return with_count, None  # the full load reports it, blamed on its source
    if not isinstance(sizes, list) or len(sizes) == hospitals:
        return with_count, None
    if hospitals > len(sizes):
        load_config(config, [*with_count, f"{SIZES_KEY}={min(sizes)}"])  # a bad count is named as such first
        raise ConfigError(
            f"--hospitals {hospitals}: {config} lists {len(sizes)} sizes in {SIZES_KEY} ({sizes}); "
            f"add --set {SIZES_KEY}={min(sizes)} (that many patients each) or a list of {hospitals} sizes"
        )
    kept = sizes[:hospitals]
    return [*with_count, f"{SIZES_KEY}={kept}"], f"--hospitals {hospitals}: {SIZES_KEY} = {kept} (the first {hospitals} of {sizes})"


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
    from rich.markup import escape

    from fl_mia.app.preflight import load_experiment
    from fl_mia.console_summary import render_summary
    from fl_mia.run_outputs import read_metrics

    errors = Console(stderr=True)
    if supernode_auth and not tls_self_signed:
        errors.print("[bold red]error:[/] --supernode-auth needs --tls-self-signed: Flower's SuperLink refuses "
                     "SuperNode authentication without TLS", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2)
    try:
        overrides, sizes_note = hospitals_overrides(config, list(set_ or []), hospitals)
        cfg = load_experiment(config, overrides)
    except ConfigError as error:
        # The count came from --hospitals, not from a --set the user typed.
        message = str(error).replace(f"--set federation.num_hospitals={hospitals}", f"--hospitals {hospitals}")
        errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="fl-mia-deploy-"))
    Console().print(
        f"fl-mia deploy · {cfg.name} · {cfg.federation.num_hospitals} SuperNodes · {cfg.federation.rounds} rounds · "
        f"{'TLS' if tls_self_signed else 'no TLS'}{' · SuperNode authentication' if supernode_auth else ''} · "
        f"logs in {workdir}"
    )
    if sizes_note is not None:
        Console().print(sizes_note, highlight=False, markup=False)
    try:
        tls = self_signed_tls(workdir / "certificates") if tls_self_signed else None
        run_dir = run_deployed(cfg, workdir=workdir, runs_root=runs_root, tls=tls, supernode_auth=supernode_auth,
                               on_round_line=lambda line: Console().print(line, highlight=False, markup=False))
    except RuntimeError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    typer.echo(render_summary(read_metrics(run_dir)), nl=False)
    Console().print(f"run folder: {run_dir}")
