"""The shape of the shipped code, checked on the source: sizes a reader can hold in mind,
components that take only what they use, and a code-layout page that names every module.

1. No module over 400 lines, no function over 80 lines (fl_mia, clients, server, strategies;
   bench/ and tests/ are not shipped).
2. Only the composition root sees the whole experiment: outside ``fl_mia/app/`` and
   ``server/federation.py`` no parameter is annotated ``ExperimentConfig``, and a parameter
   named ``cfg`` carries an annotation, so that this test can see what it is.
3. Every package and module has a docstring, and docs/code-layout.md is the generator's output.
4. bench/ imports nothing from tests/: what a benchmark drives is shipped code.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from fl_mia.app import code_layout

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fl_mia", "clients", "server", "strategies")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# The composition root: it builds every component from the whole config and hands each its part.
# Where sections are handed out: the app layer (the CLI's runner and preflight, and the Flower
# apps' entry points that receive the experiment from Flower) and the server's composition root.
COMPOSITION_ROOT = ("fl_mia/app/", "server/federation.py", "server/server_app.py", "clients/client_app.py")
WHOLE_CONFIG = "ExperimentConfig"


@cache
def shipped_modules() -> dict[str, ast.Module]:
    files = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)
    return {p.relative_to(ROOT).as_posix(): ast.parse(p.read_text(), filename=str(p)) for p in files}


def functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def long_modules(limit: int = MAX_MODULE_LINES) -> list[str]:
    return [
        f"{path}: {lines} lines"
        for path in shipped_modules()
        if (lines := len((ROOT / path).read_text().splitlines())) > limit
    ]


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found = []
    for path, tree in shipped_modules().items():
        for function in functions(tree):
            start = min([function.lineno, *(d.lineno for d in function.decorator_list)])
            lines = function.end_lineno - start + 1
            if lines > limit:
                found.append(f"{path}:{function.lineno} {function.name}: {lines} lines")
    return found


def names_whole_config(annotation: ast.expr | None) -> bool:
    """``ExperimentConfig``, ``config.ExperimentConfig``, ``"ExperimentConfig"`` or any union/optional of it."""
    if annotation is None:
        return False
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id == WHOLE_CONFIG:
            return True
        if isinstance(node, ast.Attribute) and node.attr == WHOLE_CONFIG:
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                if names_whole_config(ast.parse(node.value, mode="eval").body):
                    return True
            except SyntaxError:
                if WHOLE_CONFIG in node.value:
                    return True
    return False


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    args = function.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, (args.vararg, args.kwarg))]


def whole_config_parameters(modules: dict[str, ast.Module]) -> list[str]:
    """Parameters outside the composition root that take (or may take, unannotated ``cfg``) the whole config."""
    found = []
    for path, tree in modules.items():
        if path.startswith(COMPOSITION_ROOT):
            continue
        for function in functions(tree):
            for arg in parameters(function):
                if names_whole_config(arg.annotation):
                    found.append(f"{path}:{function.lineno} {function.name}({arg.arg}: ExperimentConfig)")
                elif arg.arg == "cfg" and arg.annotation is None:
                    found.append(f"{path}:{function.lineno} {function.name}(cfg) without an annotation")
    return found


def test_no_module_is_longer_than_400_lines():
    assert not long_modules(), "split these modules, one concern each:\n" + "\n".join(long_modules())


def test_no_function_is_longer_than_80_lines():
    assert not long_functions(), "split these functions:\n" + "\n".join(long_functions())


def test_only_the_composition_root_takes_the_whole_experiment_config():
    found = whole_config_parameters(shipped_modules())
    assert not found, (
        "hand these components their own section(s) or plain keyword arguments, from fl_mia/app/ or "
        "server/federation.py:\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "source, caught",
    [
        ("def attack(cfg: ExperimentConfig): ...", True),
        ("def attack(cfg: 'ExperimentConfig | None' = None): ...", True),
        ("def attack(*, config: fl_mia.config.ExperimentConfig): ...", True),
        ("def attack(cfg): ...", True),
        ("def attack(privacy: PrivacyConfig, seed: int): ...", False),
        ("def attack(cfg: ThreatConfig): ...", False),
    ],
)
def test_the_whole_config_check_catches_a_planted_parameter(source, caught):
    found = whole_config_parameters({"fl_mia/attacker/planted.py": ast.parse(source)})
    assert bool(found) is caught
    assert not whole_config_parameters({"fl_mia/app/planted.py": ast.parse(source)})


def test_every_package_and_module_has_a_docstring():
    assert not code_layout.missing_docstrings(ROOT), (
        "give these a module docstring (its first sentence goes into docs/code-layout.md):\n"
        + "\n".join(code_layout.missing_docstrings(ROOT))
    )


def test_code_layout_page_lists_every_package_and_module():
    page = (ROOT / "docs" / "code-layout.md").read_text()
    missing = [row.path for row in code_layout.layout_rows(ROOT) if f"| `{row.path}` |" not in page]
    assert not missing, f"docs/code-layout.md lacks {missing}; regenerate: python -m fl_mia.app.code_layout --write docs/code-layout.md"


def test_code_layout_page_is_the_generators_output():
    page = (ROOT / "docs" / "code-layout.md").read_text()
    assert page == code_layout.page_with_fresh_table(page, ROOT), (
        "docs/code-layout.md is stale; regenerate: python -m fl_mia.app.code_layout --write docs/code-layout.md"
    )


def test_first_sentence_keeps_abbreviations_and_parentheses_whole():
    assert code_layout.first_sentence("LiRA of Carlini et al. (S&P 2022), offline. More here.") == (
        "LiRA of Carlini et al. (S&P 2022), offline."
    )
    assert code_layout.first_sentence("Pipes | escaped.\n\nSecond paragraph.") == "Pipes \\| escaped."


def imports_of_tests(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "tests"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tests":
            found.append(node.module)
    return found


def test_benchmarks_import_nothing_from_tests():
    found = {
        path.name: names
        for path in sorted((ROOT / "bench").glob("*.py"))
        if (names := imports_of_tests(ast.parse(path.read_text())))
    }
    assert not found, f"bench/ imports test code {found}: move what it needs into the library"
    assert imports_of_tests(ast.parse("def f():\n    import tests.flower_doubles as d"))
