"""``fl-mia`` command line: run an experiment from a config file."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from fl_mia.app.deploy import deploy_command
from fl_mia.app.data_cli import data_app
from fl_mia.app.interrupt import RunInterrupted, resume_command
from fl_mia.config import ConfigError
from fl_mia.app.preflight import load_experiment
from fl_mia.round_log import RoundProgress, round_line
from fl_mia.run_folder import RunFolderError

# No rich traceback with locals: a crash printed the config, arrays and tensors of every
# frame (100,000s of lines). Run crashes are caught below and reported in one paragraph.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Federated-learning privacy testbed for segmentation.",
)
app.add_typer(data_app, name="data")
console = Console(stderr=False)
errors = Console(stderr=True)

# Errors a user can fix: one line, no traceback.
USER_ERRORS = (ConfigError, RunFolderError)


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _report_crash(error: BaseException, *, code: int) -> None:
    """One short paragraph: what failed, where the run folder is, where the traceback went."""
    from fl_mia.app.experiment import failed_run_folder

    text = str(error).strip()
    first_line = text.splitlines()[0] if text else ""
    if len(first_line) > 300:
        first_line = first_line[:300] + " …"
    lines = [f"[bold red]error:[/] {type(error).__name__}: {first_line}"]
    run_dir = failed_run_folder(error)
    if run_dir is not None:
        lines.append(f"The run failed; its folder {run_dir} is marked failed in status.json.")
        lines.append(f"Full message and traceback: {run_dir / 'run.log'}")
    errors.print("\n".join(lines), highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment file (.toml), e.g. configs/quickstart.toml.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value: dotted.key=value (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<name>-<timestamp>/).")] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an interrupted run folder from its last checkpoint.")
    ] = None,
) -> None:
    """Run one experiment: federated training, then the outputs in a new run folder."""
    from fl_mia.app.experiment import resume_experiment, run_experiment
    from fl_mia.console_summary import render_summary
    from server.hospital_directory import FederationError
    from server.round_timeout import NoRepliesError

    if config is None and resume is None:
        _fail("give an experiment file (fl-mia run CONFIG) or an interrupted run (fl-mia run --resume RUN_DIR)")
    if resume is not None and out is not None:
        _fail("--resume continues the run in its own folder; leave out --out")
    if resume is not None and config is None and set_:
        _fail("--set with --resume would change the experiment; a run resumes only its own config")
    cfg = None
    if config is not None:
        try:
            cfg = load_experiment(config, set_ or [])
        except ConfigError as error:
            _fail(str(error))
    if resume is not None:
        from fl_mia.app.resume import resumable_run

        try:
            cfg, checkpoint = resumable_run(resume, cfg)
        except USER_ERRORS as error:
            _fail(str(error))

    # Everything checkable is checked before the banner, so rejected input prints one line.
    from fl_mia.run_folder import check_new_run_folder
    from fl_mia.app.simulation_resources import check_resources

    try:
        check_resources(cfg.simulation, num_hospitals=cfg.federation.num_hospitals)
        if out is not None:
            check_new_run_folder(out)
    except USER_ERRORS as error:
        _fail(str(error))

    console.print(
        f"fl-mia · {cfg.name} · {cfg.federation.num_hospitals} hospitals · {cfg.federation.rounds} rounds · "
        f"{cfg.model.arch}/{cfg.model.encoder} · seed {cfg.seed}"
    )
    try:
        if resume is not None:
            console.print(f"resuming {resume} after round {checkpoint.round}")
            result = resume_experiment(resume, cfg=cfg, on_round_end=_show_round)
        else:
            result = run_experiment(cfg, out=out, on_round_end=_show_round)
    except RunInterrupted as stopped:
        _interrupted(stopped.message())
    except KeyboardInterrupt:  # before the federation started: nothing ran yet
        _interrupted("interrupted before the federation started; nothing to resume")
    except USER_ERRORS as error:
        _fail(str(error))
    except (FederationError, NoRepliesError) as error:  # the federation's own reasons (a hospital's traceback)
        _report_crash(error, code=2)
    except Exception as error:  # a bug or a resource problem: never a wall of locals on the console
        _report_crash(error, code=1)
    typer.echo(render_summary(result.metrics), nl=False)
    console.print(f"run folder: {result.run_dir}")


def _show_round(progress: RoundProgress) -> None:
    console.print(round_line(progress))


def _interrupted(line: str) -> None:
    from fl_mia.app.interrupt import EXIT_CODE

    errors.print(f"[bold yellow]{escape(line)}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(code=EXIT_CODE)


@app.command()
def show(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Print the summary table of a finished run."""
    from fl_mia.console_summary import render_summary
    from fl_mia.run_outputs import read_metrics
    from fl_mia.run_folder import read_status

    from fl_mia.app.suite import SUITE_JSON

    if not run_dir.exists():
        _fail(f"{run_dir}: does not exist; give a run folder (fl-mia run prints its path at the end)")
    if (run_dir / SUITE_JSON).is_file():
        _fail(f"{run_dir}: a suite folder, not a run folder; summarise it with: fl-mia report {run_dir} -o report.html")
    if not (run_dir / "metrics.json").is_file():
        _fail(f"{run_dir}: no metrics.json (state: {read_status(run_dir)['state']}); is this a finished run folder?")
    typer.echo(render_summary(read_metrics(run_dir)), nl=False)


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Finished run folders on the same candidates.")],
    attack: Annotated[
        list[str] | None, typer.Option("--attack", help="Attack to compare (repeatable); default: loss and update attacks.")
    ] = None,
    hospital: Annotated[
        int | None, typer.Option("--hospital", help="Only the candidates asked about this hospital (e.g. the target).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for comparison.csv and comparison_roc.png.")] = Path(
        "runs/comparison"
    ),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the comparison already in --out.")] = False,
) -> None:
    """Compare threat models or defences: a table and a log-log ROC overlay on the same candidates."""
    from rich.table import Table

    from fl_mia.app.comparison import (
        DEFAULT_ATTACKS, RESOLVES_ONE_PERCENT, ComparisonError, check_new_comparison_folder, load_runs,
        write_comparison,
    )

    try:
        check_new_comparison_folder(out, overwrite=overwrite)
        runs = load_runs(run_dirs)
    except ComparisonError as error:
        _fail(str(error))
    attacks = list(attack or [a for a in DEFAULT_ATTACKS if any(a in r.scores for r in runs)])
    rows = write_comparison(runs, attacks, out, hospital=str(hospital) if hospital is not None else None)
    scope = f"hospital {hospital}" if hospital is not None else "all hospitals"
    table = Table(title=f"membership inference · {scope} · AUC / TPR at 1% FPR")
    for column in ["run", "threat model", "Dice", *attacks]:
        table.add_column(column, justify="left" if column in ("run", "threat model") else "right")

    def cell(auc, tpr) -> str:
        if auc is None:
            return "—"
        return f"{auc:.3f} / " + ("—" if tpr is None else f"{tpr:.3f}")

    for row in rows:
        table.add_row(
            row["run"], f"{row['threat_model']}" + ("" if row["defences"] == "none" else f" + {row['defences']}"),
            f"{row['dice']:.3f}", *(cell(row[f"{a}:auc"], row[f"{a}:tpr@1%"]) for a in attacks),
        )
    if any(row[f"{a}:auc"] is not None and row[f"{a}:tpr@1%"] is None for row in rows for a in attacks):
        table.caption = f"— for TPR at 1% FPR: fewer than {RESOLVES_ONE_PERCENT} non-members cannot resolve it"
    Console(width=200).print(table)
    console.print(f"written: {out / 'comparison.csv'}, {out / 'comparison_roc.png'}")


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Experiment file (.toml), e.g. configs/defences/overfit_dp_sgd.toml.")],
    param: Annotated[str, typer.Option("--param", help="Dotted config key to sweep, e.g. defences.dp_sgd.noise_multiplier.")],
    values: Annotated[str, typer.Option("--values", help="Comma-separated values, e.g. 0.5,1,2 (each read like a --set value).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value for every setting (repeatable).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Sweep folder (default runs/sweep-<config>/); sweeps may share one.")
    ] = None,
) -> None:
    """Privacy–utility sweep: one run per value; sweep.csv and privacy_utility.png in the sweep folder."""
    from fl_mia.app.sweep import SWEEP_CSV, SWEEP_PLOT, SweepError, parse_values, run_sweep, sweep_configs

    out = out or Path("runs") / f"sweep-{config.stem}"
    try:
        parsed = parse_values(values)
        sweep_configs(config, param=param, values=parsed, overrides=set_ or [])  # every setting checked first
    except (SweepError, ConfigError) as error:
        _fail(str(error))

    import time

    from fl_mia.app.sweep import plain_value

    seconds: list[float] = []
    done: list[str] = []

    def start(index: int, total: int, value: str) -> None:
        left = total - index + 1
        eta = f" · ~{left * sum(seconds) / len(seconds) / 60:.0f} min left" if seconds else ""
        console.print(f"[{index}/{total}] {param}={plain_value(value)} · running{eta}", markup=False, highlight=False)
        seconds.append(-time.perf_counter())

    def show(row: dict) -> None:
        if seconds and seconds[-1] < 0:
            seconds[-1] += time.perf_counter()
        done.append(row["value"])
        aucs = " · ".join(f"{k[:-4]} AUC {float(v):.3f}" for k, v in row.items() if k.endswith(".auc") and v not in (None, ""))
        dice = row.get("dice")
        console.print(
            f"[{len(done)}/{len(parsed)}] {param}={plain_value(row['value'])} · {row['state']}"
            + (f" · Dice {float(dice):.3f}" if dice not in (None, "") else "")
            + (f" · {aucs}" if aucs else ""),
            markup=False, highlight=False,
        )

    try:
        run_sweep(config, param=param, values=parsed, out=out, overrides=set_ or [], on_setting=show, on_start=start)
    except (SweepError, *USER_ERRORS) as error:
        _fail(str(error))
    console.print(f"sweep: {out / SWEEP_CSV} · {out / SWEEP_PLOT}")


def _suite_progress(jobs: int):
    """One line per cell as it ends: ``[done/total] cell · state in N s · K left · ~M min left``."""
    ran: list[float] = []

    def show(progress) -> None:
        if progress.state != "skipped":
            ran.append(progress.seconds)
        left = progress.total - progress.done
        # Cells run `jobs` at a time, each taking about as long as the mean so far.
        eta = f" · ~{left * sum(ran) / len(ran) / jobs / 60:.0f} min left" if ran and left else ""
        console.print(
            f"[{progress.done}/{progress.total}] {progress.cell} · {progress.state}"
            + (f" in {progress.seconds:.0f} s" if progress.state != "skipped" else "")
            + f" · {left} left{eta}"
            + (f" · {progress.error}" if progress.error else ""),
            highlight=False,
        )

    return show


@app.command()
def suite(
    suite_file: Annotated[Path, typer.Argument(help="Suite file (.toml), e.g. configs/suites/threats.toml.")],
    out: Annotated[Path | None, typer.Option("--out", help="Suite folder (default runs/suite-<name>/).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the suite in --out: skip complete cells.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value in every cell (repeatable).")
    ] = None,
    shared_ray: Annotated[
        bool, typer.Option("--shared-ray/--ray-per-cell", help="Start one Ray head for every cell, or Ray once per cell (default: bench/suite_ray.py measured no saving).")
    ] = False,
    share_knowledge: Annotated[
        bool, typer.Option("--shared-knowledge/--no-shared-knowledge", help="Cells share the attacker's shadow models (OUT/knowledge/), or each trains its own.")
    ] = True,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Run up to N cells at once on this machine.")] = 1,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", envvar="RAY_ADDRESS", help="Run cells as Ray tasks over this existing Ray cluster (host:port).")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only these cells now: axis=value or seed=N (repeatable); complete cells stay listed, the rest missing.")
    ] = None,
) -> None:
    """Run a grid of experiments (threats × defences × seeds); one run folder per cell."""
    import time
    from contextlib import nullcontext

    from fl_mia.app.interrupt import terminate_as_ctrl_c
    from fl_mia.app.suite import SuiteError, load_suite, run_suite
    from fl_mia.app.suite_ray import shared_ray_cluster
    from fl_mia.app.suite_cluster import cell_pool, cells_runner

    started = time.perf_counter()
    try:
        loaded = load_suite(suite_file, extra_overrides=set_ or [])
    except SuiteError as error:
        _fail(str(error))
    out = out or Path("runs") / f"suite-{loaded.name}"
    show = _suite_progress(jobs)
    console.print(f"suite {loaded.name} · {len(loaded.cells)} cells · out {out}")
    continue_suite = (
        f"fl-mia suite {suite_file} --out {out} --resume"
        + "".join(f" --set {shlex.quote(o)}" for o in set_ or [])
        + "".join(f" --only {shlex.quote(o)}" for o in only or [])
        + (f" --jobs {jobs}" if jobs > 1 and not ray_address else "")
    )
    try:
        submit, close = cell_pool(jobs, ray_address, shared_ray=shared_ray)
    except SuiteError as error:
        _fail(str(error))
    stopped_line = None  # said once the cells have stopped (close)
    try:
        with terminate_as_ctrl_c() if submit else nullcontext(), shared_ray_cluster(loaded, out=out) if shared_ray else nullcontext() as address:
            if address:
                console.print(f"cells join one Ray head at {address} (started once for the suite)", highlight=False)
            with resume_command(continue_suite):
                summary = run_suite(
                    loaded, out=out, resume=resume, on_cell=show, startup_seconds=time.perf_counter() - started,
                    share_knowledge=share_knowledge, cells_runner=cells_runner(submit) if submit else None, only=only,
                )
    except RunInterrupted as stopped:
        stopped_line = stopped.message(continue_suite)
    except KeyboardInterrupt:
        where = "running cells stopped at their last checkpoint" if submit else "between cells"
        stopped_line = f"interrupted ({where}); continue with: {continue_suite}"
    except (SuiteError, *USER_ERRORS) as error:
        _fail(str(error))
    finally:
        close()
    if stopped_line is not None:
        _interrupted(stopped_line)
    failed = [c["name"] for c in summary["cells"] if c["state"] == "failed"]
    cost = summary["overhead"]
    if cost.get("cells_run"):
        console.print(
            f"suite overhead: {cost['per_cell_seconds']:.1f} s per cell beyond the runs themselves "
            f"({100 * cost['share']:.1f}% of the suite's {cost['suite_seconds']:.0f} s; {cost['cells_run']} cells run)"
        )
    if failed:
        console.print(f"failed cells ({len(failed)}): {', '.join(failed)}; see their run.log, rerun with --resume")
    console.print(f"suite folder: {out} · report: fl-mia report {out} -o {out / 'report.html'}")


@app.command()
def report(
    sources: Annotated[list[Path], typer.Argument(help="Suite folders and/or finished run folders.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML report file (self-contained).")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Markdown report file (tables, no figures).")] = None,
) -> None:
    """One report over suites and runs: intervals, threat × defence matrix, ROC, frontier, ε, confound."""
    from fl_mia.report.collect import ReportError
    from fl_mia.report.render import significance_note, write_report

    if output is None and markdown is None:
        output = Path("report.html")
    try:
        data = write_report(sources, html_path=output, markdown_path=markdown)
    except ReportError as error:
        _fail(str(error))
    console.print(significance_note(data), highlight=False)
    console.print("written: " + ", ".join(str(p) for p in (output, markdown) if p is not None))


app.command("deploy")(deploy_command)  # hospitals as Flower SuperNodes: fl_mia/app/deploy.py, local_deployment.py


def main() -> None:
    app()


if __name__ == "__main__":
    main()
