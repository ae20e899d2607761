"""The weekly safety-posture report against a warehouse whose ground truth the test knows.

A SQLite warehouse is built with the real migrations and filled through the real sink with
generated counters and distinct-user sketches over two ISO weeks (2026-W46 and W47) and
seven segments; alert transitions and drift rows are inserted as the alert engine and the
drift job would store them. Every figure of the report is then compared with what this test
computes on its own from the generated rows: plain sums, scipy's Wilson interval
(`binomtest(...).proportion_ci(method="wilson")`), scipy's chi-square test on the 2 x 2
table (which the pooled two-proportion z test equals) and scipy's Benjamini-Hochberg.
"""

from __future__ import annotations

import base64
import dataclasses
import html as html_lib
import re
import struct
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import datasketches as ds
import numpy as np
import pytest
from scipy import stats
from sqlalchemy import insert

from pipelines.errors import ConfigError, SafewatchError
from pipelines.metrics.catalog import counter_ids, rate
from pipelines.report.charts import HEIGHT_PX, WIDTH_PX, trend_chart
from pipelines.report.html import render_html
from pipelines.report.markdown import render_markdown
from pipelines.report.model import AT_RISK, CHANGE_RATES, MET, MISSED, IsoWeek
from pipelines.report.numbers import rate as rate_text
from pipelines.report.trends import bucket_trends
from pipelines.report.weekly import collect_weekly, latest_week, write_report
from pipelines.report.wording import STATUS_LABELS
from pipelines.segments import SEGMENT_DIMENSIONS, segment_key
from pipelines.settings import Settings
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import Tables

REPO = Path(__file__).resolve().parents[2]
WEEK = IsoWeek(2026, 47)
PREVIOUS = IsoWeek(2026, 46)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # Monday of W48
DIMS = ("product_surface", "model_version", "locale")
HOURS = (10, 15)  # two 5-minute windows a day


# (surface, model, locale): weeks present, user pool, users per window, events per window,
# violation probability
SEGMENTS = {
    ("chat", "m-1", "de-DE"): ((46, 47), 300, 60, (250, 350), 0.003),
    ("chat", "m-1", "en-US"): ((46, 47), 200, 40, (150, 250), 0.006),
    ("chat", "m-2", "de-DE"): ((47,), 150, 40, (250, 350), 0.012),
    ("api", "a-1", "en-US"): ((46, 47), 120, 15, (40, 60), 0.004),  # every window < k users
    ("api", "a-1", "fr-FR"): ((47,), 8, 5, (25, 35), 0.06),  # 8 users: always suppressed
    ("chat", "m-2", "fr-FR"): ((47,), 5, 4, (8, 12), 0.02),  # 5 users: suppressed
    ("search", "s-1", "ja-JP"): ((47,), 60, 10, (8, 13), 0.01),  # < 200 events: not ranked
}


def _windows(week: IsoWeek) -> list[datetime]:
    return [week.start + timedelta(days=d, hours=h) for d in range(7) for h in HOURS]


def _sketch(ids) -> bytes:
    s = ds.hll_sketch(11)
    for i in ids:
        s.update(str(i))
    return bytes(s.serialize_compact())


def _generate(seed: int = 11):
    """Rows keyed by (window_start, segment): counters, user ids; ledger rows per window."""
    rng = np.random.default_rng(seed)
    rows = {}
    for week in (PREVIOUS, WEEK):
        for w in _windows(week):
            for seg, (weeks, pool, per_window, (lo, hi), p_violation) in SEGMENTS.items():
                if week.week not in weeks:
                    continue
                events = int(rng.integers(lo, hi))
                # A large segment with a few small windows (the same 6 users on the week's
                # Monday): their union alone is below k, the week's is far above it.
                small_day = seg == ("chat", "m-1", "en-US") and w.day == WEEK.start.day
                if week == PREVIOUS:
                    p_violation *= 0.5  # harmful output doubles this week
                c = dict.fromkeys(counter_ids(), 0)
                c["events"] = events
                c["violations"] = c["violations_violence"] = int(rng.binomial(events, p_violation))
                c["unflagged_events"] = events - c["violations"]
                c["refusals"] = int(rng.binomial(events, 0.04))
                c["over_refusals"] = min(
                    int(rng.binomial(c["refusals"], 0.9)), c["unflagged_events"]
                )
                c["blocks"] = int(rng.binomial(events, 0.01))
                c["injection_attempts"] = int(rng.binomial(events, 0.03))
                c["injection_successes"] = int(rng.binomial(c["injection_attempts"], 0.08))
                c["jailbreak_attempts"] = int(rng.binomial(events, 0.02))
                c["jailbreak_successes"] = int(rng.binomial(c["jailbreak_attempts"], 0.05))
                c["tool_call_events"] = int(rng.binomial(events, 0.3))
                c["unauthorized_tool_call_events"] = int(rng.binomial(c["tool_call_events"], 0.01))
                c["pii_outputs"] = int(rng.binomial(events, 0.002))
                c["events_seen"] = events + int(rng.integers(0, 3))
                c["telemetry_complete"] = c["events_seen"] - int(
                    rng.binomial(c["events_seen"], 0.01)
                )
                c["redaction_failures"] = int(rng.binomial(c["events_seen"] - events, 0.5))
                users = rng.choice(pool, size=min(pool, per_window), replace=False)
                rows[w, seg] = (c, set(range(6)) if small_day else {int(u) for u in users})
    return rows


def _ledger(rng_seed: int = 5):
    """Per window: input, rejected by reason, late, duplicates, DLQ, quality verdict."""
    rng = np.random.default_rng(rng_seed)
    out = {}
    for week in (PREVIOUS, WEEK):
        for i, w in enumerate(_windows(week)):
            reasons = {
                "schema_violation": int(rng.integers(0, 4)),
                "pii_detected": int(rng.integers(0, 2)),
            }
            reasons = {k: v for k, v in reasons.items() if v}
            late = int(rng.integers(0, 5))
            dup = int(rng.integers(0, 3))
            ok = i % 5 != 3  # some batches fail the suite
            out[w] = {
                "rejected_by_reason": reasons,
                "late_rows": late,
                "duplicate_rows": dup,
                "dlq_rows": sum(reasons.values()) + late,
                "quality_success": ok,
            }
    return out


def window_aggregates(rows, w: datetime) -> list[dict]:
    """The segment_window_agg rows of window `w` among `rows` ((window, DIMS values) ->
    (counters, user ids)), grouped by DIMS."""
    aggs = []
    for (ws, seg), (counters, users) in rows.items():
        if ws != w:
            continue
        key = dict.fromkeys(SEGMENT_DIMENSIONS, "*")
        key.update(zip(DIMS, seg, strict=True))
        aggs.append(
            {
                "window_start": w,
                "window_end": w + timedelta(minutes=5),
                "dimension_set": ",".join(DIMS),
                **key,
                **counters,
                "users_sketch": _sketch(users),
            }
        )
    return aggs


def _load(engine, rows, ledger) -> None:
    sink = WarehouseSink(engine)
    batch = 0
    for w in sorted({w for w, _ in rows}):
        aggs = window_aggregates(rows, w)
        info = ledger[w]
        aggregated = sum(a["events"] for a in aggs)
        quality_rows = [
            {
                "expectation_type": "expect_column_values_to_not_be_null",
                "column_name": "model.version",
                "success": info["quality_success"],
                "element_count": aggregated,
                "unexpected_count": 0 if info["quality_success"] else 7,
                "unexpected_percent": 0.0,
                "rows_total": aggregated,
                "rows_validated": aggregated,
                "sampled": False,
            }
        ]
        rejected = sum(info["rejected_by_reason"].values())
        sink.commit(
            BatchResult(
                query_id="q",
                batch_id=batch,
                topic="t",
                started_at=w + timedelta(minutes=6),
                input_rows=aggregated + rejected + info["late_rows"] + info["duplicate_rows"],
                late_rows=info["late_rows"],
                aggregated_rows=aggregated,
                watermark_before=None,
                watermark_after=None,
                offsets=[OffsetRange("t", 0, batch * 10_000, batch * 10_000 + 9_999, 10_000)],
                aggregates=aggs,
                rejected_by_reason=info["rejected_by_reason"],
                duplicate_rows=info["duplicate_rows"],
                dlq_rows=info["dlq_rows"],
                quality_success=info["quality_success"],
                quality_rows=quality_rows,
            ),
            now=w + timedelta(minutes=7),
        )
        batch += 1


def _seg_json(surface: str, model: str, locale: str) -> str:
    return segment_key((("product_surface", surface), ("model_version", model), ("locale", locale)))


D = WEEK.start  # Monday 2026-11-16 00:00 UTC
ALERTS = [
    # rule, segment, window_start, to_status, severity, recorded_at
    # 1: fires Tue 10:00, acknowledged 12 min after it was recorded, resolved 12:30 (2.5 h).
    (
        "HarmfulOutputRateHigh",
        ("chat", "m-2", "de-DE"),
        D + timedelta(days=1, hours=10),
        "firing",
        "sev2",
        D + timedelta(days=1, hours=10, minutes=7),
    ),
    (
        "HarmfulOutputRateHigh",
        ("chat", "m-2", "de-DE"),
        D + timedelta(days=1, hours=10),
        "acknowledged",
        "sev2",
        D + timedelta(days=1, hours=10, minutes=19),
    ),
    (
        "HarmfulOutputRateHigh",
        ("chat", "m-2", "de-DE"),
        D + timedelta(days=1, hours=12, minutes=30),
        "resolved",
        "sev2",
        D + timedelta(days=1, hours=12, minutes=37),
    ),
    # 2: the same rule and segment fires again Thu 15:00, acknowledged after 40 min, 1 h.
    (
        "HarmfulOutputRateHigh",
        ("chat", "m-2", "de-DE"),
        D + timedelta(days=3, hours=15),
        "firing",
        "sev2",
        D + timedelta(days=3, hours=15, minutes=7),
    ),
    (
        "HarmfulOutputRateHigh",
        ("chat", "m-2", "de-DE"),
        D + timedelta(days=3, hours=15),
        "acknowledged",
        "sev2",
        D + timedelta(days=3, hours=15, minutes=47),
    ),
    (
        "HarmfulOutputRateHigh",
        ("chat", "m-2", "de-DE"),
        D + timedelta(days=3, hours=16),
        "resolved",
        "sev2",
        D + timedelta(days=3, hours=16, minutes=7),
    ),
    # 3: sev1, Wed 10:00 to 16:00 (6 h > 4 h target), never acknowledged.
    (
        "PIILeakInOutput",
        ("api", "a-1", "en-US"),
        D + timedelta(days=2, hours=10),
        "firing",
        "sev1",
        D + timedelta(days=2, hours=10, minutes=7),
    ),
    (
        "PIILeakInOutput",
        ("api", "a-1", "en-US"),
        D + timedelta(days=2, hours=16),
        "resolved",
        "sev1",
        D + timedelta(days=2, hours=16, minutes=7),
    ),
    # 4: sev2 still firing since Sat 10:00; at NOW that is 50 h > 24 h.
    (
        "RefusalSpike",
        ("chat", "m-1", "en-US"),
        D + timedelta(days=5, hours=10),
        "firing",
        "sev2",
        D + timedelta(days=5, hours=10, minutes=7),
    ),
    # 5: fired last week (Sun 15:00), resolved this week (Mon 10:00): 19 h, counted.
    (
        "JailbreakSuccess",
        ("chat", "m-1", "de-DE"),
        D - timedelta(hours=9),
        "firing",
        "sev3",
        D - timedelta(hours=8, minutes=53),
    ),
    (
        "JailbreakSuccess",
        ("chat", "m-1", "de-DE"),
        D + timedelta(hours=10),
        "resolved",
        "sev3",
        D + timedelta(hours=10, minutes=7),
    ),
    # 6: entirely last week: not this week's incident.
    (
        "InjectionSuccess",
        ("api", "a-1", "en-US"),
        D - timedelta(days=3),
        "firing",
        "sev2",
        D - timedelta(days=3) + timedelta(minutes=7),
    ),
    (
        "InjectionSuccess",
        ("api", "a-1", "en-US"),
        D - timedelta(days=2),
        "resolved",
        "sev2",
        D - timedelta(days=2) + timedelta(minutes=7),
    ),
    # pending that never fired: not an incident.
    (
        "RefusalSpike",
        ("chat", "m-1", "de-DE"),
        D + timedelta(days=4, hours=10),
        "pending",
        "sev2",
        D + timedelta(days=4, hours=10, minutes=7),
    ),
]


def _insert_alerts(engine) -> None:
    t = Tables(engine).alert_history
    rows = []
    for rule, seg, window, to_status, severity, recorded in ALERTS:
        rows.append(
            {
                "rule": rule,
                "segment": _seg_json(*seg),
                "window_start": window,
                "from_status": "firing"
                if to_status in ("resolved", "acknowledged")
                else "inactive",
                "to_status": to_status,
                "severity": severity,
                "metric": "violation_rate",
                "value": 0.05,
                "summary": f"{rule} in {' / '.join(seg)}",
                "description": "",
                "recorded_at": recorded,
                "firing_since": window if to_status == "firing" else None,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(t), rows)


# Outcome drift rows for the new version's segments: (segment, day, hour, status, psi)
DRIFT = [
    (("chat", "m-2", "de-DE"), 0, 10, "ok", 0.05),
    (("chat", "m-2", "de-DE"), 0, 15, "ok", 0.32),
    (("chat", "m-2", "de-DE"), 1, 10, "ok", 0.12),
    (("chat", "m-2", "de-DE"), 1, 15, "insufficient_data", None),
    (("chat", "m-2", "de-DE"), 2, 10, "ok", 0.08),
    (("chat", "m-2", "fr-FR"), 0, 10, "ok", 0.9),  # 5 users: hidden, counted
    (("chat", "m-1", "de-DE"), 0, 10, "ok", 0.7),  # not a new version: not listed
]


def _insert_drift(engine) -> None:
    t = Tables(engine).drift
    rows = []
    for seg, day, hour, status, psi in DRIFT:
        key = dict.fromkeys(SEGMENT_DIMENSIONS, "*")
        key.update(zip(DIMS, seg, strict=True))
        rows.append(
            {
                "window_start": D + timedelta(days=day, hours=hour),
                "dimension_set": ",".join(DIMS),
                **key,
                "distribution": "outcome",
                "baseline": "trailing 7 days",
                "status": status,
                "current_n": 300,
                "baseline_n": 3000,
                "psi": psi,
                "computed_at": NOW,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(t), rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = tmp_path_factory.mktemp("weekly") / "wh.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    rows = _generate()
    ledger = _ledger()
    _load(engine, rows, ledger)
    _insert_alerts(engine)
    _insert_drift(engine)
    settings = Settings.load(environ={})
    report = collect_weekly(engine, settings, WEEK, now=NOW)
    html = render_html(report)
    markdown = render_markdown(report, "charts")
    return engine, settings, rows, ledger, report, html, markdown


def _totals(rows, week: IsoWeek, where=lambda seg: True) -> dict[str, int]:
    out = dict.fromkeys(counter_ids(), 0)
    for (w, seg), (c, _) in rows.items():
        if week.start <= w < week.end and where(seg):
            for k, v in c.items():
                out[k] += v
    return out


def _week_users(rows, week: IsoWeek) -> dict:
    users: dict = defaultdict(set)
    for (w, seg), (_, ids) in rows.items():
        if week.start <= w < week.end:
            users[seg] |= ids
    return users


def _held_back(rows, k: int, week: IsoWeek = WEEK) -> tuple[set, set]:
    """(segments below k users, the shown segment held back with them): from the user ids."""
    users = _week_users(rows, week)
    small = {seg for seg, ids in users.items() if len(ids) < k}
    extra = set()
    if small and len(set().union(*(users[seg] for seg in small))) < k:
        events = {
            seg: _totals(rows, week, lambda s, seg=seg: s == seg)["events"]
            for seg in users
            if seg not in small
        }
        extra = {min(events, key=lambda seg: (events[seg], seg))}
    return small, extra


def _wilson(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(method="wilson")
    return ci.low, ci.high


def _chi2_p(a: int, n1: int, b: int, n2: int) -> float:
    table = np.array([[a, n1 - a], [b, n2 - b]])
    if (table.sum(axis=0) == 0).any():
        return 1.0  # no variance: no evidence of a change
    return float(stats.chi2_contingency(table, correction=False).pvalue)


# ---------------------------------------------------------------- ISO weeks
def test_iso_week_boundaries_match_the_iso_calendar():
    week = IsoWeek.parse("2026-W47")
    assert (week.year, week.week) == (2026, 47)
    assert week.start == datetime.fromisocalendar(2026, 47, 1).replace(tzinfo=UTC)
    assert week.end == datetime.fromisocalendar(2026, 48, 1).replace(tzinfo=UTC)
    assert str(week) == "2026-W47"
    assert week.previous() == IsoWeek(2026, 46)
    # 2026 has 53 ISO weeks; its first week starts in December 2025.
    assert IsoWeek.parse("2026-W53").end == datetime.fromisocalendar(2027, 1, 1).replace(tzinfo=UTC)
    assert IsoWeek.parse("2026-W01").previous() == IsoWeek(2025, 52)
    assert IsoWeek.parse("2026-W01").start == datetime(2025, 12, 29, tzinfo=UTC)
    assert IsoWeek.containing(datetime(2027, 1, 3, 23, 59, tzinfo=UTC)) == IsoWeek(2026, 53)
    assert IsoWeek.containing(datetime(2026, 11, 23, 15, 20, tzinfo=UTC)) == IsoWeek(2026, 48)


@pytest.mark.parametrize("text", ["2026-47", "2026W47", "26-W47", "2026-W7", "week 47", ""])
def test_malformed_week_is_a_value_error_naming_the_form(text):
    with pytest.raises(ValueError, match="YYYY-Www"):
        IsoWeek.parse(text)


@pytest.mark.parametrize("text", ["2025-W53", "2026-W54", "2026-W00"])
def test_week_outside_the_year_is_a_value_error(text):
    with pytest.raises(ValueError, match="not an ISO week"):
        IsoWeek.parse(text)


def test_naive_datetime_has_no_week():
    with pytest.raises(ValueError, match="timezone-aware"):
        IsoWeek.containing(datetime(2026, 11, 23))  # noqa: DTZ001


# ---------------------------------------------------------------- KPIs
def test_kpi_values_intervals_and_status_equal_the_generated_sums(world):
    _, settings, rows, _, report, _, _ = world
    current = _totals(rows, WEEK)
    statuses = set()
    for k in report.kpis:
        r = rate(k.rate_id)
        num, den = current[r.numerator], current[r.denominator]
        assert (k.current.numerator, k.current.denominator) == (num, den), k.rate_id
        assert k.current.value == pytest.approx(num / den, rel=1e-12)
        low, high = _wilson(num, den)
        assert k.current.lower == pytest.approx(low, abs=1e-12), k.rate_id
        assert k.current.upper == pytest.approx(high, abs=1e-12), k.rate_id
        target = settings.report.targets.get(k.rate_id)
        assert k.target == target
        if target is None:
            expected = "no_target"
        elif r.higher_is_worse:
            expected = MET if high <= target else MISSED if low > target else AT_RISK
        else:
            expected = MET if low >= target else MISSED if high < target else AT_RISK
        assert k.status == expected, k.rate_id
        statuses.add(k.status)
    # The generated data exercises every verdict.
    assert {MET, MISSED, AT_RISK} <= statuses
    assert [k.rate_id for k in report.kpis][:2] == ["violation_rate", "refusal_rate"]
    assert report.events == current["events"]
    assert report.events_seen == current["events_seen"]


def test_week_over_week_p_values_equal_the_chi_square_test(world):
    _, _, rows, _, report, _, _ = world
    current, previous = _totals(rows, WEEK), _totals(rows, PREVIOUS)
    for k in (*report.kpis, *report.categories):
        r = rate(k.rate_id)
        a, n1 = current[r.numerator], current[r.denominator]
        b, n2 = previous[r.numerator], previous[r.denominator]
        assert (k.previous.numerator, k.previous.denominator) == (b, n2)
        if n1 == 0 or n2 == 0:
            assert k.change.p_value is None
            continue
        expected = _chi2_p(a, n1, b, n2)
        assert k.change.p_value == pytest.approx(expected, rel=1e-6, abs=1e-300), k.rate_id
        assert k.change.difference == pytest.approx(a / n1 - b / n2, abs=1e-15)
        assert k.change.significant == (expected < 0.05)
    # Harmful output doubled: the generated change is large enough to be called significant.
    assert report.kpi("violation_rate").change.significant is True


# One prolific user against many: the week-over-week test with per-user-bucket sums.
B = 32


def _design_effect(num, den) -> float:
    """The delta-method variance of sum(num) / sum(den) over the buckets, divided by the
    binomial variance, at least 1: written out here, apart from pipelines.metrics.buckets.
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    d = den.sum()
    r = num.sum() / d
    robust = B / (B - 1) * np.sum((num - r * den) ** 2) / d**2
    return max(1.0, robust / (r * (1 - r) / d))


def _robust_p(a: int, n1: int, d1: float, b: int, n2: int, d2: float) -> float:
    pooled = (a + b) / (n1 + n2)
    z = (a / n1 - b / n2) / np.sqrt(pooled * (1 - pooled) * (d1 / n1 + d2 / n2))
    return float(2 * stats.norm.sf(abs(z)))


def _week(num, den):
    """violation_rate of a week from its violations and events per bucket."""
    from pipelines.metrics.catalog import rate_value

    num, den = np.asarray(num), np.asarray(den)
    totals = {"violations": int(num.sum()), "events": int(den.sum())}
    return rate_value("violation_rate", totals, {"violations": num, "events": den})


# Violations and events per bucket. Two quiet weeks of many users: 300 events in each
# bucket, each flagged with probability 1 %. This week a prolific user, all in bucket 5,
# adds 200 events of which 60 are flagged; or the same 200 events and 60 violations are
# spread over every bucket (many users: a real change). The seed is one where both quiet
# weeks' design effects come out above 1, so that both sides of the test are widened.
_RNG = np.random.default_rng(29)
PREVIOUS_WEEK = (_RNG.binomial(300, 0.01, B), np.full(B, 300))
_THIS_WEEK = (_RNG.binomial(300, 0.01, B), np.full(B, 300))
PROLIFIC = (
    _THIS_WEEK[0] + np.eye(B, dtype=int)[5] * 60,
    _THIS_WEEK[1] + np.eye(B, dtype=int)[5] * 200,
)
SPREAD = (
    _THIS_WEEK[0] + _RNG.multinomial(60, [1 / B] * B),
    _THIS_WEEK[1] + _RNG.multinomial(200, [1 / B] * B),
)


def test_week_over_week_is_not_significant_when_one_prolific_user_makes_the_rise():
    from pipelines.report.kpis import week_over_week

    assert (PROLIFIC[0].sum(), PROLIFIC[1].sum()) == (SPREAD[0].sum(), SPREAD[1].sum())
    a, n1 = int(PROLIFIC[0].sum()), int(PROLIFIC[1].sum())
    b, n2 = int(PREVIOUS_WEEK[0].sum()), int(PREVIOUS_WEEK[1].sum())
    d1, d2 = _design_effect(*PROLIFIC), _design_effect(*PREVIOUS_WEEK)
    assert d1 > 10 and 1.0 < d2 < 2.0
    # The plain test (every event independent) calls the rise significant ...
    assert _chi2_p(a, n1, b, n2) < 0.001
    # ... the test widened by each week's design effect does not.
    change = week_over_week(_week(*PROLIFIC), _week(*PREVIOUS_WEEK))
    assert change.p_value == pytest.approx(_robust_p(a, n1, d1, b, n2, d2), rel=1e-9)
    assert change.p_value > 0.05 and change.significant is False
    assert change.difference == pytest.approx(a / n1 - b / n2, abs=1e-15)
    # Against a previous week whose users are unknown (no bucket sums) only this week's
    # variance is widened.
    unknown = week_over_week(_week(*PROLIFIC), _week_without_buckets(*PREVIOUS_WEEK))
    assert unknown.p_value == pytest.approx(_robust_p(a, n1, d1, b, n2, 1.0), rel=1e-9)


def test_week_over_week_stays_significant_for_a_rise_spread_over_many_users():
    from pipelines.report.kpis import week_over_week

    a, n1 = int(SPREAD[0].sum()), int(SPREAD[1].sum())
    b, n2 = int(PREVIOUS_WEEK[0].sum()), int(PREVIOUS_WEEK[1].sum())
    d1, d2 = _design_effect(*SPREAD), _design_effect(*PREVIOUS_WEEK)
    assert 1.0 < d1 < 2.0
    change = week_over_week(_week(*SPREAD), _week(*PREVIOUS_WEEK))
    assert change.p_value == pytest.approx(_robust_p(a, n1, d1, b, n2, d2), rel=1e-9)
    assert change.p_value > _chi2_p(a, n1, b, n2)  # widened, a little
    assert change.p_value < 0.01 and change.significant is True


def test_week_over_week_widens_the_previous_week_too():
    from pipelines.report.kpis import week_over_week

    # The prolific user was last week: this week's fall is one user leaving.
    a, n1 = int(PREVIOUS_WEEK[0].sum()), int(PREVIOUS_WEEK[1].sum())
    b, n2 = int(PROLIFIC[0].sum()), int(PROLIFIC[1].sum())
    assert _chi2_p(a, n1, b, n2) < 0.001
    change = week_over_week(_week(*PREVIOUS_WEEK), _week(*PROLIFIC))
    expected = _robust_p(a, n1, _design_effect(*PREVIOUS_WEEK), b, n2, _design_effect(*PROLIFIC))
    assert change.p_value == pytest.approx(expected, rel=1e-9)
    assert change.significant is False
    # Without bucket sums on either side the test is the plain one.
    plain = week_over_week(_week_without_buckets(*PREVIOUS_WEEK), _week_without_buckets(*PROLIFIC))
    assert plain.p_value == pytest.approx(_chi2_p(a, n1, b, n2), rel=1e-6)
    assert plain.significant is True


def test_week_over_week_finds_nothing_when_a_week_may_be_one_user():
    from pipelines.report.kpis import week_over_week

    # Every event of this week in one bucket: possibly a single user.
    alone = (np.eye(B, dtype=int)[9] * 160, np.eye(B, dtype=int)[9] * 9800)
    b, n2 = int(PREVIOUS_WEEK[0].sum()), int(PREVIOUS_WEEK[1].sum())
    assert _chi2_p(160, 9800, b, n2) < 0.01
    change = week_over_week(_week(*alone), _week(*PREVIOUS_WEEK))
    assert (change.p_value, change.significant) == (1.0, False)


def _week_without_buckets(num, den):
    from pipelines.metrics.catalog import rate_value

    totals = {"violations": int(np.sum(num)), "events": int(np.sum(den))}
    return rate_value("violation_rate", totals)


def test_kpi_rows_in_the_html_carry_the_warehouse_numbers(world):
    _, _, _, _, report, html, _ = world
    for k in report.kpis:
        match = re.search(rf'<tr data-kpi="{k.rate_id}"[^>]*>', html)
        assert match is not None, k.rate_id
        attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', match.group(0)))
        assert int(attrs["data-numerator"]) == k.current.numerator
        assert int(attrs["data-denominator"]) == k.current.denominator
        assert float(attrs["data-value"]) == k.current.value
        assert attrs["data-status"] == k.status
        assert float(attrs["data-p-value"]) == k.change.p_value
        assert STATUS_LABELS[k.status] in html[match.end() : html.index("</tr>", match.end())]


def test_markdown_shows_the_same_kpi_numbers_as_the_html(world):
    _, _, _, _, report, html, markdown = world
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", html))  # what the reader sees
    for k in report.kpis:
        shown = rate_text(k.current)
        counts = f"{k.current.numerator:,} of {k.current.denominator:,}"
        assert shown in text and shown in markdown, k.rate_id
        assert counts in text and counts in markdown, k.rate_id
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {k.name} |"))
        assert f"**{STATUS_LABELS[k.status]}**" in row


def test_targets_are_overridable_one_at_a_time(tmp_path, world):
    engine, *_ = world
    config = tmp_path / "sw.toml"
    config.write_text(
        "[report.targets]\nviolation_rate = 0.5\n\n[report.mttr_targets]\nsev2 = 100\n"
    )
    settings = Settings.load(config, environ={})
    assert settings.report.targets["violation_rate"] == 0.5
    assert settings.report.targets["pii_output_rate"] == 0.0001  # default kept
    assert settings.report.targets["telemetry_completeness"] == 0.98
    assert settings.report.mttr_targets == {"sev1": 4.0, "sev2": 100.0}
    env = Settings.load(environ={"SAFEWATCH_REPORT__TARGETS__JAILBREAK_SUCCESS_RATE": "0.2"})
    assert env.report.targets["jailbreak_success_rate"] == 0.2
    assert env.report.targets["violation_rate"] == 0.001
    report = collect_weekly(engine, settings, WEEK, now=NOW)
    assert report.kpi("violation_rate").status == MET  # far below 50 %


def test_unknown_kpi_in_targets_is_a_config_error_listing_the_rate_ids(tmp_path):
    config = tmp_path / "sw.toml"
    config.write_text("[report.targets]\nharm_rate = 0.01\n")
    with pytest.raises(ConfigError, match=r"unknown KPI.*harm_rate.*violation_rate"):
        Settings.load(config, environ={})
    config.write_text("[report.targets]\nviolation_rate = 2\n")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        Settings.load(config, environ={})


# ---------------------------------------------------------------- trends
def test_trends_are_daily_sums_with_wilson_intervals(world):
    _, _, rows, _, report, html, _ = world
    assert report.trends.bucket == "1 day"
    charts = {t.rate_id: t for t in report.trends.charts}
    assert {
        "violation_rate",
        "refusal_rate",
        "injection_success_rate",
        "jailbreak_success_rate",
        "pii_output_rate",
        "telemetry_completeness",
    } <= set(charts)
    trend = charts["violation_rate"]
    per_day: dict = defaultdict(lambda: [0, 0])
    for (w, _), (c, _) in rows.items():
        if WEEK.start <= w < WEEK.end:
            day = w.replace(hour=0, minute=0)
            per_day[day][0] += c["violations"]
            per_day[day][1] += c["events"]
    assert [p.start for p in trend.points] == sorted(per_day)
    for p in trend.points:
        num, den = per_day[p.start]
        assert (p.numerator, p.denominator) == (num, den)
        assert (p.lower, p.upper) == pytest.approx(_wilson(num, den), abs=1e-12)
    for rate_id in charts:
        assert f'data-chart="{rate_id}"' in html


def test_trend_bucket_follows_the_span_of_the_data():
    start = datetime(2026, 11, 23, 15, 20, tzinfo=UTC)

    def windows(n, step):
        counts = {"violations": 1, "events": 10}
        return [
            (start + i * step, start + i * step + timedelta(minutes=5), counts) for i in range(n)
        ]

    hour = bucket_trends(windows(12, timedelta(minutes=5)), ["violation_rate"], {})
    assert hour.bucket == "5 minutes" and len(hour.charts[0].points) == 12
    eight_hours = bucket_trends(windows(96, timedelta(minutes=5)), ["violation_rate"], {})
    assert eight_hours.bucket == "1 hour" and len(eight_hours.charts[0].points) == 9
    assert eight_hours.charts[0].points[0].start == datetime(2026, 11, 23, 15, tzinfo=UTC)
    assert eight_hours.charts[0].points[0].denominator == 80  # 15:20..15:55
    none = bucket_trends(windows(12, timedelta(minutes=5)), ["jailbreak_success_rate"], {})
    assert none.charts == () and none.skipped == ("jailbreak_success_rate",)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_charts_are_deterministic_pngs(world):
    engine, settings, *_, report, _, _ = world
    again = collect_weekly(engine, settings, WEEK, now=NOW + timedelta(days=1))
    first = trend_chart(report.trends.charts[0])
    assert trend_chart(again.trends.charts[0]) == first
    assert _png_size(first) == (WIDTH_PX, HEIGHT_PX)
    single = bucket_trends(
        [(D, D + timedelta(minutes=5), {"violations": 3, "events": 400})], ["violation_rate"], {}
    )
    assert _png_size(trend_chart(single.charts[0])) == (WIDTH_PX, HEIGHT_PX)


# ---------------------------------------------------------------- HTML
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.src: list[str] = []
        self.href: list[str] = []
        self.ids: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name == "src":
                self.src.append(value or "")
            elif name == "href":
                self.href.append(value or "")
            elif name == "id":
                self.ids.append(value or "")


def test_html_is_self_contained_with_every_section_in_order(world):
    _, _, _, _, report, html, _ = world
    parser = _Links()
    parser.feed(html)
    assert parser.ids == [
        "summary",
        "kpis",
        "trends",
        "risk-segments",
        "incidents",
        "drift",
        "data-quality",
        "versions",
    ]
    assert "script" not in parser.tags and "link" not in parser.tags
    assert "url(" not in html and "@import" not in html
    assert len(parser.src) == len(report.trends.charts) >= 6
    for src in parser.src:
        assert not src.startswith(("http://", "https://", "//"))
        assert src.startswith("data:image/png;base64,")
        assert _png_size(base64.b64decode(src.split(",", 1)[1])) == (WIDTH_PX, HEIGHT_PX)
    runbooks = (REPO / "runbooks").as_uri()
    assert parser.href and all(re.fullmatch(rf"{runbooks}/\w+\.md", h) for h in parser.href)
    assert re.findall(r"https?://", html) == []


def _markdown_links(markdown: str) -> list[str]:
    return re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", markdown)


def _local_file(link: str, folder: Path) -> Path:
    """Where a browser opening a file in `folder` finds `link`: a file:// URL or a path."""
    parts = urlsplit(link)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    assert parts.scheme == "", link  # no web URL by default
    return folder / unquote(parts.path)


def test_runbook_links_of_both_files_open_the_repository_runbooks(world, tmp_path):
    report = world[4]
    report = dataclasses.replace(report, trends=dataclasses.replace(report.trends, charts=()))
    out = tmp_path / "elsewhere" / "reports"  # a folder without any runbooks/
    html_path, md_path = write_report(report, out)
    parser = _Links()
    parser.feed(html_path.read_text())
    links = {"html": parser.href, "markdown": _markdown_links(md_path.read_text())}
    rules = {i.rule for i in report.incidents.incidents}
    assert len(rules) >= 3
    for kind, found in links.items():
        assert len(found) == len(report.incidents.incidents), kind
        for link in found:
            target = _local_file(link, out)
            assert target.is_file(), (kind, link)
            assert target.parent == REPO / "runbooks", (kind, link)
        assert {_local_file(link, out).stem for link in found} == rules, kind


@pytest.mark.parametrize(
    ("environ", "base"),
    [
        (
            {"SAFEWATCH_REPORT__RUNBOOK_BASE_URL": "https://git.example.com/sw/blob/main/runbooks"},
            "https://git.example.com/sw/blob/main/runbooks/",
        ),
        (
            {
                "SAFEWATCH_REPORT__RUNBOOK_BASE_URL": "https://wiki.example.com/rb/",
                "SAFEWATCH_ALERTING__RUNBOOK_BASE_URL": "https://git.example.com/sw/blob/main/",
            },
            "https://wiki.example.com/rb/",
        ),
        (  # the alerts' own links when only they are configured
            {"SAFEWATCH_ALERTING__RUNBOOK_BASE_URL": "https://git.example.com/sw/blob/main/"},
            "https://git.example.com/sw/blob/main/runbooks/",
        ),
    ],
)
def test_runbook_links_use_the_configured_base_url(world, environ, base):
    engine, *_ = world
    settings = Settings.load(environ=environ)
    report = collect_weekly(engine, settings, WEEK, now=NOW)
    # Without the charts (slow to draw, and nothing to do with links).
    report = dataclasses.replace(report, trends=dataclasses.replace(report.trends, charts=()))
    parser = _Links()
    parser.feed(render_html(report))
    expected = sorted(f"{base}{i.rule}.md" for i in report.incidents.incidents)
    assert f"{base}PIILeakInOutput.md" in expected
    assert sorted(parser.href) == expected
    assert sorted(_markdown_links(render_markdown(report, "charts"))) == expected


def test_a_local_runbook_folder_is_linked_as_its_file_url(world, tmp_path, monkeypatch):
    engine, *_ = world
    (tmp_path / "ops" / "runbooks").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(environ={"SAFEWATCH_REPORT__RUNBOOK_BASE_URL": "ops/runbooks"})
    report = collect_weekly(engine, settings, WEEK, now=NOW)
    assert {i.runbook for i in report.incidents.incidents} == {
        f"file://{tmp_path}/ops/runbooks/{i.rule}.md" for i in report.incidents.incidents
    }


# ---------------------------------------------------------------- segments
def test_top_segments_rank_by_wilson_lower_bound_and_hide_small_ones(world):
    _, settings, rows, _, report, html, markdown = world
    k = settings.privacy.min_distinct_users
    users: dict = defaultdict(set)
    for (w, seg), (_, ids) in rows.items():
        if WEEK.start <= w < WEEK.end:
            users[seg] |= ids
    expected = []
    for seg in users:
        t = _totals(rows, WEEK, lambda s, seg=seg: s == seg)
        if t["events"] >= settings.report.min_events and len(users[seg]) >= k:
            expected.append((_wilson(t["violations"], t["events"])[0], seg, t))
    expected.sort(key=lambda e: -e[0])
    risk = report.risk
    assert [r.values for r in risk.rows] == [seg for _, seg, _ in expected]
    for row, (low, seg, t) in zip(risk.rows, expected, strict=True):
        assert row.events == t["events"]
        assert row.violation.numerator == t["violations"]
        assert row.violation.lower == pytest.approx(low, abs=1e-12)
        assert row.refusal.numerator == t["refusals"]
        assert abs(row.distinct_users - len(users[seg])) <= 0.03 * len(users[seg])
        assert f'data-segment="{" / ".join(seg)}"' in html
    # ("api", "a-1", "fr-FR") has the highest harmful output rate but 8 users: never shown.
    # With the 5 users of ("chat", "m-2", "fr-FR") they are 13 < k: the smallest shown
    # segment, ("search", "s-1", "ja-JP"), the only low-volume one, is held back with them.
    small, extra = _held_back(rows, k)
    assert small == {("api", "a-1", "fr-FR"), ("chat", "m-2", "fr-FR")}
    assert extra == {("search", "s-1", "ja-JP")}
    assert (risk.suppressed, risk.complementary, risk.low_volume) == (2, 1, 0)
    assert risk.segments == len(SEGMENTS)
    for seg in small | extra:
        assert " / ".join(seg) not in html and " / ".join(seg) not in markdown
    # A segment whose every window has fewer than k users but k or more over the week is shown.
    assert ("api", "a-1", "en-US") in [r.values for r in risk.rows]
    assert "2 segments with fewer than 20 distinct users are not shown individually" in html
    assert "1 larger segment is held back too" in html


# ---------------------------------------------------------------- incidents
def test_incidents_of_the_week_with_time_to_resolve_and_acknowledge(world):
    _, _, _, _, report, html, markdown = world
    inc = report.incidents
    got = {(i.rule, i.fired_at): i for i in inc.incidents}
    assert set(got) == {
        ("HarmfulOutputRateHigh", D + timedelta(days=1, hours=10)),
        ("HarmfulOutputRateHigh", D + timedelta(days=3, hours=15)),
        ("PIILeakInOutput", D + timedelta(days=2, hours=10)),
        ("RefusalSpike", D + timedelta(days=5, hours=10)),
        ("JailbreakSuccess", D - timedelta(hours=9)),
    }
    first = got["HarmfulOutputRateHigh", D + timedelta(days=1, hours=10)]
    assert first.mttr_seconds == 2.5 * 3600
    assert first.mtta_seconds == 12 * 60
    assert first.within_target is True
    assert first.segment == "chat / m-2 / de-DE"
    assert first.runbook == (REPO / "runbooks" / "HarmfulOutputRateHigh.md").as_uri()
    second = got["HarmfulOutputRateHigh", D + timedelta(days=3, hours=15)]
    assert (second.mttr_seconds, second.mtta_seconds) == (3600, 40 * 60)
    sev1 = got["PIILeakInOutput", D + timedelta(days=2, hours=10)]
    assert sev1.mttr_seconds == 6 * 3600 and sev1.within_target is False
    assert sev1.mtta_seconds is None
    open_alert = got["RefusalSpike", D + timedelta(days=5, hours=10)]
    assert open_alert.resolved_at is None and open_alert.within_target is False  # 50 h > 24 h
    earlier = got["JailbreakSuccess", D - timedelta(hours=9)]
    assert earlier.fired_before_week and earlier.mttr_seconds == 19 * 3600
    assert earlier.within_target is None  # sev3: no target
    assert inc.sev1 == 1 and inc.still_firing == 1
    assert dict(inc.by_severity) == {"sev1": 1, "sev2": 3, "sev3": 1}
    assert inc.median_mttr_seconds == float(np.median([2.5 * 3600, 3600, 6 * 3600, 19 * 3600]))
    assert "not acknowledged" in html and "still firing" in html
    pii = (REPO / "runbooks" / "PIILeakInOutput.md").as_uri()
    assert "12 min" in markdown and f"[PIILeakInOutput]({pii})" in markdown


# ---------------------------------------------------------------- changes
def test_new_model_versions_are_compared_with_the_previous_one_on_their_surface(world):
    _, settings, rows, _, report, html, _ = world
    ch = report.changes
    # s-1 is new too, but its only segment is held back (see the risk test): not listed.
    small, extra = _held_back(rows, settings.privacy.min_distinct_users)
    assert extra == {("search", "s-1", "ja-JP")}
    assert {(v.dimension, v.value) for v in ch.new_versions} == {("model_version", "m-2")}
    m2 = next(v for v in ch.new_versions if v.value == "m-2")
    assert m2.first_seen == WEEK.start + timedelta(hours=10) and m2.surfaces == ("chat",)
    by_version = {(c.value, c.surface): c for c in ch.comparisons}
    assert set(by_version) == {("m-2", "chat")}
    c = by_version["m-2", "chat"]
    assert c.previous_values == ("m-1",) and not c.suppressed
    # Over shown segments only: the 5 users of chat / m-2 / fr-FR are not in the sums.
    new = _totals(rows, WEEK, lambda s: s[:2] == ("chat", "m-2") and s not in small)
    old = _totals(rows, WEEK, lambda s: s[:2] == ("chat", "m-1") and s not in small)
    p_values = []
    for r in c.rates:
        spec = rate(r.rate_id)
        a, n1 = new[spec.numerator], new[spec.denominator]
        b, n2 = old[spec.numerator], old[spec.denominator]
        assert (r.new.numerator, r.new.denominator) == (a, n1)
        assert (r.previous.numerator, r.previous.denominator) == (b, n2)
        assert min(n1, n2) >= 30  # every test has enough trials in this data
        expected = _chi2_p(a, n1, b, n2)
        assert r.p_value == pytest.approx(expected, rel=1e-6, abs=1e-300)
        p_values.append(expected)
    assert [r.rate_id for r in c.rates] == list(CHANGE_RATES)
    q_values = stats.false_discovery_control(p_values, method="bh")
    for r, q in zip(c.rates, q_values, strict=True):
        assert r.q_value == pytest.approx(q, rel=1e-6)
    # Outcome drift: de-DE has two ok windows with PSI > 0.1 of four; fr-FR is hidden.
    (flag,) = c.drift
    assert flag.segment == "chat / m-2 / de-DE"
    assert (flag.windows_tested, flag.windows_flagged) == (4, 2)
    assert flag.max_psi == 0.32 and flag.max_psi_window == D + timedelta(hours=15)
    assert c.drift_suppressed == 1
    versions = {v.value: v for v in report.versions.seen}
    assert versions["m-1"].is_new is False and versions["a-1"].is_new is False
    assert versions["m-1"].first_seen == PREVIOUS.start + timedelta(hours=10)
    assert 'data-version="model_version=m-2"' in html


def _version_rows(rng, users: int, events: int, p: float, extra=None):
    """One segment's users: (user ids, events per user, violations per user, bucket per
    user), `events` each flagged with probability `p`; `extra` = (events, violations) of
    one more, prolific user, in bucket 0.
    """
    ids = [f"u{i}" for i in range(users)]
    per_user = np.full(users, events)
    flagged = rng.binomial(per_user, p)
    bucket = np.arange(users) % B
    if extra is not None:
        ids.append("prolific")
        per_user = np.append(per_user, extra[0])
        flagged = np.append(flagged, extra[1])
        bucket = np.append(bucket, 0)
    return ids, per_user, flagged, bucket


def _version_aggregate(w: datetime, seg, rows) -> tuple[dict, np.ndarray]:
    """The segment_window_agg row of one segment's users in window `w`, with their
    violations and events per bucket (as the stream job stores them), and those sums."""
    ids, per_user, flagged, bucket = rows
    num, den = np.zeros(B, dtype=np.int64), np.zeros(B, dtype=np.int64)
    np.add.at(num, bucket, flagged)
    np.add.at(den, bucket, per_user)
    c = dict.fromkeys(counter_ids(), 0)
    c["events"] = c["events_seen"] = c["telemetry_complete"] = int(den.sum())
    c["violations"] = int(num.sum())
    c["unflagged_events"] = int(den.sum() - num.sum())
    key = dict.fromkeys(SEGMENT_DIMENSIONS, "*")
    key.update(zip(DIMS, seg, strict=True))
    row = {
        "window_start": w,
        "window_end": w + timedelta(minutes=5),
        "dimension_set": ",".join(DIMS),
        **key,
        **c,
        "users_sketch": _sketch(f"{seg}/{u}" for u in ids),
        "bucket_sums": {"events": den, "violations": num, "unflagged_events": den - num},
    }
    return row, np.stack([num, den])


def test_new_versions_are_tested_with_each_sides_design_effect(tmp_path):
    """chat: m-2 replaces m-1, and one prolific user of m-2 makes its violation rate rise;
    search: s-2 replaces s-1, whose prolific user made the old rate high; api: a-2 replaces
    a-1 with a rise of the same size spread over its users. The plain test calls all three
    significant; the report's test, each side's variance widened by its design effect from
    the bucket sums, only the last.
    """
    rng = np.random.default_rng(3)
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    migrate(engine)
    before, during = PREVIOUS.start + timedelta(days=1, hours=10), WEEK.start + timedelta(hours=10)
    segments = {
        (before, ("chat", "m-1", "de-DE")): _version_rows(rng, 640, 10, 0.01),
        (before, ("api", "a-1", "de-DE")): _version_rows(rng, 640, 10, 0.01),
        (during, ("chat", "m-1", "de-DE")): _version_rows(rng, 640, 10, 0.01),
        (during, ("api", "a-1", "de-DE")): _version_rows(rng, 640, 10, 0.01),
        (during, ("chat", "m-2", "de-DE")): _version_rows(rng, 640, 10, 0.01, (400, 80)),
        (during, ("api", "a-2", "de-DE")): _version_rows(rng, 680, 10, 0.021),
        (before, ("search", "s-1", "de-DE")): _version_rows(rng, 640, 10, 0.01),
        (during, ("search", "s-1", "de-DE")): _version_rows(rng, 640, 10, 0.01, (400, 80)),
        (during, ("search", "s-2", "de-DE")): _version_rows(rng, 640, 10, 0.01),
    }
    sums = {}
    sink = WarehouseSink(engine)
    for batch, w in enumerate((before, during)):
        aggs = []
        for (ws, seg), rows in segments.items():
            if ws == w:
                row, sums[seg, ws] = _version_aggregate(w, seg, rows)
                aggs.append(row)
        n = sum(a["events"] for a in aggs)
        sink.commit(
            BatchResult(
                query_id="q", batch_id=batch, topic="t", started_at=w + timedelta(minutes=6),
                input_rows=n, late_rows=0, aggregated_rows=n, watermark_before=None,
                watermark_after=None, offsets=[OffsetRange("t", 0, batch, batch, 1)],
                aggregates=aggs,
            ),
            now=w + timedelta(minutes=7),
        )  # fmt: skip
    report = collect_weekly(engine, Settings.load(environ={}), WEEK, now=NOW)

    by_version = {(c.value, c.surface): c for c in report.changes.comparisons}
    assert set(by_version) == {("m-2", "chat"), ("a-2", "api"), ("s-2", "search")}
    verdicts = {}
    for new, old, surface in (("m-2", "m-1", "chat"), ("a-2", "a-1", "api"),
                              ("s-2", "s-1", "search")):  # fmt: skip
        c = by_version[new, surface]
        assert c.previous_values == (old,) and not c.suppressed
        (r,) = (r for r in c.rates if r.rate_id == "violation_rate")
        (a, b), (n1, n2) = zip(
            sums[(surface, new, "de-DE"), during].sum(axis=1),
            sums[(surface, old, "de-DE"), during].sum(axis=1),
            strict=True,
        )
        assert (r.new.numerator, r.new.denominator) == (a, n1)
        assert (r.previous.numerator, r.previous.denominator) == (b, n2)
        d1 = _design_effect(*sums[(surface, new, "de-DE"), during])
        d2 = _design_effect(*sums[(surface, old, "de-DE"), during])
        assert (r.new.design_effect, r.previous.design_effect) == (
            pytest.approx(d1, rel=1e-9),
            pytest.approx(d2, rel=1e-9),
        )
        assert r.p_value == pytest.approx(_robust_p(a, n1, d1, b, n2, d2), rel=1e-9)
        assert _chi2_p(a, n1, b, n2) < 0.001  # the plain test: significant either way
        verdicts[new] = (d1, d2, r.p_value, r.q_value)
    # One user, of the new version or of the old one: a large design effect on that side
    # and no significant change, before or after the Benjamini-Hochberg correction; many
    # users: significant after it too.
    d1, d2, p, q = verdicts["m-2"]
    assert d1 > 10 and d2 < 3 and p > 0.05 and q > 0.05
    d1, d2, p, q = verdicts["s-2"]
    assert d1 < 3 and d2 > 10 and p > 0.05 and q > 0.05
    d1, d2, p, q = verdicts["a-2"]
    assert d1 < 3 and d2 < 3 and p < 0.001 and q < 0.05
    # The BH correction runs over the widened p-values of every comparison.
    tested = [r for c in report.changes.comparisons for r in c.rates if r.p_value is not None]
    expected = stats.false_discovery_control([r.p_value for r in tested], method="bh")
    assert [r.q_value for r in tested] == pytest.approx(expected, rel=1e-9)

    # The KPI's week-over-week change: both weeks widened by their own design effects.
    this_week = sum(v for (_, ws), v in sums.items() if ws == during)
    last_week = sum(v for (_, ws), v in sums.items() if ws == before)
    kpi = report.kpi("violation_rate")
    assert (kpi.current.numerator, kpi.current.denominator) == tuple(this_week.sum(axis=1))
    assert (kpi.previous.numerator, kpi.previous.denominator) == tuple(last_week.sum(axis=1))
    expected = _robust_p(
        *this_week.sum(axis=1), _design_effect(*this_week),
        *last_week.sum(axis=1), _design_effect(*last_week),
    )  # fmt: skip
    assert kpi.change.p_value == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- data quality
def test_data_quality_sums_the_ledger_of_the_week(world):
    _, _, rows, ledger, report, html, _ = world
    q = report.data_quality
    week = [info for w, info in ledger.items() if WEEK.start <= w < WEEK.end]
    assert q.batches == len(week) == 14
    reasons: dict = defaultdict(int)
    for info in week:
        for reason, n in info["rejected_by_reason"].items():
            reasons[reason] += n
    assert dict(q.rejected_by_reason) == dict(reasons)
    assert q.rejected_rows == sum(reasons.values())
    assert q.late_rows == sum(i["late_rows"] for i in week)
    assert q.duplicate_rows == sum(i["duplicate_rows"] for i in week)
    assert q.dlq_rows == sum(i["dlq_rows"] for i in week)
    failed = sum(1 for i in week if not i["quality_success"])
    assert q.quality_failed_batches == failed > 0
    (expectation,) = q.failing_expectations
    assert (expectation.column, expectation.batches) == ("model.version", failed)
    assert expectation.unexpected == 7 * failed
    current = _totals(rows, WEEK)
    assert q.telemetry.current.numerator == current["telemetry_complete"]
    assert q.redaction.current.numerator == current["redaction_failures"]
    assert f'data-metric="late_rows" data-value="{q.late_rows}"' in html


# ---------------------------------------------------------------- empty states and files
def test_a_week_without_data_renders_explicit_empty_states(world):
    engine, settings, *_ = world
    report = collect_weekly(engine, settings, IsoWeek(2026, 40), now=NOW)
    html, markdown = render_html(report), render_markdown(report)
    assert not report.has_data and report.trends.charts == ()
    for text in ("No events in this week", "No alerts fired this week."):
        assert text in html and text in markdown
    assert all(k.status == "no_data" for k in report.kpis)
    assert "<img" not in html


def test_an_empty_warehouse_gives_a_report_and_an_unmigrated_one_a_clear_error(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SafewatchError, match="safewatch warehouse migrate"):
        latest_week(engine)
    migrate(engine)
    assert latest_week(engine) is None
    report = collect_weekly(engine, Settings.load(environ={}), WEEK, now=NOW)
    assert report.events == 0 and report.risk.rows == () and report.changes.new_versions == ()
    assert report.changes.history_start is None and report.data_quality.batches == 0
    html, markdown = render_html(report), render_markdown(report)
    for text in (
        "No events in this week",
        "No alerts fired this week.",
        "No micro-batch was committed this week.",
        "No new model, prompt or policy version appeared this week.",
    ):
        assert text in html and text in markdown


def test_latest_week_is_the_week_of_the_newest_window(world):
    engine, *_ = world
    assert latest_week(engine) == WEEK


def test_write_report_puts_html_markdown_and_the_charts_it_references(world, tmp_path):
    _, _, _, _, report, html, _ = world
    html_path, md_path = write_report(report, tmp_path / "out")
    assert html_path.name == "safety-posture-2026-W47.html"
    assert md_path.name == "safety-posture-2026-W47.md"
    assert html_path.read_text() == html
    markdown = md_path.read_text()
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    assert len(referenced) == len(report.trends.charts)
    for name in referenced:
        data = (md_path.parent / name).read_bytes()
        assert _png_size(data) == (WIDTH_PX, HEIGHT_PX)
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_changes_show_the_versions_worth_reading_first_and_summarise_the_rest():
    from pipelines.metrics.catalog import rate_value
    from pipelines.report.model import DriftFlag, RateComparison, VersionComparison
    from pipelines.report.wording import VERSIONS_IN_FULL, ranked_comparisons

    def comparison(name: str, q: float | None, psis: list[float]) -> VersionComparison:
        value = rate_value("violation_rate", {"violations": 1, "events": 10})
        rates = (RateComparison("violation_rate", "Harmful", value, value, True, q, q),)
        drift = tuple(
            DriftFlag(f"s{i}", 10, 2, psi, datetime(2026, 11, 23, tzinfo=UTC), "trailing")
            for i, psi in enumerate(psis)
        )
        return VersionComparison("model_version", name, "chat", (), False, rates, drift, 0)

    plain = [comparison(f"plain-{i}", 0.5, []) for i in range(3)]
    shifted = comparison("shifted", 0.2, [0.3, 0.9])
    significant = comparison("significant", 0.001, [0.15])
    mild = comparison("mild", None, [0.2])
    shown, rest = ranked_comparisons([*plain, mild, shifted, significant])
    assert [c.value for c in shown] == ["significant", "shifted", "mild", "plain-0"]
    assert [c.value for c in rest] == ["plain-1", "plain-2"]
    assert len(shown) == VERSIONS_IN_FULL
