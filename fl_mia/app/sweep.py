"""Privacy–utility sweep: one run per value of one config parameter, one table, one figure.

``fl-mia sweep CONFIG --param defences.dp_sgd.noise_multiplier --values 0.5,1,2 --out DIR``
runs every setting as its own run folder ``DIR/<config>__<param>=<value>/`` (with
:func:`fl_mia.app.experiment.run_experiment`) and keeps ``DIR/sweep.csv`` — one row per setting:
Dice, ε, wall time, and every attack's AUC and TPR at 1% FPR — and ``DIR/privacy_utility.png``
(attack strength against Dice) up to date after each setting.

Several sweeps may share one ``DIR`` (e.g. DP-SGD noise, then central-DP noise, then the
undefended config): rows accumulate, one series per (config, parameter), and the figure shows
them all. A setting whose folder already holds a complete run of the same config is read
back instead of run again, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fl_mia.config import ConfigError, ExperimentConfig
from fl_mia.app.preflight import load_experiment
from fl_mia.referee.scopes import headline, resolvable_tpr, scored_attacks
from fl_mia.run_outputs import read_metrics
from fl_mia.run_folder import atomic_write_bytes, read_status, write_csv

logger = logging.getLogger("fl_mia")

SWEEP_CSV = "sweep.csv"
SWEEP_PLOT = "privacy_utility.png"
FIXED_COLUMNS = [
    "series", "config", "param", "value", "state",
    "dice", "dice_pooled",
    "epsilon_dp_sgd", "epsilon_dp_sgd_at_1e-5", "epsilon_dp_sgd_unit", "noise_dp_sgd", "epsilon_central_dp", "noise_central_dp",
    "strongest_attack", "strongest_auc", "strongest_tpr_at_1pct_fpr", "largest_empirical_epsilon",
    "wall_time_s", "run_dir",
]  # fmt: skip
ATTACK_METRICS = ("auc", "tpr_at_1pct_fpr")


class SweepError(ValueError):
    """A sweep that cannot mean what it says (e.g. sweeping the noise of a defence that is off)."""


def parse_values(text: str) -> list[str]:
    """``"0.5, 1,2"`` → ``["0.5", "1", "2"]`` (each parsed later like a ``--set`` value)."""
    values = [v.strip() for v in text.split(",")]
    if not values or any(not v for v in values):
        raise SweepError(f"--values {text!r}: give comma-separated values, e.g. --values 0.5,1,2")
    if len(set(values)) != len(values):
        raise SweepError(f"--values {text!r}: a value is repeated")
    return values


def _check_param_matters(cfg: ExperimentConfig, param: str) -> None:
    """Refuse sweeps whose parameter the run would ignore (the sweep would measure nothing)."""
    dp_sgd, central = cfg.defences.dp_sgd, cfg.defences.central_dp
    if param.startswith("defences.dp_sgd.") and param != "defences.dp_sgd.enabled" and not dp_sgd.enabled:
        raise SweepError(f"--param {param}: DP-SGD is off in this config; add --set defences.dp_sgd.enabled=true")
    if param == "defences.dp_sgd.noise_multiplier" and dp_sgd.target_epsilon is not None:
        raise SweepError(
            f"--param {param}: ignored because defences.dp_sgd.target_epsilon is set; sweep "
            "defences.dp_sgd.target_epsilon instead, or use a config without it"
        )
    if param.startswith("defences.central_dp.") and param != "defences.central_dp.mode" and central.mode == "off":
        raise SweepError(
            f"--param {param}: central DP is off in this config; add --set defences.central_dp.mode=client_clipping"
        )
    if param.startswith("defences.output.noise_std") and cfg.defences.output.mode != "noisy_probabilities":
        raise SweepError(f"--param {param}: used only with --set defences.output.mode=noisy_probabilities")


def sweep_configs(config: Path, *, param: str, values: list[str], overrides: list[str]) -> list[ExperimentConfig]:
    """Every setting's validated config, all loaded before anything runs (a bad value fails first)."""
    configs = []
    for value in values:
        try:
            cfg = load_experiment(config, [*overrides, f"{param}={value}"])
        except ConfigError as error:
            raise SweepError(f"{param}={value}: {error}") from None
        _check_param_matters(cfg, param)
        configs.append(cfg)
    if len(configs) > 1 and all(c.to_toml_dict() == configs[0].to_toml_dict() for c in configs[1:]):
        raise SweepError(f"--param {param}: every value gives the same config; is the key spelt right?")
    return configs


def plain_value(value: str) -> str:
    """The value as a person reads it: TOML's quotes around a string dropped (``"argmax"`` → ``argmax``)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def setting_folder(out: Path, config_name: str, param: str, value: str) -> Path:
    return Path(out) / f"{config_name}__{param.rsplit('.', 1)[-1]}={plain_value(value)}"


def sweep_row(metrics: dict[str, Any] | None, *, series: str, config: str, param: str, value: str, run_dir: Path, state: str) -> dict[str, Any]:
    """One row of ``sweep.csv`` from a run's ``metrics.json`` (None when the run failed)."""
    row: dict[str, Any] = {
        "series": series, "config": config, "param": param, "value": value, "state": state, "run_dir": str(run_dir),
    }  # fmt: skip
    if metrics is None:
        return row
    utility = metrics.get("utility", {})
    report = metrics.get("defence_report", {})
    row.update(
        dice=utility.get("dice"),
        dice_pooled=utility.get("dice_pooled"),
        epsilon_dp_sgd=report.get("dp_sgd", {}).get("epsilon_max"),
        noise_dp_sgd=report.get("dp_sgd", {}).get("noise_multiplier"),
        epsilon_central_dp=(report.get("central_dp", {}).get("epsilon") or {}).get("value"),
        noise_central_dp=report.get("central_dp", {}).get("noise_multiplier"),
        wall_time_s=metrics.get("wall_time_s"),
    )
    row["epsilon_dp_sgd_at_1e-5"] = report.get("dp_sgd", {}).get("epsilon_max_at_reference_delta")
    row["epsilon_dp_sgd_unit"] = (report.get("dp_sgd", {}).get("epsilon") or {}).get("unit")
    verdict = metrics.get("privacy", {}).get("verdict")
    if verdict:  # every attack counted, update attacks (accumulated included) as much as prediction ones
        row.update(
            strongest_attack=verdict["strongest_by_auc"]["attack"],
            strongest_auc=verdict["strongest_by_auc"]["auc"],
            strongest_tpr_at_1pct_fpr=(verdict["strongest_at_low_fpr"] or {}).get("tpr_at_1pct_fpr"),
            largest_empirical_epsilon=(verdict["largest_empirical_epsilon"] or {}).get("empirical_epsilon"),
        )
    for attack, result in scored_attacks(metrics.get("privacy")).items():
        shown = headline(result)  # targeted where the threat sent hospitals different models
        row[f"{attack}.auc"] = shown["auc"]
        row[f"{attack}.tpr_at_1pct_fpr"] = resolvable_tpr(shown)  # blank where the non-members cannot resolve it
    return row


def read_sweep(out: Path) -> list[dict[str, str]]:
    path = Path(out) / SWEEP_CSV
    if not path.is_file():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text())))


def write_sweep(out: Path, rows: list[dict[str, Any]]) -> None:
    attack_columns = sorted({key for row in rows for key in row if key not in FIXED_COLUMNS})
    write_csv(Path(out) / SWEEP_CSV, rows, FIXED_COLUMNS + attack_columns)
    plot_privacy_utility(Path(out) / SWEEP_PLOT, rows)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plot_privacy_utility(path: Path, rows: list[dict[str, Any]]) -> None:
    """Attack AUC and TPR at 1% FPR against Dice: colour = attack, marker = series, labels = values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("state") == "complete"]
    attacks = sorted({k.rsplit(".", 1)[0] for r in rows for k in r if k.endswith(".auc")})
    series = list(dict.fromkeys(r["series"] for r in rows))
    markers = "osD^vP*X"
    colours = {a: f"C{i}" for i, a in enumerate(attacks)}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for s_index, name in enumerate(series):
        points = sorted((r for r in rows if r["series"] == name), key=lambda r: _number(r["dice"]))
        marker = markers[s_index % len(markers)]
        for attack in attacks:
            for ax, key in zip(axes, ATTACK_METRICS):
                xs = [_number(r["dice"]) for r in points]
                ys = [_number(r.get(f"{attack}.{key}")) for r in points]
                ax.plot(xs, ys, marker=marker, color=colours[attack], linestyle="-" if s_index == 0 else "--", alpha=0.85)
    for ax, key in zip(axes, ATTACK_METRICS):
        _label_each_run_once(ax, rows, attacks, key)
    for ax, key, chance in zip(axes, ATTACK_METRICS, (0.5, 0.01)):
        ax.axhline(chance, color="k", linestyle=":", linewidth=0.8)
        ax.set_xlabel("Dice of the global model")
        ax.set_ylabel({"auc": "attack AUC", "tpr_at_1pct_fpr": "attack TPR at 1% FPR"}[key])
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[a], label=a) for a in attacks]
    handles += [
        plt.Line2D([], [], color="grey", marker=markers[i % len(markers)], linestyle="-" if i == 0 else "--", label=s)
        for i, s in enumerate(series)
    ]
    figure.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle("privacy–utility: each point a run, labelled with the swept value", fontsize=10)
    figure.tight_layout(rect=(0, 0.06 + 0.03 * (len(handles) // 3), 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _completed(folder: Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """Metrics of a complete run of exactly ``cfg`` in ``folder``, else None."""
    if read_status(folder)["state"] != "complete":
        return None
    saved = tomllib.loads((folder / "config.toml").read_text())
    return read_metrics(folder) if saved == cfg.to_toml_dict() else None


def _label_each_run_once(ax, rows: list[dict[str, Any]], attacks: list[str], key: str) -> None:
    """One label per run, above its highest point: every attack of a run shares its Dice, so
    labelling each point stacks the same value on itself."""
    for row in rows:
        x = _number(row["dice"])
        ys = [y for y in (_number(row.get(f"{attack}.{key}")) for attack in attacks) if math.isfinite(y)]
        if math.isfinite(x) and ys:
            ax.annotate(plain_value(str(row["value"])), (x, max(ys)), fontsize=7, xytext=(0, 6),
                        textcoords="offset points", ha="center")


def run_sweep(
    config: Path,
    *,
    param: str,
    values: list[str],
    out: Path,
    overrides: list[str] | None = None,
    run: Callable[..., Any] | None = None,
    on_setting: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or read back) every setting, rewriting ``sweep.csv`` and the figure after each one.

    ``run(cfg, out=folder)`` defaults to :func:`fl_mia.app.experiment.run_experiment`. A setting
    that raises is recorded with ``state = failed`` and the sweep goes on; the error is logged.
    Returns the rows of this sweep (``sweep.csv`` also keeps earlier sweeps' rows).
    """
    if run is None:
        import flwr.common  # noqa: F401  Flower's console handler must exist before run_logging quiets it

        from fl_mia.app.experiment import run_experiment as run
    configs = sweep_configs(config, param=param, values=values, overrides=overrides or [])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for value, cfg in zip(values, configs):
        folder = setting_folder(out, cfg.name, param, value)
        if folder.exists() and any(folder.iterdir()) and _completed(folder, cfg) is None:
            raise SweepError(
                f"{folder}: holds another config or an unfinished run; remove it or choose another --out"
            )
    rows = read_sweep(out)
    mine = []
    series = f"{configs[0].name}: {param}"
    for index, (value, cfg) in enumerate(zip(values, configs), start=1):
        folder = setting_folder(out, cfg.name, param, value)
        metrics = _completed(folder, cfg) if folder.exists() else None
        state = "complete"
        if metrics is None:
            if on_start is not None:
                on_start(index, len(values), value)
            try:
                metrics = run(cfg, out=folder).metrics
            except Exception as error:  # one failed setting must not lose the others
                logger.error("sweep setting %s=%s failed: %s: %s", param, value, type(error).__name__, error)
                metrics, state = None, "failed"
        row = sweep_row(metrics, series=series, config=cfg.name, param=param, value=value, run_dir=folder, state=state)
        rows = [r for r in rows if r.get("run_dir") != str(folder)] + [row]
        mine.append(row)
        write_sweep(out, rows)
        if on_setting is not None:
            on_setting(row)
    return mine
