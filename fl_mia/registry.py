"""One way to register a plug-in: a name, the plug-in's own settings table, and its factory.

Every family of plug-ins (prediction attacks, update signals, poisoners, data sources) keeps
one :class:`Registry`. An entry is declared where the family's settings are declared — light
modules of pydantic models only — and names its factory as ``"module:attribute"``, imported on
first use, so the config schema can take its allowed names and its plug-in tables from the
registry without importing torch (as Opacus keeps its accountants in one dict with one
factory, and smp's encoder files each export a dict).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


class PluginSettings(BaseModel):
    """Base of a plug-in's own config table: typed, validated at load, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class Plugin:
    """One registered plug-in.

    ``settings`` is the pydantic model of the plug-in's own config table (``None``: it has no
    knobs); ``factory`` a callable, or ``"package.module:attribute"`` imported on first use.
    """

    name: str
    summary: str
    settings: type[BaseModel] | None = None
    factory: Callable[..., Any] | str | None = None

    def load_factory(self) -> Callable[..., Any]:
        if self.factory is None:
            raise LookupError(f"{self.name!r} has no factory")
        if callable(self.factory):
            return self.factory
        module, _, attribute = self.factory.partition(":")
        target: Any = importlib.import_module(module)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target


class Registry:
    """Plug-ins of one family by name; ``key`` is the config key that selects them (for errors)."""

    def __init__(self, family: str, *, key: str) -> None:
        self.family = family
        self.key = key
        self._plugins: dict[str, Plugin] = {}

    def register(
        self,
        name: str,
        *,
        summary: str,
        settings: type[BaseModel] | None = None,
        factory: Callable[..., Any] | str | None = None,
    ) -> Plugin:
        if name in self._plugins:
            raise ValueError(f"{self.family} {name!r} is registered twice")
        plugin = Plugin(name=name, summary=summary, settings=settings, factory=factory)
        self._plugins[name] = plugin
        return plugin

    def unregister(self, name: str) -> None:
        """Remove a plug-in (a test double's clean-up)."""
        self._plugins.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._plugins)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self._plugins.values())

    def get(self, name: str) -> Plugin:
        if name not in self._plugins:
            raise ValueError(f"{self.key}: {self._unknown(name)}")
        return self._plugins[name]

    def check(self, name: str) -> str:
        """``name`` if registered, else ``ValueError`` listing the registered names.

        Meant as a pydantic validator: pydantic names the field, so the message does not.
        """
        if name not in self._plugins:
            raise ValueError(self._unknown(name))
        return name

    def _unknown(self, name: str) -> str:
        return f"unknown {self.family} {name!r}; choose from {', '.join(self._plugins)}"

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the plug-in's factory."""
        return self.get(name).load_factory()(*args, **kwargs)
