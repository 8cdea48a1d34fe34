"""The code layout page (Markdown) from the packages' and modules' own docstrings.

``python -m fl_mia.app.code_layout`` prints the table; ``--write docs/code-layout.md``
refreshes the page between its markers. The page is this output, so it names every
package and module there is and says of each what its docstring says first (a test
fails when a module lacks a docstring or the page is stale). Docstrings are read from
the source (``ast``), so nothing is imported and no torch is needed.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
# The code that ships (pyproject's packages); bench/ and tests/ are described by hand on the page.
TOP_PACKAGES = ("fl_mia", "clients", "server", "strategies")
START, END = "<!-- code-layout:start -->", "<!-- code-layout:end -->"
# A sentence ends at . ! or ? followed by a space and a capital, a quote, a bracket or a backtick,
# unless the dot ends an abbreviation or sits inside parentheses ("(Carlini et al. 2022)").
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(\"'*])")
_ABBREVIATIONS = ("et al.", "e.g.", "i.e.", "cf.", "vs.", "etc.")


@dataclass(frozen=True)
class LayoutRow:
    """One package (path ends in ``/``) or module of the shipped code, with its docstring's first sentence."""

    path: str
    summary: str


def first_sentence(docstring: str) -> str:
    """The first sentence of the first paragraph, on one line, safe inside a Markdown table."""
    paragraph = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    sentence = paragraph
    for end in _SENTENCE_END.finditer(paragraph):
        before = paragraph[: end.start()]
        if before.count("(") <= before.count(")") and not before.endswith(_ABBREVIATIONS):
            sentence = before
            break
    return sentence.replace("|", "\\|")


def module_docstring(path: Path) -> str | None:
    """The module docstring of the file at ``path``, read without importing it."""
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))


def _source_files(root: Path) -> list[Path]:
    """Every package's ``__init__.py`` and every module under the shipped top packages, in page order."""
    files = []
    for top in TOP_PACKAGES:
        files.extend(p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts)
    # A package row (its __init__) sorts before its modules and sub-packages.
    return sorted(files, key=lambda p: tuple("" if part == "__init__.py" else part for part in p.relative_to(root).parts))


def missing_docstrings(root: Path = PROJECT_ROOT) -> list[str]:
    """Modules and packages under the shipped top packages that have no docstring."""
    return [str(p.relative_to(root)) for p in _source_files(root) if not module_docstring(p)]


def layout_rows(root: Path = PROJECT_ROOT) -> list[LayoutRow]:
    """One row per package and module of the shipped code; a missing docstring is an error."""
    missing = missing_docstrings(root)
    if missing:
        raise ValueError(f"no module docstring in {', '.join(missing)}: every module says what it is for")
    rows = []
    for path in _source_files(root):
        relative = path.relative_to(root)
        name = f"{relative.parent.as_posix()}/" if path.name == "__init__.py" else relative.as_posix()
        rows.append(LayoutRow(name, first_sentence(module_docstring(path) or "")))
    return rows


def render(root: Path = PROJECT_ROOT) -> str:
    """The Markdown table of packages and modules."""
    lines = ["| package or module | what |", "| --- | --- |"]
    lines += [f"| `{row.path}` | {row.summary} |" for row in layout_rows(root)]
    return "\n".join(lines)


def page_with_fresh_table(text: str, root: Path = PROJECT_ROOT) -> str:
    """``text`` with the part between the markers replaced by a fresh table."""
    if START not in text or END not in text:
        raise SystemExit(f"markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render(root)}\n{END}{tail}"


def write_into(page: Path) -> None:
    """Refresh the generated table of ``page`` (docs/code-layout.md)."""
    page.write_text(page_with_fresh_table(page.read_text()))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_into(Path(sys.argv[2]))
    else:
        print(render())
