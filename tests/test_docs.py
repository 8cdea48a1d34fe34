"""The docs: local links resolve, and benchmark figures come only from generated pages."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH_PAGES = sorted((ROOT / "docs" / "benchmarks").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _bench_module(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: p.name)
def test_local_links_resolve(page):
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


@pytest.mark.parametrize("page", BENCH_PAGES, ids=lambda p: p.name)
def test_benchmark_pages_are_written_by_the_script_they_name(page):
    mark = _bench_module("record").GENERATED_MARK
    first = page.read_text().splitlines()[0]
    script = re.fullmatch(re.escape(mark).replace(r"\{script\}", r"(bench/\w+\.py)"), first)
    assert script, f"{page.name} was not written by a benchmark's --write: {first!r}"
    assert (ROOT / script.group(1)).is_file()
    assert f"`python {script.group(1)}" in page.read_text(), "the page must name the command it ran"


def test_the_scale_page_is_in_step_with_its_script():
    page = ROOT / "docs" / "benchmarks" / "scale.md"
    assert _bench_module("scale").TABLE_HEADER in page.read_text(), "rerun bench/scale.py --write docs/benchmarks/scale.md"
