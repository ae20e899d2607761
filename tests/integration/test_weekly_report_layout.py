"""The weekly report fits its page, on screen and on paper: headless Chromium lays it out.

`safewatch report weekly --pdf` is run on a week with production-like segment names
(tests/report_week.py). The HTML is then loaded by Chromium (DevTools protocol) in a
1,100 px window and, with print styles, in a window as wide as the A4 page's content box
(the A4 width less the margins the page's own `@page` rule sets); no element may reach past
the right edge. The PDF is rendered page by page with poppler's `pdftoppm` and read with
`pdftotext`: a sane number of A4 pages, none blank, nothing printed into the right margin,
every character of the page's text in the PDF (Chromium leaves out the glyphs of a column
cut at the page's edge), and the refusal-rate column there with its values.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from jobs.cli import main
from pipelines.report import numbers
from pipelines.report.browser import evaluate
from pipelines.report.weekly import collect_weekly
from pipelines.settings import Settings
from tests import report_week

pytestmark = pytest.mark.integration

MM_PER_INCH = 25.4
CSS_PX_PER_INCH = 96
A4_MM = (210.0, 297.0)
DPI = 40  # enough to see ink in a margin; small and fast

# Every element whose box reaches past the viewport's right (or left) edge, and the page's
# own scroll width: what a horizontal scrollbar or a printed page would cut.
OVERFLOW_JS = """
(() => {
  const width = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.right > width + 0.5 || box.left < -0.5) {
      out.push(`${el.tagName.toLowerCase()}.${el.className} right=${Math.round(box.right)}: `
               + (el.textContent || '').trim().slice(0, 50));
    }
  }
  return {width, scrollWidth: document.documentElement.scrollWidth, overflowing: out};
})()
"""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the Debian package poppler-utils")
    return found


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The week's report written by the CLI with --pdf: (report model, HTML, PDF)."""
    folder = tmp_path_factory.mktemp("layout")
    url, engine = report_week.warehouse(folder)
    out = folder / "reports"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # no safewatch.toml of the repository
        for key, value in report_week.environ(url).items():
            mp.setenv(key, value)
        code = main(
            ["report", "weekly", "--week", str(report_week.WEEK), "--out", str(out), "--pdf"]
        )
        settings = Settings.load()
    assert code == 0
    report = collect_weekly(engine, settings, report_week.WEEK, now=report_week.NOW)
    engine.dispose()
    base = f"safety-posture-{report_week.WEEK}"
    return report, out / f"{base}.html", out / f"{base}.pdf"


def _print_width_px(html: Path) -> int:
    """The content width of the printed page, in CSS pixels, from the page's @page rule."""
    match = re.search(
        r"@page\s*\{\s*size:\s*A4;\s*margin:\s*([\d.]+)mm\s+([\d.]+)mm", html.read_text()
    )
    assert match, "the page declares A4 paper and its margins"
    side_mm = float(match.group(2))
    return int((A4_MM[0] - 2 * side_mm) / MM_PER_INCH * CSS_PX_PER_INCH)


@pytest.mark.parametrize("media", ["screen", "print"])
def test_no_element_reaches_past_the_page(written, media):
    _, html, _ = written
    width = 1100 if media == "screen" else _print_width_px(html)
    found = evaluate(html, OVERFLOW_JS, width=width, media=media)
    assert found["width"] == width
    assert found["overflowing"] == []
    assert found["scrollWidth"] <= width


def test_the_risk_table_shows_every_column_of_long_segment_names(written):
    report, html, _ = written
    # The longest model version of the week is in the table: the case that pushed it wide.
    assert any("preview-longcontext" in row.segment for row in report.risk.rows)
    cells = evaluate(
        html,
        """[...document.querySelectorAll('#risk-segments tbody tr')].map(tr => {
             const last = tr.lastElementChild.getBoundingClientRect();
             return {right: last.right, width: last.width, text: tr.lastElementChild.innerText};
           })""",
        width=1100,
    )
    assert len(cells) == len(report.risk.rows)
    for cell, row in zip(cells, report.risk.rows, strict=True):
        assert cell["right"] <= 1100 and cell["width"] > 0
        assert " ".join(cell["text"].split()) == numbers.rate(row.refusal)


def _pdf_pages(pdf: Path, folder: Path) -> list[Image.Image]:
    prefix = folder / "page"
    subprocess.run(
        [_tool("pdftoppm"), "-r", str(DPI), "-gray", "-png", str(pdf), str(prefix)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    files = sorted(folder.glob("page-*.png"), key=lambda p: int(p.stem.split("-")[-1]))
    return [Image.open(f).convert("L") for f in files]


def test_pdf_pages_are_a4_none_blank_and_nothing_runs_into_the_right_margin(written, tmp_path):
    _, html, pdf = written
    assert pdf.read_bytes()[:5] == b"%PDF-"
    pages = _pdf_pages(pdf, tmp_path)
    assert 2 <= len(pages) <= 10  # eight sections, eight charts: a few pages, not one or fifty
    side_mm = float(re.search(r"margin:\s*[\d.]+mm\s+([\d.]+)mm", html.read_text()).group(1))
    for number, page in enumerate(pages, 1):
        width_mm = page.width / DPI * MM_PER_INCH
        height_mm = page.height / DPI * MM_PER_INCH
        assert (width_mm, height_mm) == (pytest.approx(210, abs=2), pytest.approx(297, abs=2))
        ink = page.point(lambda v: 255 if v < 200 else 0)  # dark pixels
        assert ink.getbbox() is not None, f"page {number} is blank"
        # The right margin, less 2 mm for anti-aliasing at the content's edge: no ink at all.
        margin_px = round((side_mm - 2) / MM_PER_INCH * DPI)
        strip = ink.crop((page.width - margin_px, 0, page.width, page.height))
        assert strip.getbbox() is None, f"page {number}: something runs into the right margin"
    first = pages[0].point(lambda v: 255 if v < 200 else 0)
    box = first.getbbox()
    assert box is not None and box[2] - box[0] > page.width * 0.6  # text spans the page


def _pdf_text(pdf: Path) -> str:
    return subprocess.run(
        [_tool("pdftotext"), "-enc", "UTF-8", str(pdf), "-"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode("utf-8")


def _characters(text: str) -> Counter[str]:
    # Without white space (line breaks differ) and hyphens: pdftotext joins a word broken
    # after a hyphen at the end of a line and drops that hyphen.
    return Counter(c for c in text if not c.isspace() and c != "-")


def test_pdf_holds_every_character_the_printed_page_shows(written):
    _, html, pdf = written
    page = evaluate(html, "document.body.innerText", width=_print_width_px(html), media="print")
    missing = _characters(page) - _characters(_pdf_text(pdf))
    assert sum(_characters(page).values()) > 3000  # the whole report, not an error page
    assert missing == Counter()


def test_pdf_text_holds_the_refusal_rate_column_and_the_statuses(written):
    report, _, pdf = written
    flat = " ".join(_pdf_text(pdf).split())
    assert "Refusal rate (95 % interval)" in flat
    for row in report.risk.rows:
        assert numbers.rate(row.refusal) in flat, row.segment
    assert "Unconfirmed" in flat
