"""The HTML report as a reader sees it: headless Chromium's screenshot, checked by scripts/report_screenshot.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.test_report_findings import threats_suite  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "scripts" / "report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_checks_catch_a_late_findings_section_and_per_row_dashes():
    script = _script()
    assert script.page_problems('<h2 id="findings">Findings</h2><ul></ul><table><tr><td>0.5</td></tr></table>') == []
    late = script.page_problems("<table><tr><td>—</td><td>— (needs ≥100)</td></tr></table><h2>Summary</h2><h2>Findings</h2>")
    assert len(late) == 2 and "Summary" in late[0] and "2 table cells" in late[1]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").is_file(), reason="needs /usr/bin/chromium (apt-get install -y chromium)")
def test_the_threats_report_opens_with_findings_and_clips_no_legend(threats_suite, tmp_path):  # noqa: F811
    script = _script()
    png = tmp_path / "report.png"
    assert script.check([threats_suite], png) == []
    assert png.stat().st_size > 10_000
