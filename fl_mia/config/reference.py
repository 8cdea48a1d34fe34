"""The config reference (Markdown) from the typed schema.

``python -m fl_mia.config.reference`` prints it; ``--write docs/config-reference.md`` refreshes the docs' copy.

docs/config-reference.md is this output, so the documentation cannot drift from
what the loader accepts (a test checks every field is documented).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from fl_mia.config import ExperimentConfig


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""  # a section: its keys have their own rows
    else:
        value = field.default
    return "" if value is None else f"`{value!r}`".replace("'", '"')


def reference_rows(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(reference_rows(annotation, f"{prefix}{name}."))
        else:
            rows.append((f"{prefix}{name}", _default(field), field.description or ""))
    return rows


def render() -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{key}` | {default} | {description} |" for key, default, description in reference_rows()]
    return "\n".join(lines)


START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def write_into(readme: Path) -> None:
    """Replace the text between the reference markers of ``readme`` by a fresh table."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_into(Path(sys.argv[2]))
    else:
        print(render())
