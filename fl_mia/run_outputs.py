"""What a finished run writes: ``metrics.json``, ``rounds.csv``, final weights; and reading them back."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_mia.models import count_parameters, set_weights
from fl_mia.round_log import ROUND_COLUMNS, TIMING_COLUMNS, RoundLog
from fl_mia.run_folder import atomic_write_bytes, write_csv, write_json

UTILITY_KEYS = ("dice", "iou", "dice_pooled", "iou_pooled", "dice_lesion_images", "loss")


def utility_section(round_log: RoundLog, num_hospitals: int) -> dict[str, Any]:
    final = round_log.evaluation(round_log.last_round)
    initial = round_log.evaluation(0)
    return {
        **{key: final["overall"][key] for key in UTILITY_KEYS},
        "num_test_images": final["overall"]["num_images"],
        "per_hospital": {str(k): {key: final[f"hospital_{k}"][key] for key in UTILITY_KEYS} for k in range(num_hospitals)},
        "initial": {key: initial["overall"][key] for key in UTILITY_KEYS} if initial else None,
    }


def split_wall_clock(section: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``section`` without its ``*_seconds`` entries, and those entries at the same paths.

    Timings vary run to run; keeping them under ``cost`` leaves every other key of
    metrics.json reproducible for a config and seed.
    """
    clean: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for key, value in section.items():
        if key.endswith("_seconds"):
            timings[key] = value
        elif isinstance(value, dict):
            inner, inner_timings = split_wall_clock(value)
            clean[key] = inner
            if inner_timings:
                timings[key] = inner_timings
        else:
            clean[key] = value
    return clean, timings


def write_federation_outputs(
    run_dir: Path,
    round_log: RoundLog,
    *,
    experiment: str,
    seed: int,
    threat_model: str,
    num_hospitals: int,
    final_weights: list[np.ndarray],
    model: torch.nn.Module,
    wall_time_s: float,
    privacy: dict[str, Any] | None = None,
    threat: dict[str, Any] | None = None,
    defences: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write rounds.csv, timings.csv, global_model.pt and metrics.json (its only writer).

    ``experiment``, ``seed``: the run's name and seed; ``threat_model``: the configured one, unless
    ``threat`` (the attacker's summary) says otherwise.
    ``defences``: ``{"defences": [names], "defence_report": {...}}`` from the server's defences.
    """
    run_dir = Path(run_dir)
    rows = round_log.rows()
    write_csv(run_dir / "rounds.csv", rows, ROUND_COLUMNS)
    timings = round_log.timing_rows()
    write_csv(run_dir / "timings.csv", timings, TIMING_COLUMNS)
    set_weights(model, final_weights)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(run_dir / "global_model.pt", buffer.getvalue())
    fit_seconds = sum(float(r.get("fit_seconds") or 0) for r in timings)
    metrics = {
        "experiment": experiment,
        "seed": seed,
        "threat_model": threat["threat_model"] if threat else threat_model,
        "defences": [],
        "rounds_completed": round_log.last_round,
        "utility": utility_section(round_log, num_hospitals),
        "failures": round_log.failure_summary(),
        "wall_time_s": wall_time_s,
        "cost": {
            "wall_time_s": wall_time_s,
            "hospital_fit_seconds": fit_seconds,
            "model_parameters": count_parameters(model),
            "update_bytes": int(sum(w.nbytes for w in final_weights)),
        },
    }
    if privacy is not None:
        metrics["privacy"], metrics["cost"]["privacy"] = split_wall_clock(privacy)
    if threat is not None:
        metrics["threat"] = threat
    if defences is not None:
        metrics["defences"] = defences["defences"]
        metrics["defence_report"] = defences["defence_report"]
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


