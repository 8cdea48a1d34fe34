"""Reading the experiment from Flower's run config (the ``flwr run .`` path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fl_mia.config import ExperimentConfig
from fl_mia.config.loading import load_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def experiment_from_run_config(run_config: dict) -> ExperimentConfig:
    """Load the file named by the ``experiment`` key (relative to the project root).

    Extra ``--run-config`` keys of the form ``set.<dotted.key>`` override config values,
    e.g. ``flwr run . --run-config 'set.federation.rounds=2'``.
    """
    path = Path(str(run_config.get("experiment", "configs/quickstart.toml")))
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    overrides = [f"{key[len('set.'):]}={value!r}" if isinstance(value, str) else f"{key[len('set.'):]}={value}"
                 for key, value in run_config.items() if str(key).startswith("set.")]
    overrides = [o.replace("'", '"') for o in overrides]
    return load_config(path, overrides)


def run_folder_from_run_config(run_config: dict, *, name: str, resolved: dict[str, Any]) -> Path:
    """Create the run folder for ``flwr run .`` (``runs-root`` key, default ./runs).

    ``name``: the experiment's; ``resolved``: its config as written to config.toml (``to_toml_dict()``).
    """
    from fl_mia.run_folder import create_run_folder, set_status, write_toml

    root = str(run_config.get("runs-root", "") or "runs")
    folder = create_run_folder(name, runs_root=Path(root))
    write_toml(folder / "config.toml", resolved)
    set_status(folder, "running")
    return folder
