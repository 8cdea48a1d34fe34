"""Reading experiment files: TOML, ``extends`` overlays, ``--set`` overrides, one-line errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fl_mia.config import ConfigError, ExperimentConfig
from fl_mia.config.base import MOVED_KEY_ERROR


def _format_validation_error(error: ValidationError, source: str) -> str:
    errors = error.errors()
    # A misspelt key also leaves the right one missing; the spelling is the thing to fix.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    if first["type"] == MOVED_KEY_ERROR:
        return f"{source}: {first['ctx']['old']} has moved: use {first['ctx']['new']} (docs/config-reference.md)"
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key; check the spelling against docs/config-reference.md"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    # A model-level error names a section but the message already names the fields.
    if not first["loc"]:
        return f"{source}: {message}"  # top-level checks name their dotted fields themselves
    return f"{source}: {field}: {message}"


def _parse_override_value(text: str) -> Any:
    """Read an override value as TOML (numbers, booleans, lists, quoted strings), else as text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a raw config dict (a copy is returned)."""
    result = json.loads(json.dumps(raw))
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected dotted.key=value, e.g. federation.rounds=3")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {override!r}: {part} is a value, not a section")
            node = child
        node[parts[-1]] = _parse_override_value(value.strip())
    return result


def build_config(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw dict; raise :class:`ConfigError` with one line naming the field."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's table, with ``extends = "other.toml"`` (relative to the file) merged under it."""
    if not path.is_file():
        origin = f" (extended by {seen[-1]})" if seen else ""
        raise ConfigError(f"{path}: no such config file{origin}; give the path of a .toml experiment file")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: extends itself through {' -> '.join(str(p) for p in seen)}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror}); check its permissions") from None
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be a path string, e.g. extends = \"../quickstart.toml\"")
    base = _read_raw(path.parent / parent, (*seen, path.resolve()))
    base.pop("name", None)  # a derived experiment is named after its own file
    return _deep_merge(base, raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, override and validate an experiment file.

    A file may start with ``extends = "base.toml"`` to inherit everything it does not set
    (threat models and defences are small files over a shared base). The experiment
    ``name`` defaults to the file's stem so that run folders are named after the config
    that produced them.
    """
    path = Path(path)
    raw = _read_raw(path)
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, overrides or [])
    return build_config(raw, source=str(path))
