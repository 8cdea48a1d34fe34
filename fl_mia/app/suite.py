"""Experiment suites: a grid of ordinary runs (threats × defences × seeds) in one folder.

A suite file names a base config and axes; every combination of one value per axis and
one seed is a *cell*, an ordinary run folder ``OUT/cells/<cell>/``::

    name = "threats"
    config = "../threats/honest.toml"   # relative to the suite file
    seeds = [0, 1, 2]
    set = ["referee.candidates_per_hospital=25"]   # every cell

    [axes.threat]                       # one axis; each value a config file and/or --set keys
    honest = {}
    trap_weights = { config = "../threats/trap_weights.toml" }

    [axes.defence]
    none = {}
    argmax = { set = ['defences.output.mode="argmax"'] }

The first value of each axis is the baseline a cell is compared with, unless the value names
its own: ``secagg_model_inconsistency = { config = "...", baseline = "secagg" }`` pairs that
threat with the ``secagg`` value of the same axis (same seed, same other axes), and the report's
paired differences are computed within such matched pairs only.
``OUT/suite.json`` records every cell (state, seconds, error) and is rewritten after each,
so a killed suite loses at most the cell it was running: ``--resume`` skips complete cells,
continues an interrupted cell from its checkpoint (:func:`fl_mia.app.experiment.resume_experiment`)
and runs failed or missing ones again. A failing cell is recorded and the suite goes on.
``only`` (``--only threat=trap_weights --only seed=0``) runs part of the grid now: the chosen
cells run, complete ones are still listed, the rest stay missing (the report names them), so a
small machine can fill a suite in the order its questions need and ``--resume`` the rest later.

What the attacker builds from its own knowledge (shadow and reference models) is the same in
every cell of one seed, data and recipe: the cells share it through ``OUT/knowledge/``
(:mod:`fl_mia.attacker.knowledge_cache`, content-addressed), so a threats suite trains each
seed's shadows once. ``share_knowledge=False`` (``--no-shared-knowledge``) trains them per cell.

Every cell starts Ray and stops it again (``run_simulation`` does). With ``--shared-ray`` the
CLI starts one private Ray head instead (:func:`fl_mia.app.suite_ray.shared_ray_cluster`) and every cell joins it
through ``RAY_ADDRESS``, as a run joins any cluster; cells' configs and results are unchanged.
``bench/suite_ray.py`` measures both ways side by side; it found no saving on the development
machine (docs/benchmarks/suite_ray.md), so one Ray per cell stays the default.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_mia.config import ConfigError, ExperimentConfig
from fl_mia.app.preflight import load_experiment
from fl_mia.run_folder import RunFolderError, read_status, write_json
from fl_mia.app.resume import still_running
from fl_mia.app.sweep import _completed as completed_metrics

logger = logging.getLogger("fl_mia")

SUITE_JSON = "suite.json"
CELLS = "cells"
KNOWLEDGE = "knowledge"
SUITE_KEYS = {"name", "description", "config", "seeds", "set", "axes"}
AXIS_VALUE_KEYS = {"config", "set", "baseline"}


class SuiteError(ValueError):
    """A suite file or folder that cannot be run as asked; the message says what to change."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a value per axis and a seed."""

    name: str
    axes: dict[str, str]
    seed: int
    config_path: Path
    overrides: list[str]
    cfg: ExperimentConfig
    baseline: str  # name of the cell with every axis at its first value, same seed


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    axes: dict[str, list[str]]
    seeds: list[int]
    cells: list[Cell] = field(default_factory=list)

    def running_order(self) -> list[Cell]:
        """Seed by seed: a suite stopped early has every comparison on fewer seeds, not some on none."""
        return sorted(self.cells, key=lambda cell: self.seeds.index(cell.seed))

    def in_listing_order(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        position = {cell.name: index for index, cell in enumerate(self.cells)}
        return sorted(records, key=lambda record: position[record["name"]])


def _as_string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SuiteError(f"{where}: must be a list of strings, e.g. [\"federation.rounds=3\"]")
    return value


def load_suite(path: Path, *, extra_overrides: list[str] | None = None) -> Suite:
    """Read and check a suite file; every cell's config is loaded and validated before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{path}: not valid TOML ({error})") from None
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise SuiteError(f"{path}: unknown key {sorted(unknown)[0]!r}; a suite has {sorted(SUITE_KEYS)}")
    if "config" not in raw:
        raise SuiteError(f"{path}: config: missing; name the base experiment file, e.g. config = \"../quickstart.toml\"")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise SuiteError(f"{path}: seeds: give a list of non-negative integers, e.g. seeds = [0, 1, 2]")
    common = _as_string_list(raw.get("set", []), f"{path}: set") + list(extra_overrides or [])
    axes_raw = raw.get("axes", {})
    if not isinstance(axes_raw, dict):
        raise SuiteError(f"{path}: axes: must be tables, e.g. [axes.threat] honest = {{}}")
    axes: dict[str, dict[str, dict[str, Any]]] = {}
    for axis, values in axes_raw.items():
        if not isinstance(values, dict) or not values:
            raise SuiteError(f"{path}: axes.{axis}: give at least one value, e.g. none = {{}}")
        for value, spec in values.items():
            if not isinstance(spec, dict) or set(spec) - AXIS_VALUE_KEYS:
                raise SuiteError(f"{path}: axes.{axis}.{value}: a value is a table with keys config, set and/or baseline")
            if "baseline" in spec and spec["baseline"] not in values:
                raise SuiteError(f"{path}: axes.{axis}.{value}.baseline: {spec['baseline']!r} is not a value of axes.{axis}; name one of {sorted(values)}")
        axes[axis] = values
    base_config = (path.parent / raw["config"]).resolve()
    suite = Suite(
        name=raw.get("name", path.stem), description=raw.get("description", ""), path=path,
        axes={axis: list(values) for axis, values in axes.items()}, seeds=list(seeds),
    )  # fmt: skip
    for combination in itertools.product(*(list(values.items()) for values in axes.values())) if axes else [()]:
        chosen = {axis: value for axis, (value, _) in zip(axes, combination)}
        config_files = [spec["config"] for _, spec in combination if "config" in spec]
        if len(config_files) > 1:
            raise SuiteError(f"{path}: cell {chosen}: more than one axis names a config file; only one may")
        config_path = (path.parent / config_files[0]).resolve() if config_files else base_config
        axis_sets = [o for axis, (value, spec) in zip(axes, combination) for o in _as_string_list(spec.get("set", []), f"{path}: axes.{axis}.{value}.set")]
        for seed in seeds:
            overrides = [*common, *axis_sets, f"seed={seed}"]
            try:
                cfg = load_experiment(config_path, overrides)
            except ConfigError as error:
                raise SuiteError(f"{path}: cell {cell_name(chosen, seed)}: {error}") from None
            baseline = cell_name(baseline_axes(axes, chosen), seed)
            suite.cells.append(
                Cell(cell_name(chosen, seed), chosen, seed, config_path, overrides, cfg, baseline)
            )
    return suite


def select_cells(suite: Suite, only: list[str], states: dict[str, str]) -> Suite:
    """The suite restricted to the cells ``only`` chooses, plus every complete cell (still listed).

    ``only`` holds ``axis=value`` or ``seed=N``; several values of one key are alternatives,
    different keys must all match.
    """
    if not only:
        return suite
    wanted: dict[str, set[str]] = {}
    for choice in only:
        key, sep, value = choice.partition("=")
        key, value = key.strip(), value.strip()
        known = {"seed": [str(s) for s in suite.seeds], **suite.axes}
        if not sep or key not in known:
            raise SuiteError(f"--only {choice}: give axis=value or seed=N; this suite's keys are {sorted(known)}")
        if value not in known[key]:
            raise SuiteError(f"--only {choice}: {key} has no value {value!r} in this suite; choose one of {known[key]}")
        wanted.setdefault(key, set()).add(value)

    def chosen(cell: Cell) -> bool:
        values = {**cell.axes, "seed": str(cell.seed)}
        return all(values[key] in allowed for key, allowed in wanted.items())

    kept = [cell for cell in suite.cells if chosen(cell) or states[cell.name] == "complete"]
    return Suite(suite.name, suite.description, suite.path, suite.axes, suite.seeds, kept)


def baseline_axes(axes: dict[str, dict[str, dict[str, Any]]], chosen: dict[str, str]) -> dict[str, str]:
    """The cell a cell is compared with: the values it names as baselines, else every axis at its first value."""
    named = {axis: axes[axis][value]["baseline"] for axis, value in chosen.items() if "baseline" in axes[axis][value]}
    if named:
        return {**chosen, **named}
    return {axis: next(iter(values)) for axis, values in axes.items()}


def cell_name(axes: dict[str, str], seed: int) -> str:
    return "__".join([*(f"{axis}={value}" for axis, value in axes.items()), f"seed={seed}"])


def _cell_state(folder: Path, cfg: ExperimentConfig) -> str:
    """``complete`` (same config), ``running`` (alive in another process), ``interrupted`` (resumable), ``empty`` or ``foreign``."""
    if not folder.exists() or not any(folder.iterdir()):
        return "empty"
    if (folder / "config.toml").is_file() and tomllib.loads((folder / "config.toml").read_text()) != cfg.to_toml_dict():
        return "foreign"
    if completed_metrics(folder, cfg) is not None:
        return "complete"
    if still_running(read_status(folder)):
        return "running"  # another process is running this cell right now: never touch it
    return "interrupted"


def _cell_record(cell: Cell, folder: Path, **fields: Any) -> dict[str, Any]:
    return {
        "name": cell.name, "axes": cell.axes, "seed": cell.seed, "config": str(cell.config_path),
        "overrides": cell.overrides, "baseline": cell.baseline, "run_dir": str(folder), **fields,
    }  # fmt: skip


@dataclass
class SuiteProgress:
    """What the suite reports after each cell."""

    cell: str
    state: str  # complete | skipped | resumed | failed
    done: int
    total: int
    seconds: float
    error: str | None = None


def run_suite(
    suite: Suite,
    *,
    out: Path,
    resume: bool = False,
    run: Callable[..., Any] | None = None,
    resume_run: Callable[..., Any] | None = None,
    on_cell: Callable[[SuiteProgress], None] | None = None,
    startup_seconds: float = 0.0,
    share_knowledge: bool = True,
    cells_runner: Callable[..., None] | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Run every cell not complete yet (of those ``only`` chooses); return (and keep writing) ``suite.json``.

    With ``share_knowledge`` the cells share the attacker's shadows through ``OUT/knowledge/``.
    ``cells_runner`` runs cells at once (:mod:`fl_mia.app.suite_cluster`); default one by one.

    ``run(cfg, out=folder)`` and ``resume_run(folder, cfg=cfg)`` default to
    :func:`fl_mia.app.experiment.run_experiment` and ``resume_experiment``.
    """
    if run is None or resume_run is None:
        import flwr.common  # noqa: F401  Flower's console handler must exist before run_logging quiets it

        from fl_mia.app.experiment import resume_experiment, run_experiment

        run, resume_run = run or run_experiment, resume_run or resume_experiment
    out = Path(out)
    if (out / SUITE_JSON).is_file() and not resume:
        raise SuiteError(f"{out}: already holds a suite; continue it with --resume or choose another --out")
    states = {cell.name: _cell_state(out / CELLS / cell.name, cell.cfg) for cell in suite.cells}
    foreign = [name for name, state in states.items() if state == "foreign"]
    if foreign:
        raise SuiteError(f"{out / CELLS / foreign[0]}: holds a run of another config; remove it or choose another --out")
    suite = select_cells(suite, only or [], states)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "suite": suite.name, "description": suite.description, "suite_file": str(suite.path),
        "axes": suite.axes, "seeds": suite.seeds, "cells": records,
    }  # fmt: skip
    with shared_knowledge(out / KNOWLEDGE if share_knowledge else None):
        (cells_runner or _run_cells)(suite, out, states, records, summary, started, run=run, resume_run=resume_run, on_cell=on_cell)
    summary["wall_time_s"] = time.perf_counter() - started + startup_seconds
    # Cells run at once overlap: the time around one run has no meaning there.
    summary["overhead"] = overhead(records, suite_seconds=summary["wall_time_s"]) if cells_runner is None else {"cells_at_once": True}
    write_json(out / SUITE_JSON, summary)
    return summary


@contextmanager
def shared_knowledge(folder: Path | None) -> Iterator[None]:
    """Point the runs started in this process at ``folder`` for the attacker's shared knowledge."""
    from fl_mia.attacker.knowledge_cache import KNOWLEDGE_CACHE_ENV

    previous = os.environ.get(KNOWLEDGE_CACHE_ENV)
    if folder is not None:
        os.environ[KNOWLEDGE_CACHE_ENV] = str(Path(folder).resolve())
    else:
        os.environ.pop(KNOWLEDGE_CACHE_ENV, None)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(KNOWLEDGE_CACHE_ENV, None)
        else:
            os.environ[KNOWLEDGE_CACHE_ENV] = previous


def _run_cells(suite, out, states, records, summary, started, *, run, resume_run, on_cell) -> None:
    """The cells seed by seed: skip the complete ones, leave running ones alone, run the rest."""
    done = 0
    for cell in suite.running_order():
        folder = out / CELLS / cell.name
        state = states[cell.name]
        cell_started = time.perf_counter()
        if state == "complete":
            records.append(_cell_record(cell, folder, state="complete", skipped=True, **_times(folder)))
            done += 1
            _report(on_cell, cell, "skipped", done, len(suite.cells), 0.0)
            continue
        if state == "running":
            error = f"still running in process {read_status(folder).get('pid')}; left alone (resume the suite once it ends)"
            logger.error("suite cell %s: %s", cell.name, error)
            records.append(_cell_record(cell, folder, state="failed", skipped=True, error=error))
            done += 1
            _report(on_cell, cell, "failed", done, len(suite.cells), 0.0, error)
            continue
        label, error = _run_cell(cell, folder, state, run=run, resume_run=resume_run)
        seconds = time.perf_counter() - cell_started
        record_state = "failed" if label == "failed" else "complete"
        records.append(_cell_record(cell, folder, state=record_state, skipped=False, cell_seconds=seconds, error=error, **_times(folder)))
        records[:] = suite.in_listing_order(records)
        done += 1
        summary["wall_time_s"] = time.perf_counter() - started
        write_json(out / SUITE_JSON, summary)
        _report(on_cell, cell, label, done, len(suite.cells), seconds, error)
    records[:] = suite.in_listing_order(records)


def _run_cell(
    cell: Cell, folder: Path, state: str, *, run: Callable[..., Any], resume_run: Callable[..., Any]
) -> tuple[str, str | None]:
    """Run (or resume, when interrupted) one cell; return its label and, when it failed, the error."""
    try:
        if state == "interrupted":
            try:
                resume_run(folder, cfg=cell.cfg)
                return "resumed", None
            except RunFolderError as reason:  # killed before its first checkpoint: nothing to keep
                logger.warning("cell %s cannot resume (%s); running it again", cell.name, reason)
                shutil.rmtree(folder)
                run(cell.cfg, out=folder)
                return "complete", None
        run(cell.cfg, out=folder)
        return "complete", None
    except KeyboardInterrupt:
        raise
    except Exception as failure:  # one failed cell must not lose the others
        error = f"{type(failure).__name__}: {failure}"
        logger.error("suite cell %s failed: %s", cell.name, error)
        return "failed", error


def _times(folder: Path) -> dict[str, Any]:
    """The run's own wall time (simulation and privacy step) as its status records it."""
    status = read_status(folder) if folder.exists() else {}
    return {"run_wall_time_s": status.get("wall_time_s")}


def overhead(records: list[dict[str, Any]], *, suite_seconds: float | None = None) -> dict[str, Any]:
    """Time the suite spent around the runs it ran now (loading and checking every cell's
    config, resuming, bookkeeping), per cell run and as a share of the suite's wall time.

    Ray's start-up is inside each run's wall time (``run_simulation`` starts it), so it
    counts as the run's, not the suite's.
    """
    ran = [r for r in records if not r.get("skipped") and r.get("run_wall_time_s") is not None]
    cell_seconds = sum(r["cell_seconds"] for r in ran)
    run_seconds = sum(r["run_wall_time_s"] for r in ran)
    if not ran:
        return {"cells_run": 0}
    total = suite_seconds if suite_seconds is not None else cell_seconds
    return {
        "cells_run": len(ran),
        "suite_seconds": total,
        "run_seconds": run_seconds,
        "per_cell_seconds": (total - run_seconds) / len(ran),
        "share": (total - run_seconds) / total if total else None,
    }


def _report(on_cell, cell: Cell, state: str, done: int, total: int, seconds: float, error: str | None = None) -> None:
    if on_cell is not None:
        on_cell(SuiteProgress(cell=cell.name, state=state, done=done, total=total, seconds=seconds, error=error))
