"""Render a suite's HTML report in headless Chromium and check what a reader sees first.

    python scripts/report_screenshot.py runs/suite-threats --png runs/suite-threats/report.png

Builds the report of the suite folder(s) (as ``fl-mia report`` does), saves the HTML beside the
PNG, screenshots it with Chromium (``/usr/bin/chromium``; Debian: ``apt-get install -y chromium``)
and fails (exit 1, one line per problem) when:

- Findings is not the first section of the page;
- a figure's legend lies outside its saved area or over a plot or another legend (checked on the
  drawn artists' extents when each figure is saved, :func:`fl_mia.report.figures.layout_problems`);
- a table repeats "—" in its cells (an unresolvable figure is explained once, in a caption);
- the screenshot is missing or blank.

Look at the PNG too: these checks catch the known failures, not every ugly page.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars",
)  # fmt: skip


def page_problems(page: str) -> list[str]:
    """What the HTML itself shows wrong: the first section, per-row dashes."""
    problems = []
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", page)
    if not headings or headings[0] != "Findings":
        problems.append(f"the first section is {headings[0] if headings else 'missing'!r}, not Findings")
    if page.find('id="findings"') > page.find("<table") >= 0:
        problems.append("a table comes before Findings")
    dashes = len(re.findall(r"<td[^>]*>\s*—", page))
    if dashes:
        problems.append(f"{dashes} table cells start with “—” (explain an unresolvable figure once, in a caption)")
    return problems


def screenshot(html_path: Path, png_path: Path, *, width: int, height: int, timeout: float = 120.0) -> list[str]:
    """Chromium's screenshot of the page; problems if it did not come or is blank."""
    if not CHROMIUM.is_file():
        return [f"{CHROMIUM}: not installed (Debian: apt-get install -y chromium)"]
    with tempfile.TemporaryDirectory() as profile:
        command = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png_path}",
                   f"--window-size={width},{height}", html_path.resolve().as_uri()]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if not png_path.is_file():
        return [f"Chromium wrote no screenshot (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:] or ''}"]
    from PIL import Image

    with Image.open(png_path) as image:
        top = image.convert("L").crop((0, 0, image.width, min(image.height, 400)))
        if top.getextrema()[0] > 200:
            return [f"{png_path}: the top of the page is blank"]
    return []


def check(sources: list[Path], png_path: Path, *, width: int = 1300, height: int = 2400) -> list[str]:
    """Build the report, screenshot it, and return every problem found (empty: all checks passed)."""
    from fl_mia.report import figures
    from fl_mia.report.collect import build_report_data
    from fl_mia.report.render import render_html

    figures.LAYOUT_PROBLEMS.clear()
    page = render_html(build_report_data(sources))
    html_path = png_path.with_suffix(".html")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page)
    problems = page_problems(page) + [f"figure {p}" for p in figures.LAYOUT_PROBLEMS]
    return problems + screenshot(html_path, png_path, width=width, height=height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="suite folders or run folders, as for fl-mia report")
    parser.add_argument("--png", type=Path, required=True, help="where the screenshot goes (the HTML is saved beside it)")
    parser.add_argument("--width", type=int, default=1300)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    from fl_mia.report.collect import ReportError

    try:
        problems = check(args.sources, args.png, width=args.width, height=args.height)
    except ReportError as error:
        print(f"report_screenshot: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"report_screenshot: {problem}", file=sys.stderr)
    if not problems:
        print(f"report_screenshot: ok, {args.png} (Findings first, no legend clipped or overlapping, no per-row “—”)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
