"""The run report on the demo's lake: its numbers are the tables', it is self-contained, and a browser draws it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from deltalake import DeltaTable

from tests.integration.conftest import DEMO_MONTH

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(demo_ctx, demo_run):
    """The report the demo wrote for its last month (`make demo` writes one at its end)."""
    from flowops.steps.report import report_path

    path = report_path(demo_ctx.lake, DEMO_MONTH)
    assert path.is_file(), demo_run.stdout
    assert str(path) in demo_run.stdout   # the demo's last screen says where it is
    return path, path.read_text(encoding="utf-8")


def test_the_report_shows_the_tables_numbers(report, demo_run):
    _, page = report
    stages = DeltaTable(str(demo_run.lake / "gold" / "flow_stages")).to_pandas(
        partitions=[("month", "=", DEMO_MONTH)])
    sizes = stages["stage"].value_counts()
    start = page.index(">Stage distribution</h2>")
    section = page[start:page.index("<h2", start)]
    for stage, count in sizes.items():
        assert re.search(rf"<td>{stage}</td><td>{count:,}</td>", section), (stage, count)
    assert f"<b>{len(stages):,}</b>" in page   # the headline figure: subscribers staged
    targets = DeltaTable(str(demo_run.lake / "gold" / "scenario_targets")).to_pandas(
        partitions=[("month", "=", DEMO_MONTH)])
    assert f"<b>{(targets['decision'] == 'targeted').sum():,}</b>" in page
    for title in ("Stage transitions", "Contacts per channel", "Why candidates were not contacted",
                  "Funnel per channel", "Uplift per scenario", "Cost against incremental revenue",
                  "Top apps by traffic", "Unknown-app share per day", "Quarantine reasons", "Step timings"):
        assert re.search(rf">{title}[^<]*</h2>", page), title
    assert page.count("<svg") >= 10 and "from gold/campaign_results" in page


def test_the_report_is_self_contained(report):
    _, page = report
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)   # nothing fetched from anywhere
    assert "<script" not in page


def test_a_browser_draws_the_report(report, tmp_path):
    path, _ = report
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    if browser is None:
        pytest.skip("no headless Chromium here (make test installs Debian's chromium where it can, as root with "
                    "apt-get): the report's screenshot is not taken")
    from PIL import Image

    shot = tmp_path / "report.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,2400",
                           path.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Failed to load" in line]
    assert not console, console
    image = Image.open(shot).convert("L")
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20   # many shades: text and charts, not a blank page
    histogram = image.histogram()
    dark = sum(histogram[:128]) / sum(histogram)
    assert 0.005 < dark < 0.5, dark   # some ink on a mostly white page
    shutil.copy(shot, path.with_name("screenshot.png"))   # beside the report, to look at
