"""The base of every config section, the one error a bad config raises, and moved keys.

A key that moved (a flat plug-in knob that now lives in the plug-in's own table) is never
silently aliased: the section lists it in ``moved_keys`` and a file or ``--set`` that still
uses it fails in one line naming the new key.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

MOVED_KEY_ERROR = "moved_key"


class ConfigError(ValueError):
    """A config file or override is wrong; the message is one line naming the field."""


class Section(BaseModel):
    """A config table: unknown keys are errors, and so are keys that moved elsewhere."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Dotted key from the experiment's root (old) → where it lives now (new), for the keys of
    # this section that moved; checked by the experiment before any field is validated.
    moved_keys: ClassVar[dict[str, str]] = {}


def raise_on_moved_keys(raw: Any, moved: dict[str, str]) -> None:
    """Fail on the first old key present in the raw experiment dict (dotted paths from the root)."""
    if not isinstance(raw, dict):
        return
    for old, new in moved.items():
        node: Any = raw
        for part in old.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            raise PydanticCustomError(MOVED_KEY_ERROR, "{old} has moved: use {new}", {"old": old, "new": new})


def plugin_table_fields(registry) -> dict[str, tuple[type, Any]]:
    """One optional sub-table per registered plug-in with settings, defaulting to the plug-in's defaults."""
    return {p.name: (p.settings, Field(default_factory=p.settings, description=f"{registry.family} {p.name!r}: {p.summary}"))
            for p in registry if p.settings is not None}
