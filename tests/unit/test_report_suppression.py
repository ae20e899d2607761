"""The weekly report with one small segment: neither the segment nor its counts can be read
or worked out from what the report shows (SQLite here; PostgreSQL in
tests/integration/test_report_suppression_pg.py).

Ground truth is generated here: per window and segment, counters and a set of user ids. One
segment has 2 users all week and its own model version; it also has alerts. The report must
not name it, must not list its incidents, and every total minus what the report shows per
segment or per version must be the sum of at least two segments whose users together reach
k, never the small segment alone.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from pipelines.metrics.catalog import counter_ids
from pipelines.report.html import render_html
from pipelines.report.markdown import render_markdown
from pipelines.report.model import IsoWeek, WeeklyReport
from pipelines.report.suppression import alert_segment_shown, complementary_segment
from pipelines.report.weekly import collect_weekly
from pipelines.segments import segment_key
from pipelines.settings import Settings
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import Tables
from tests.unit.test_weekly_report import window_aggregates

WEEK = IsoWeek(2026, 47)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DIMS = ("product_surface", "model_version", "locale")
K = 20
SEGMENTS = {  # segment -> (distinct users per window, user pool, events per window)
    ("chat", "m-1", "de-DE"): (50, 200, 300),
    ("chat", "m-1", "en-US"): (40, 150, 250),
    ("api", "a-1", "en-US"): (30, 100, 200),
    ("chat", "m-9", "fr-FR"): (2, 2, 37),  # 2 users all week, its own model version
}
SMALL = ("chat", "m-9", "fr-FR")
WINDOWS = [WEEK.start + timedelta(days=d, hours=h) for d in range(7) for h in (9, 17)]


Rows = dict[tuple[datetime, tuple[str, ...]], tuple[dict[str, int], set[str]]]


def generate(seed: int = 3) -> Rows:
    rng = random.Random(seed)
    rows: Rows = {}
    for w in WINDOWS:
        for seg, (per_window, pool, events) in SEGMENTS.items():
            c = dict.fromkeys(counter_ids(), 0)
            c["events"] = events + rng.randint(0, 20)
            c["events_seen"] = c["events"]
            c["telemetry_complete"] = c["events"]
            c["violations"] = rng.randint(0, c["events"] // 10)
            c["unflagged_events"] = c["events"] - c["violations"]
            c["refusals"] = rng.randint(0, c["events"] // 10)
            users = {f"{'/'.join(seg)}#{u}" for u in rng.sample(range(pool), per_window)}
            rows[w, seg] = (c, users)
    return rows


def _commit_window(sink: WarehouseSink, batch: int, w: datetime, rows: Rows) -> None:
    """One batch holding window `w`'s rows of `rows` (counters and users per segment)."""
    aggs = window_aggregates(rows, w)
    events = sum(a["events"] for a in aggs)
    sink.commit(
        BatchResult(
            query_id="q",
            batch_id=batch,
            topic="t",
            started_at=w + timedelta(minutes=6),
            input_rows=events,
            late_rows=0,
            aggregated_rows=events,
            watermark_before=None,
            watermark_after=None,
            offsets=[OffsetRange("t", 0, batch * 1000, batch * 1000 + 999, 1000)],
            aggregates=aggs,
        ),
        now=w + timedelta(minutes=7),
    )


def load(engine: Engine, rows: dict) -> None:
    sink = WarehouseSink(engine)
    for batch, w in enumerate(WINDOWS):
        _commit_window(sink, batch, w, rows)


# (rule, segment pairs, severity): incidents at every granularity a rule can group by.
ALERTS = [
    ("HarmfulOutputRateHigh", tuple(zip(DIMS, SMALL, strict=True)), "sev1"),
    ("RefusalSpike", (("locale", "fr-FR"),), "sev2"),  # only the small segment has fr-FR
    ("PIILeakInOutput", (("model_version", "m-9"),), "sev2"),
    ("HarmfulOutputRateHigh", tuple(zip(DIMS, ("chat", "m-1", "de-DE"), strict=True)), "sev2"),
    ("JailbreakSuccess", (("product_surface", "chat"),), "sev3"),  # contains large segments
]


def insert_alerts(engine: Engine) -> None:
    rows: list[dict[str, Any]] = []
    for rule, seg, severity in ALERTS:
        fired, resolved = WINDOWS[2], WINDOWS[4]
        for window, status in ((fired, "firing"), (resolved, "resolved")):
            rows.append(
                {
                    "rule": rule,
                    "segment": segment_key(seg),
                    "window_start": window,
                    "from_status": "pending" if status == "firing" else "firing",
                    "to_status": status,
                    "severity": severity,
                    "metric": "violation_rate",
                    "value": 0.5,
                    "summary": f"{rule}: 9/18 in {seg}",
                    "description": "",
                    "recorded_at": window + timedelta(minutes=7),
                    "firing_since": fired,
                }
            )
    with engine.begin() as conn:
        conn.execute(insert(Tables(engine).alert_history), rows)


def build(engine: Engine) -> tuple[dict, WeeklyReport, str, str]:
    migrate(engine)
    rows = generate()
    load(engine, rows)
    insert_alerts(engine)
    settings = Settings.load(environ={"SAFEWATCH_PRIVACY__MIN_DISTINCT_USERS": str(K)})
    report = collect_weekly(engine, settings, WEEK, now=NOW)
    return rows, report, render_html(report), render_markdown(report, "charts")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, WeeklyReport, str, str]:
    return build(make_engine(f"sqlite:///{tmp_path_factory.mktemp('supp') / 'wh.db'}"))


def sums(rows: dict, segments: set) -> dict[str, int]:
    out = dict.fromkeys(counter_ids(), 0)
    for (_, seg), (c, _) in rows.items():
        if seg in segments:
            for name, v in c.items():
                out[name] += v
    return out


def check_nothing_derivable(rows: dict, report: WeeklyReport, html: str, markdown: str) -> None:
    """The assertions of this file, for any engine's report."""
    small = sums(rows, {SMALL})
    everything = sums(rows, set(SEGMENTS))
    assert report.events == everything["events"]  # totals still count all traffic
    # Not named anywhere: neither the segment nor its version, locale or alert text.
    for text in (html, markdown):
        assert "m-9" not in text and "fr-FR" not in text
    # Incidents: the three alert segments without k users are left out, and said to be.
    listed = {(i.rule, i.segment) for i in report.incidents.incidents}
    assert listed == {
        ("HarmfulOutputRateHigh", "chat / m-1 / de-DE"),
        ("JailbreakSuccess", "chat"),
    }
    assert dict(report.incidents.by_severity) == {"sev2": 1, "sev3": 1}
    assert report.incidents.sev1 == 0 and report.incidents.suppressed
    assert "left out of this section, to protect privacy" in html
    assert "left out of this section, to protect privacy" in markdown
    assert report.versions.transitions == 4  # two shown incidents x (firing, resolved)
    assert report.versions.rules_fired == ("HarmfulOutputRateHigh", "JailbreakSuccess")
    # Complementary suppression: the 2 users are below k alone, so the shown segment with
    # the fewest events (api / a-1 / en-US) is held back with them.
    held = {SMALL, ("api", "a-1", "en-US")}
    hidden = sums(rows, held)
    assert report.risk.suppressed == 1 and report.risk.complementary == 1
    # Per segment: totals minus the risk table.
    shown = {r.values for r in report.risk.rows}
    assert shown == set(SEGMENTS) - held
    rest = {
        "events": report.events - sum(r.events for r in report.risk.rows),
        "violations": report.kpi("violation_rate").current.numerator
        - sum(r.violation.numerator for r in report.risk.rows),
        "refusals": report.kpi("refusal_rate").current.numerator
        - sum(r.refusal.numerator for r in report.risk.rows),
    }
    assert rest == {c: hidden[c] for c in rest}
    assert all(rest[c] != small[c] for c in rest)
    # Per version: totals minus the versions table, for each version dimension shown.
    seen = [v for v in report.versions.seen if v.dimension == "model_version"]
    assert {v.value for v in seen} == {"m-1"}
    assert report.events - sum(v.events for v in seen) == hidden["events"] != small["events"]
    # What is left over covers at least k users together.
    users = set().union(*(ids for (_, seg), (_, ids) in rows.items() if seg in held))
    assert len(users) >= K


def test_a_small_segment_cannot_be_read_or_derived_from_the_report(world):
    check_nothing_derivable(*world)


def test_the_held_back_segment_is_the_smallest_and_only_when_needed():
    big: dict[tuple[str, ...], int] = {("a",): 500, ("b",): 300, ("c",): 300}
    assert complementary_segment(0, K, big) is None  # nothing suppressed
    assert complementary_segment(K, K, big) is None  # the suppressed ones reach k together
    assert complementary_segment(K - 1, K, big) == ("b",)  # fewest events, ties by values
    assert complementary_segment(3, K, {}) is None  # nothing shown: nothing to subtract from


@pytest.mark.parametrize(("segment", "shown"), [
    ((("product_surface", "chat"), ("model_version", "m-1"), ("locale", "de-DE")), True),
    ((("locale", "de-DE"),), True),
    ((), True),
    ((("locale", "fr-FR"),), False),
    ((("tenant", "acme"),), False),
])  # fmt: skip
def test_an_alert_segment_is_shown_when_it_contains_a_visible_segment(segment, shown):
    visible = {("chat", "m-1", "de-DE"), ("api", "a-1", "en-US")}
    assert alert_segment_shown(segment, DIMS, visible) is shown


# ---------------------------------------------------------------- trends of a short week
# Two hours of 5-minute windows: the charts then have a point per window. In one window only
# the small segment had traffic; its point would be that segment's own rate.
SHORT = [WEEK.start + timedelta(days=2, minutes=5 * i) for i in range(24)]
ALONE = SHORT[7]


def build_short(engine: Engine) -> tuple[Rows, WeeklyReport]:
    migrate(engine)
    rng = random.Random(9)
    rows: Rows = {}
    sink = WarehouseSink(engine)
    for batch, w in enumerate(SHORT):
        for seg, (per_window, pool, events) in SEGMENTS.items():
            if w == ALONE and seg != SMALL:
                continue
            c = dict.fromkeys(counter_ids(), 0)
            c["events"] = c["events_seen"] = c["telemetry_complete"] = events
            c["violations"] = rng.randint(1, events // 5)
            c["unflagged_events"] = events - c["violations"]
            users = {f"{'/'.join(seg)}#{u}" for u in rng.sample(range(pool), per_window)}
            rows[w, seg] = (c, users)
        _commit_window(sink, batch, w, rows)
    settings = Settings.load(environ={"SAFEWATCH_PRIVACY__MIN_DISTINCT_USERS": str(K)})
    return rows, collect_weekly(engine, settings, WEEK, now=NOW)


def check_short_trends(rows: Rows, report: WeeklyReport) -> None:
    (trend,) = [t for t in report.trends.charts if t.rate_id == "violation_rate"]
    assert report.trends.bucket == "5 minutes"
    expected = {}
    for w in SHORT:
        if w == ALONE:
            continue  # its only row has 2 users: no point
        here = [c for (ws, _), (c, _) in rows.items() if ws == w]
        expected[w] = (sum(c["violations"] for c in here), sum(c["events"] for c in here))
    assert {p.start: (p.numerator, p.denominator) for p in trend.points} == expected


def test_a_trend_point_of_a_small_group_alone_is_left_out(tmp_path):
    check_short_trends(*build_short(make_engine(f"sqlite:///{tmp_path / 'wh.db'}")))
