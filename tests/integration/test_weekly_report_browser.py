"""The weekly report as a person sees it: rendered by headless Chromium from a real warehouse.

The scenario warehouse (an hour of traffic with four incidents, written by the job's batch
processor and alert engine) is reported; Chromium must produce a screenshot, and the page it
parsed must hold every section, KPI figures equal to the counts this test takes from the
generated events themselves (Wilson intervals from scipy), and the incidents that
alert_history holds.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from scipy.stats import binomtest

from pipelines.report.browser import rendered_text, screenshot
from pipelines.report.model import IsoWeek
from pipelines.report.weekly import collect_weekly, write_report
from pipelines.synth.generator import labels

pytestmark = pytest.mark.integration

SECTIONS = {
    "summary": "Safety posture, week",
    "kpis": "Safety KPIs against targets",
    "trends": "Trends over the week",
    "risk-segments": "Top risk segments",
    "incidents": "Incidents",
    "drift": "Changes this week",
    "data-quality": "Data quality",
    "versions": "What changed",
}
# KPI -> (numerator label, denominator label or None for all events), from generator labels.
KPI_TRUTH = {
    "violation_rate": ("violation", None),
    "refusal_rate": ("refused", None),
    "injection_success_rate": ("injection_success", "injection_attempt"),
    "jailbreak_success_rate": ("jailbreak_success", "jailbreak_attempt"),
    "pii_output_rate": ("pii_in_output", None),
}


class _Page(HTMLParser):
    """Sections (id -> text) and rows with data-* attributes (with their text)."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.rows: list[dict[str, Any]] = []
        self.images: list[dict[str, str]] = []
        self._section: str | None = None
        self._row: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and "id" in a:
            self._section = a["id"]
            self.sections[a["id"]] = []
        if tag == "tr" and any(k.startswith("data-") for k in a):
            self._row = {**a, "_section": self._section, "_text": []}
            self.rows.append(self._row)
        if tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.sections[self._section].append(data)
        if self._row is not None:
            self._row["_text"].append(data)


@pytest.fixture(scope="module")
def rendered(scenario_warehouse, tmp_path_factory):
    sw = scenario_warehouse
    week = IsoWeek.containing(sw.start)
    report = collect_weekly(sw.engine, sw.settings, week, now=datetime.now(UTC))
    out = tmp_path_factory.mktemp("report")
    html, _md = write_report(report, out)
    png = screenshot(html, out / "report.png")
    page = _Page()
    page.feed(rendered_text(html))
    return sw, week, png, page


def test_chromium_renders_a_screenshot_of_the_whole_page(rendered):
    _, _, png, page = rendered
    from PIL import Image

    with Image.open(png) as image:
        width, height = image.size
        colours = image.convert("RGB").resize((64, 64)).getcolors(64 * 64)
    assert width == 1100
    assert height > 2500  # eight sections and eight charts, not an error page
    assert colours is not None and len(colours) > 20  # charts and badges, not a blank page
    chart_images = [i for i in page.images if i.get("data-chart")]
    assert len(chart_images) >= 6
    assert all(i["src"].startswith("data:image/png;base64,") for i in page.images)


def test_every_section_is_present_with_its_heading(rendered):
    _, _, _, page = rendered
    assert list(page.sections) == list(SECTIONS)
    for section, heading in SECTIONS.items():
        assert heading in " ".join(page.sections[section]), section


def _clustered_interval(events, num_label: str, den_label: str | None) -> tuple[float, float]:
    """The KPI's 95 % interval from the events: Wilson's on the effective sample size,
    events / design effect, the design effect from the delta method over the 32 user
    buckets (each user id hashed with blake2b, 8 bytes, modulo 32), at least 1.
    """
    num, den = [0] * 32, [0] * 32
    for e in events:
        on = labels(e)
        if den_label is not None and not on[den_label]:
            continue
        b = int.from_bytes(hashlib.blake2b(e["user_id"].encode(), digest_size=8).digest(), "big")
        num[b % 32] += int(on[num_label])
        den[b % 32] += 1
    k, n = sum(num), sum(den)
    ci = binomtest(k, n).proportion_ci(method="wilson")
    r = k / n
    variance = 32 / 31 * sum((x - r * d) ** 2 for x, d in zip(num, den, strict=True)) / n**2
    if r in (0.0, 1.0) or variance <= r * (1 - r) / n:
        return ci.low, ci.high
    m, z = r * (1 - r) / variance, 1.959963984540054  # the effective sample size
    centre = (r + z * z / (2 * m)) / (1 + z * z / m)
    half = z * math.sqrt(r * (1 - r) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    return min(ci.low, centre - half), max(ci.high, centre + half)


def test_kpi_figures_equal_the_events_and_the_warehouse(rendered):
    sw, week, _, page = rendered
    events = [e for e in sw.events if week.start <= _time(e) < week.end]
    counts = Counter(label for e in events for label, on in labels(e).items() if on)
    rows = {r["data-kpi"]: r for r in page.rows if r.get("data-kpi") and r["_section"] == "kpis"}
    for kpi, (num_label, den_label) in KPI_TRUTH.items():
        k = counts[num_label]
        n = counts[den_label] if den_label else len(events)
        row = rows[kpi]
        assert (int(row["data-numerator"]), int(row["data-denominator"])) == (k, n), kpi
        low, high = _clustered_interval(events, num_label, den_label)
        assert float(row["data-value"]) == pytest.approx(k / n, rel=1e-12)
        assert float(row["data-lower"]) == pytest.approx(low, abs=1e-12)
        assert float(row["data-upper"]) == pytest.approx(high, abs=1e-12)
        assert f"{k:,} of {n:,}" in "".join(row["_text"])  # what the reader sees
    # The same totals straight from the warehouse table, with SQL.
    with sqlite3.connect(sw.url.removeprefix("sqlite:///")) as db:
        events_sum, violations = db.execute(
            "SELECT SUM(events), SUM(violations) FROM segment_window_agg WHERE dimension_set = ?",
            (sw.dimension_set,),
        ).fetchone()
    assert (events_sum, violations) == (len(events), counts["violation"])
    assert f"{len(events):,} events" in " ".join(page.sections["summary"])


def test_incidents_are_the_alert_episodes_in_alert_history(rendered):
    sw, _, _, page = rendered
    with sqlite3.connect(sw.url.removeprefix("sqlite:///")) as db:
        fired = db.execute(
            "SELECT rule, segment, severity FROM alert_history WHERE to_status = 'firing'"
        ).fetchall()
    expected = Counter(
        (rule, " / ".join(v for _, v in _pairs(segment)), severity)
        for rule, segment, severity in fired
    )
    shown = Counter(
        (r["data-rule"], r["data-segment"], r["data-severity"])
        for r in page.rows
        if r["_section"] == "incidents"
    )
    assert shown == expected
    assert len(expected) >= 4  # the four injected incidents fired


def _pairs(segment: str) -> list[tuple[str, str]]:
    import json

    return [(d, v) for d, v in json.loads(segment)]


def _time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["event_time"].replace("Z", "+00:00")).astimezone(UTC)
