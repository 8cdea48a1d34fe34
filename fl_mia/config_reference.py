"""Print the config reference (Markdown) from the typed schema: ``python -m fl_mia.config_reference``.

README.md's "Config reference" is this output, so the documentation cannot drift from
what the loader accepts (a test checks every field is documented).
"""

from __future__ import annotations

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


if __name__ == "__main__":
    print(render())
