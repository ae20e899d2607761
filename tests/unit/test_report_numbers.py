"""One number style in the weekly report (pipelines/report/numbers.py): two significant
digits, at most two decimals near 100 %, intervals rounded outwards, no sentence about a
count of zero. Checked on the functions with written-out expectations, on any interval
(hypothesis), and on the whole report rendered from a warehouse (tests/report_week.py).
"""

from __future__ import annotations

import re
from dataclasses import replace
from html import unescape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.metrics.catalog import rate_value
from pipelines.report import numbers
from pipelines.report.html import render_html
from pipelines.report.markdown import render_markdown
from pipelines.report.weekly import collect_weekly
from pipelines.settings import Settings
from tests import report_week


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (0.0, "0 %"),
        (1.0, "100 %"),
        (0.0031, "0.31 %"),
        (0.003141, "0.31 %"),
        (0.0398, "4.0 %"),  # the trailing zero stays: two digits, as everywhere
        (0.0537, "5.4 %"),
        (0.0996, "10 %"),  # rounds up to the next power of ten: still two digits
        (0.234, "23 %"),
        (0.000064, "0.0064 %"),
        (0.0000041, "0.0004 %"),  # nothing finer than one in a million
        (1e-9, "< 0.0001 %"),  # not zero, so never '0 %'
        (0.9995, "99.95 %"),
        (0.999911, "99.99 %"),  # never '99.9911 %'
        (0.99996, "99.99 %"),  # not all of them, so never '100 %'
        (0.963, "96.3 %"),
    ],
)
def test_percent(value, text):
    assert numbers.percent(value) == text


@pytest.mark.parametrize(
    ("lower", "upper", "text"),
    [
        (0.0, 0.0005779, "0–0.058 %"),  # 0 of 6,644 (Wilson)
        (0.99991088, 1.0, "99.99–100 %"),  # 43,114 of 43,114: was '99.9911–100 %'
        (0.0380, 0.04172, "3.8–4.2 %"),
        (0.0024999, 0.0038001, "0.24–0.39 %"),  # outwards: down, and up
        (0.0283, 0.0995, "2.8–10 %"),
        (0.999, 0.9999999, "99.90–100 %"),  # an upper end may round up to 100 %
    ],
)
def test_interval_is_rounded_outwards(lower, upper, text):
    assert numbers.interval(lower, upper) == text


def test_rate_of_a_complete_week_reads_without_spurious_digits():
    v = rate_value("telemetry_completeness", {"telemetry_complete": 43_114, "events_seen": 43_114})
    assert numbers.rate(v) == "100 % (99.99–100 %)"
    none = rate_value("pii_output_rate", {"pii_outputs": 0, "events": 6_644})
    assert numbers.rate(none) == "0 % (0–0.058 %)"
    assert numbers.rate(rate_value("pii_output_rate", {"pii_outputs": 0, "events": 0})) == "no data"


@pytest.mark.parametrize(
    ("difference", "text"),
    [(0.0005, "+0.050 pp"), (-0.013, "−1.3 pp"), (0.0, "±0 pp"), (0.2, "+20 pp"), (None, "–")],
)
def test_points(difference, text):
    assert numbers.points(difference) == text


def test_count_and_target():
    assert numbers.count(1, "segment") == "1 segment"
    assert numbers.count(2_000, "segment") == "2,000 segments"
    assert numbers.target(0.0001, higher_is_worse=True) == "< 0.01 %"
    assert numbers.target(0.98, higher_is_worse=False) == "> 98 %"


@pytest.mark.parametrize(
    ("ticks", "labels"),
    [
        ([0, 0.0025, 0.005, 0.0075], ["0.00 %", "0.25 %", "0.50 %", "0.75 %"]),
        ([0, 0.1, 0.2], ["0 %", "10 %", "20 %"]),
        ([0.9975, 1.0], ["99.75 %", "100.00 %"]),
        ([0.0, 0.00005, 0.0001], ["0.000 %", "0.005 %", "0.010 %"]),
    ],
)
def test_axis_ticks_share_their_decimals(ticks, labels):
    assert numbers.axis_percents(ticks) == labels


def _value(text: str) -> float:
    return float(text.strip().removesuffix("%").strip())


def _digits_ok(text: str) -> bool:
    """At most two significant digits below 50 %, at most two decimals from 50 % up."""
    number = _value(text)
    if number >= 50:
        return len(text.split(".")[1]) <= 2 if "." in text else True
    return len(text.replace(".", "").lstrip("0")) <= 2


@given(st.floats(0, 1), st.floats(0, 1))
def test_the_interval_shown_holds_the_interval_computed(a, b):
    lower, upper = min(a, b), max(a, b)
    low_text, high_text = numbers.interval(lower, upper).removesuffix(" %").split("–")
    assert _value(low_text) <= 100 * lower * (1 + 1e-12)
    assert _value(high_text) >= 100 * upper * (1 - 1e-12)
    assert _digits_ok(low_text) and _digits_ok(high_text)


@given(st.floats(0, 1))
def test_a_percentage_has_two_significant_digits_and_never_rounds_to_an_end(value):
    text = numbers.percent(value)
    if text.startswith("<"):
        assert 0 < value < 1e-6
        return
    assert _digits_ok(text.removesuffix(" %"))
    assert (text == "0 %") == (value == 0)
    assert (text == "100 %") == (value == 1)


# ---------------------------------------------------------------- the whole report
@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    url, engine = report_week.warehouse(tmp_path_factory.mktemp("numbers"))
    settings = Settings.load(environ=report_week.environ(url))
    report = collect_weekly(engine, settings, report_week.WEEK, now=report_week.NOW)
    engine.dispose()
    report = replace(report, trends=replace(report.trends, charts=()))  # no text in charts
    page = re.sub(r"<style>.*?</style>", "", render_html(report), flags=re.DOTALL)
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", page)).split())  # what one reads
    return report, text, render_markdown(report, "charts")


_PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:–(\d+(?:\.\d+)?))? %")


@pytest.mark.parametrize("kind", ["html", "markdown"])
def test_every_percentage_in_the_report_follows_the_number_style(rendered, kind):
    _, html, markdown = rendered
    text = html if kind == "html" else markdown
    found = [n for match in _PERCENT.findall(text) for n in match if n]
    assert len(found) > 60
    assert [n for n in found if not _digits_ok(n)] == []
    assert "99.9" not in text.replace("99.94–100 %", "")  # 6,644 of 6,644: '99.94–100 %'
    assert re.search(r"100 % \(99\.94–100 %\)", text.replace("( ", "("))


def test_the_risk_note_says_nothing_about_zero_segments(rendered):
    report, html, markdown = rendered
    assert (report.risk.suppressed, report.risk.low_volume, report.risk.complementary) == (0, 0, 0)
    for text in (html, markdown):
        assert f"{len(report_week.SEGMENTS)} segments had traffic this week." in text
        assert not re.search(r"\b0 (larger )?segments?\b", text)
        assert "not shown individually" not in text and "not ranked" not in text


def test_the_risk_note_names_what_was_held_back_when_there_is_some(rendered):
    report = rendered[0]
    risk = replace(report.risk, suppressed=1, low_volume=3, complementary=1)
    markdown = render_markdown(replace(report, risk=risk))
    assert (
        "4 segments had traffic this week. 1 segment with fewer than 20 distinct users is "
        "not shown individually, to protect privacy. 1 larger segment is held back too, so "
        "that the hidden ones cannot be worked out from the totals. 3 segments had fewer "
        "than 200 events and were not ranked."
    ) in markdown
