"""The two walls of the code base, and no import cycle, checked on the source (module- and function-level imports).

1. Library ↔ apps: the core of ``fl_mia`` imports nothing from ``clients``, ``server``,
   ``strategies``, the app layer ``fl_mia.app`` or Flower; only ``fl_mia.app`` composes them.
2. Attacker ↔ referee: nothing under ``fl_mia.attacker`` (prediction attacks, update signals,
   poisoners, what the attacker knows) — nor the Flower apps it drives (strategies, clients,
   the strategy-facing server modules) — reaches the referee ``fl_mia.referee`` (the ledger,
   candidate drawing, membership metrics), directly or through another module.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fl_mia", "clients", "server", "strategies")
# The only server modules allowed to hold the referee: they compose a run (draw the
# candidates, hand the attacker its knowledge, join the scores with the ledger at the end).
SERVER_COMPOSERS = {"server.federation", "server.server_app"}
ATTACKER = "fl_mia.attacker"
# The Flower apps run on the attacker's side of the wall too (the strategy poisons and observes).
APPS_ON_ATTACKER_SIDE = ("strategies", "clients", "server")
REFEREE = "fl_mia.referee"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported_names(path: Path, module: str) -> set[str]:
    """Every module named by an import statement anywhere in the file (functions included)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        # `from a.b import c` depends on a.b, and on a.b.c too when c is a module.
        graph[module] = {name for name in imported_names(path, module) if name in modules} - {module}
    return graph


def external_imports(module: str) -> set[str]:
    path = project_modules()[module]
    return {name.split(".")[0] for name in imported_names(path, module)}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            strongconnect(module)
    assert not cycles, f"import cycles: {cycles}"


def core_modules() -> list[str]:
    return sorted(m for m in project_modules() if in_package(m, "fl_mia") and not in_package(m, "fl_mia.app"))


@pytest.mark.parametrize("module", core_modules())
def test_the_library_core_imports_no_app_and_no_flower(module):
    graph = import_graph()
    apps = [m for m in graph[module] if not in_package(m, "fl_mia") or in_package(m, "fl_mia.app")]
    assert not apps, f"{module} imports the app layer: {apps}"
    assert "flwr" not in external_imports(module), f"{module} imports Flower"


def attacker_side_modules() -> list[str]:
    return sorted(
        m for m in project_modules()
        if (in_package(m, ATTACKER) or any(in_package(m, app) for app in APPS_ON_ATTACKER_SIDE))
        and m not in SERVER_COMPOSERS
    )


def referee_modules_reached(graph: dict[str, set[str]], module: str) -> list[str]:
    return sorted(m for m in reachable(graph, module) | set(graph[module]) if in_package(m, REFEREE))


@pytest.mark.parametrize("module", attacker_side_modules())
def test_attacker_side_never_reaches_the_referee(module):
    reached = referee_modules_reached(import_graph(), module)
    assert not reached, f"{module} reaches the referee through imports: {reached}"


def test_the_attacker_is_one_package():
    # Everything the server runs to learn membership lives under one prefix.
    attacker = [m for m in project_modules() if in_package(m, ATTACKER)]
    assert {"fl_mia.attacker.predictions", "fl_mia.attacker.updates", "fl_mia.attacker.poisoning",
            "fl_mia.attacker.knowledge", "fl_mia.attacker.server_attacker"} <= set(attacker)
    stray = [m for m in project_modules() if m.split(".")[:2] in (["fl_mia", "attacks"], ["fl_mia", "poisoning"],
                                                                 ["fl_mia", "update_attacks"], ["fl_mia", "privacy"])]
    assert not stray, f"attacker or referee code outside its package: {stray}"


def test_the_walls_can_fail():
    # The checks read real edges: the composer does reach the referee, the app layer does import the apps.
    graph = import_graph()
    assert any(in_package(m, REFEREE) for m in reachable(graph, "server.federation"))
    assert any(in_package(m, "server") for m in reachable(graph, "fl_mia.app.experiment"))
    # A violation planted one hop away (an attack importing a module that imports the ledger) is caught.
    planted = {module: set(edges) for module, edges in graph.items()}
    planted["fl_mia.attacker.predictions.lira"].add("fl_mia.seeding")
    planted["fl_mia.seeding"] = planted["fl_mia.seeding"] | {"fl_mia.referee.candidates"}
    assert referee_modules_reached(planted, "fl_mia.attacker.predictions.lira") == ["fl_mia.referee.candidates"]
    assert not referee_modules_reached(graph, "fl_mia.attacker.predictions.lira")
