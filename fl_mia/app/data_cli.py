"""``fl-mia data``: look at a dataset before training on it, and write the phantom as one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fl_mia.config import ConfigError
from fl_mia.app.preflight import load_experiment

data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Inspect datasets; export the phantom in a dataset layout.")
console, errors = Console(), Console(stderr=True)


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: dotted.key=value (repeatable).")]


@data_app.command()
def inspect(
    config: Annotated[Path, typer.Argument(help="Experiment file (.toml), e.g. configs/data/msd.toml.")],
    set_: SetOption = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for data_preview.png.")] = Path("."),
) -> None:
    """Cases, slices, sites, per-hospital splits, classes, sizes and intensities; writes data_preview.png."""
    from fl_mia.data.overview import summarize, write_preview

    try:
        cfg = load_experiment(config, set_ or [])  # reads (and caches) the dataset
    except ConfigError as error:
        _fail(str(error))
    summary = summarize(cfg.data, cfg.federation, seed=cfg.seed)
    overview = Table(title="dataset", show_header=False)
    for name, value in summary.overview:
        overview.add_row(name, value)
    console.print(overview)
    splits = Table(title="hospitals (p = patients, sl = slices)")
    for column in ("who", "train", "heldout", "test", "population"):
        splits.add_column(column)
    for row in summary.splits:
        splits.add_row(*(row[c] for c in ("who", "train", "heldout", "test", "population")))
    console.print(splits)
    console.print(f"preview: {write_preview(cfg.data, cfg.federation, out / 'data_preview.png', seed=cfg.seed)}")


@data_app.command("export-phantom")
def export_phantom_command(
    out: Annotated[Path, typer.Argument(help="New folder to write the dataset into.")],
    layout: Annotated[str, typer.Option("--layout", help="msd, nnunet, folder or npz.")] = "msd",
    config: Annotated[Path, typer.Option("--config", help="Phantom experiment to export.")] = Path("configs/quickstart.toml"),
    set_: SetOption = None,
) -> None:
    """Write the embedded phantom in a dataset layout, with manifest.csv (case,site) of its hospitals."""
    from fl_mia.data.export import as_set_arguments, export_phantom

    try:
        cfg = load_experiment(config, set_ or [])
        if cfg.data.source != "phantom":
            raise ConfigError(f"{config}: data.source is {cfg.data.source!r}; export-phantom exports the phantom")
        settings = export_phantom(cfg.data, cfg.federation, layout, out, seed=cfg.seed)
    except (ConfigError, ValueError) as error:
        _fail(str(error))
    console.print(f"wrote the phantom ({layout}) to {out}; load it with its own hospitals:")
    console.print(f"  fl-mia run configs/data/{layout}.toml " + " ".join(f"--set '{a}'" for a in as_set_arguments(settings)), soft_wrap=True, highlight=False)
