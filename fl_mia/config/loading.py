"""Reading experiment files: TOML, ``extends`` overlays, ``--set`` overrides, one-line errors."""

from __future__ import annotations

import difflib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

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


def build_config(raw: dict[str, Any], source: str = "config", overrides: list[str] | None = None) -> ExperimentConfig:
    """Validate a raw dict; raise :class:`ConfigError` with one line naming the field.

    A field set by an override is blamed on that ``--set``, not on the file.
    """
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, _blamed_source(error, source, overrides or []))) from None


def _blamed_source(error: ValidationError, source: str, overrides: list[str]) -> str:
    field = ".".join(str(part) for part in error.errors()[0]["loc"])
    for override in reversed(overrides):  # the last --set of a key is the one in force
        key = override.partition("=")[0].strip()
        if field and (field == key or field.startswith(key + ".") or key.startswith(field + ".")):
            return f"--set {override}"
    return source


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _accepts_text(annotation: Any) -> bool:
    """Whether a field of this type takes a string (text, a path, a name from a list)."""
    if annotation in (str, Path, Any):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(choice, str) for choice in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_text(arg) for arg in typing.get_args(annotation))
    return False


def check_override(override: str) -> None:
    """One ``--set`` against the schema: the key exists (else the nearest one is suggested) and a
    quoted number is not given to a numeric field (TOML's ``"3"`` is text, not 3)."""
    key, _, text = override.partition("=")
    key, text = key.strip(), text.strip()
    moved = ExperimentConfig.all_moved_keys()
    if key in moved:
        raise ConfigError(f"--set {override}: {key} has moved: use {moved[key]} (docs/config-reference.md)")
    model: type[BaseModel] | None = ExperimentConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if model is None:
            return  # inside a free-form table (e.g. data.labels): its keys are the user's
        if part not in model.model_fields:
            nearest = difflib.get_close_matches(part, list(model.model_fields), n=1, cutoff=0.6)
            hint = f"did you mean {'.'.join([*parts[:depth], nearest[0]])}?" if nearest else "see docs/config-reference.md"
            raise ConfigError(f"--set {override}: unknown key {'.'.join(parts[: depth + 1])}; {hint}")
        annotation = model.model_fields[part].annotation
        model = _section_model(annotation)
        if model is None and depth == len(parts) - 1 and not _accepts_text(annotation):
            quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"
            if quoted and not isinstance(_parse_override_value(text[1:-1]), str):
                raise ConfigError(
                    f"--set {override}: {key} takes {_type_name(annotation)}, and {text} is quoted text; "
                    f"write {key}={text[1:-1]}"
                )


def _type_name(annotation: Any) -> str:
    words = {int: "an integer", float: "a number", bool: "true or false"}
    names = [words[arg] for arg in (typing.get_args(annotation) or (annotation,)) if arg in words]
    return " or ".join(names) or "value"


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
    for override in overrides or []:
        check_override(override)
    raw = apply_overrides(raw, overrides or [])
    return build_config(raw, source=str(path), overrides=overrides)
