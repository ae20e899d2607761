"""The analyst views on SQLite against sums this test adds up itself (PostgreSQL: integration)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from pipelines.metrics.catalog import RATES
from pipelines.segments import SEGMENT_DIMENSIONS, segment_key
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import (
    applied_versions,
    available_migrations,
    migrate,
    schema_migrations,
)
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import ANALYST_OBJECTS, Tables, as_utc
from schemas.warehouse.migrations import (
    m0005_analyst_views,
    m0007_analyst_barriers,
    m0011_successful_injection_rate,
    m0014_suppressed_views,
)
from tests.analyst_data import DIMENSION_SET, EVERY, SEGMENTS, T0, WINDOWS, K, Truth, fill


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, Truth]:
    url = f"sqlite:///{tmp_path_factory.mktemp('analyst') / 'wh.db'}"
    engine = make_engine(url)
    migrate(engine)
    return engine, fill(WarehouseSink(engine))


def view_rows(engine: Engine, view: str, period: str) -> dict[tuple[date, str, str], Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT * FROM {view} WHERE dimension_set = :d"), {"d": DIMENSION_SET}
        ).mappings()
        out = {}
        for r in rows:
            start = r[period]
            start = date.fromisoformat(start) if isinstance(start, str) else start
            out[(start, r["product_surface"], r["locale"])] = dict(r)
    return out


def assert_rollup_equals(actual: dict[Any, Any], expected: dict[Any, Any]) -> None:
    assert set(actual) == set(expected)
    for key, want in expected.items():
        got = actual[key]
        for column, value in want.items():
            if value is None:
                assert got[column] is None, (key, column)
            elif isinstance(value, float):
                assert math.isclose(float(got[column]), value, rel_tol=1e-12), (key, column)
            elif column == "distinct_users_at_least":
                # HLL estimate of a known set: exact at these small counts (list mode).
                assert got[column] == value, (key, column)
            else:
                assert got[column] == value, (key, column)


@pytest.mark.parametrize(("view", "period", "grain"), [
    ("v_segment_daily", "day", "day"),
    ("v_segment_weekly", "week_start", "week"),
])  # fmt: skip
def test_rollups_are_exact_sums_with_small_segments_suppressed(filled, view, period, grain):
    engine, truth = filled
    expected = truth.rollup(grain)
    actual = view_rows(engine, view, period)
    assert_rollup_equals(actual, expected)
    # The data crosses days and weeks, and the small segment is gone.
    assert len({k[0] for k in expected}) >= (8 if grain == "day" else 3)
    assert not any(k[1:] == ("agent", "fr-FR") for k in actual)
    if grain == "week":
        assert all(k[0] == date.fromisocalendar(*k[0].isocalendar()[:2], 1) for k in actual)


def test_raising_k_in_analyst_settings_suppresses_more(filled):
    engine, truth = filled
    sink = WarehouseSink(engine)
    try:
        sink.set_min_distinct_users(50)  # between the two large segments' 40 and 60
        segments = {k[1:] for k in view_rows(engine, "v_segment_daily", "day")}
        assert segments == {s for s, users in SEGMENTS.items() if users >= 50}
    finally:
        sink.set_min_distinct_users(K)


@pytest.mark.parametrize("table", ["segment_window_drift", "segment_window_rate_tests"])
def test_drift_views_hide_rows_of_segments_below_k(filled, table):
    engine, truth = filled
    with engine.connect() as conn:
        base = conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
        visible = conn.execute(text(f"SELECT * FROM v_{table}")).mappings().all()
    small = {s for s, users in SEGMENTS.items() if users < K}
    expected = [dict(r) for r in base if (r["product_surface"], r["locale"]) not in small]
    assert len(base) > len(expected) > 0
    assert sorted(map(repr, expected)) == sorted(repr(dict(r)) for r in visible)


def test_every_analyst_object_exists_and_the_frozen_rate_list_is_the_catalog(filled):
    engine, _ = filled
    with engine.connect() as conn:
        for name in ANALYST_OBJECTS:
            conn.execute(text(f"SELECT * FROM {name} LIMIT 1")).all()
    # The views hold the rates of the latest migration that lists them: a catalog change
    # needs a new migration (its frozen list), never an edit of an old one.
    latest = [m for m in available_migrations() if hasattr(m.module, "RATES")][-1]
    assert latest.module.RATES == tuple((r.id, r.numerator, r.denominator) for r in RATES)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize(("grain", "period"), [("day", "day"), ("week", "week_start")])
def test_migration_11_builds_the_rollups_as_migration_5_with_its_rates(dialect, grain, period):
    """m0011 adds a rate, nothing else: with m0005's rates it builds m0005's very query."""
    rollup = m0011_successful_injection_rate.rollup
    assert rollup(dialect, grain, period, m0005_analyst_views.RATES) == (
        m0005_analyst_views._rollup(dialect, grain, period)
    )
    added = set(m0011_successful_injection_rate.RATES) - set(m0005_analyst_views.RATES)
    assert added == {("successful_injection_rate", "injection_successes", "events")}


# ---------------------------------------------------------------- successful_injection_rate
# Rows of their own dimension set, so they add no row to the roll-ups the tests above compare
# (PostgreSQL: tests/integration/test_warehouse_roles.py writes them into that warehouse).
INJECTION_SET = "product_surface,model_id,locale"
INJECTION_MODEL = "atlas-l-2026.10.2"
_D1 = datetime(2026, 12, 1, tzinfo=UTC)
INJECTION_ROWS = (  # (window_start, product_surface, locale, events, attempts, successes, users)
    # 4 successes in 50 requests on one UTC day (the last window starts at 23:55): 0.08
    # per event, while per attempt (4 of 5) it says little.
    (_D1 + timedelta(hours=9), "search", "ja-JP", 30, 3, 3, 25),
    (_D1 + timedelta(hours=23, minutes=55), "search", "ja-JP", 20, 2, 1, 22),
    (_D1 + timedelta(days=1), "search", "ja-JP", 40, 0, 0, 30),  # the next day: 0
    (_D1 + timedelta(days=2), "search", "ja-JP", 60, 9, 2, 10),  # below k: shown with
    (_D1 + timedelta(days=2, hours=5), "search", "ja-JP", 35, 4, 1, 21),  # this one
    (_D1 + timedelta(hours=10), "search", "ko-KR", 0, 0, 0, 21),  # no events: NULL
    (_D1 + timedelta(hours=11), "assistant", "it-IT", 10, 3, 2, 5),  # below k: hidden
)


def insert_injection_rows(engine: Engine) -> None:
    agg = Tables(engine).agg
    now = T0 + timedelta(days=30)
    rows = [
        {
            "window_start": start,
            "window_end": start + timedelta(minutes=5),
            "dimension_set": INJECTION_SET,
            **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
            "product_surface": surface,
            "model_id": INJECTION_MODEL,
            "locale": locale,
            "events": events,
            "unflagged_events": events,
            "events_seen": events + 5,
            "telemetry_complete": events + 5,
            "injection_attempts": attempts,
            "injection_successes": successes,
            "distinct_users": users,
            "first_batch_id": 0,
            "last_batch_id": 0,
            "updated_at": now,
        }
        for start, surface, locale, events, attempts, successes, users in INJECTION_ROWS
    ]
    with engine.begin() as conn:
        conn.execute(agg.insert(), rows)


def expected_successful_injection_rates() -> dict[tuple[date, str, str], float | None]:
    """Per UTC day x segment shown (some window with >= K users): successes / events."""
    groups: dict[tuple[date, str, str], list[tuple[int, int, int]]] = {}
    for start, surface, locale, events, _, successes, users in INJECTION_ROWS:
        groups.setdefault((start.date(), surface, locale), []).append((events, successes, users))
    out = {}
    for key, rows in groups.items():
        if max(users for *_, users in rows) < K:
            continue
        events = sum(e for e, _, _ in rows)
        out[key] = sum(s for _, s, _ in rows) / events if events else None
    return out


def successful_injection_rates(engine: Engine) -> dict[tuple[date, str, str], float | None]:
    """v_segment_daily's successful_injection_rate per day x segment of INJECTION_SET."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT day, product_surface, locale, model_id, successful_injection_rate "
                "FROM v_segment_daily WHERE dimension_set = :d"
            ),
            {"d": INJECTION_SET},
        ).all()
    out = {}
    for day, surface, locale, model, value in rows:
        assert model == INJECTION_MODEL
        key = (date.fromisoformat(day) if isinstance(day, str) else day, surface, locale)
        out[key] = None if value is None else float(value)
    return out


def assert_successful_injection_rates(engine: Engine) -> None:
    actual, expected = successful_injection_rates(engine), expected_successful_injection_rates()
    assert set(actual) == set(expected)
    for key, want in expected.items():
        if want is None:
            assert actual[key] is None, key
        else:
            assert actual[key] is not None and math.isclose(actual[key], want, rel_tol=1e-12), key
    # The rows above cover the cases: 4 / 50 on a day, 0, NULL, a day shown by one window.
    assert expected[(_D1.date(), "search", "ja-JP")] == 4 / 50
    assert expected[(_D1.date() + timedelta(days=1), "search", "ja-JP")] == 0
    assert expected[(_D1.date(), "search", "ko-KR")] is None
    assert expected[(_D1.date() + timedelta(days=2), "search", "ja-JP")] == 3 / 95
    assert not any(k[1] == "assistant" for k in actual)


def _migrate_to(engine: Engine, version: int) -> None:
    """Apply the migrations up to `version` and record them, as that release left the file."""
    applied_versions(engine)  # creates schema_migrations
    with engine.begin() as conn:
        for m in available_migrations():
            if m.version <= version:
                m.module.upgrade(conn)
                conn.execute(
                    schema_migrations.insert().values(
                        version=m.version, description=m.description, applied_at=T0
                    )
                )


@pytest.mark.parametrize("before", [None, 10])
def test_successful_injection_rate_is_successes_over_events_per_day_and_segment(tmp_path, before):
    """A new warehouse, and one migrated to 10 with its rows written before migration 11."""
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    if before is None:
        migrate(engine)
    else:
        _migrate_to(engine, before)
    insert_injection_rows(engine)
    if before is not None:
        with engine.connect() as conn:
            columns = conn.execute(text("SELECT * FROM v_segment_daily LIMIT 0")).keys()
        assert "successful_injection_rate" not in columns
        assert migrate(engine) == [m.version for m in available_migrations() if m.version > 10]
    assert_successful_injection_rates(engine)
    with engine.connect() as conn:
        day = conn.execute(
            text(
                "SELECT injection_success_rate, successful_injection_rate FROM v_segment_daily "
                "WHERE dimension_set = :d AND day = :day AND locale = 'ja-JP'"
            ),
            {"d": INJECTION_SET, "day": _D1.date().isoformat()},
        ).one()
        assert (day[0], day[1]) == (4 / 5, 4 / 50)
        week = conn.execute(
            text(
                "SELECT events, injection_successes, successful_injection_rate "
                "FROM v_segment_weekly WHERE dimension_set = :d AND locale = 'ja-JP'"
            ),
            {"d": INJECTION_SET},
        ).one()
        assert tuple(week) == (185, 7, 7 / 185)  # one ISO week, every window of the segment
        # Migration 11 changed the column list only: the catalog's rates, in its order.
        columns = list(conn.execute(text("SELECT * FROM v_segment_weekly LIMIT 0")).keys())
    assert columns[-len(RATES) :] == [r.id for r in RATES]


def test_every_table_and_view_is_documented(filled):
    engine, _ = filled
    from pathlib import Path

    from sqlalchemy import inspect

    doc = (Path(__file__).resolve().parents[2] / "docs" / "warehouse.md").read_text()
    names = set(inspect(engine).get_table_names()) | set(inspect(engine).get_view_names())
    undocumented = sorted(n for n in names if f"`{n}`" not in doc)
    assert undocumented == []
    roles_section = doc[doc.index("## Roles") :]
    assert all(f"`{name}`" in roles_section for name in ANALYST_OBJECTS)


# ---------------------------------------------------------------- alert views
# Alert segments as the engine stores them (JSON [[dimension, value], ...]), at every
# granularity a rule can group by: full, coarse, the whole window, an unknown dimension.
ALERT_SEGMENTS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("product_surface", "chat"), ("locale", "de-DE")),
    (("product_surface", "agent"), ("locale", "fr-FR")),
    (("product_surface", "chat"),),
    (("product_surface", "agent"),),
    (("locale", "fr-FR"),),
    (),
    (("tenant", "acme"),),
)
ALERT_WINDOWS = (T0, T0 + EVERY, T0 + timedelta(minutes=1))  # the last one has no data


def fill_alerts(engine: Engine) -> None:
    """A firing transition per segment and window, and a state per segment."""
    tables = Tables(engine)
    now = T0 + timedelta(days=30)
    history = [
        {
            "rule": "HarmfulOutputRateHigh",
            "segment": segment_key(seg),
            "window_start": window,
            "from_status": "pending",
            "to_status": "firing",
            "severity": "sev2",
            "metric": "violation_rate",
            "value": 0.5,
            "numerator": 22,
            "denominator": 44,
            "summary": f"harmful output 22/44 in {seg}",
            "description": "d",
            "recorded_at": now,
        }
        for seg in ALERT_SEGMENTS
        for window in ALERT_WINDOWS
    ]
    states = [
        {
            "rule": "HarmfulOutputRateHigh",
            "segment": segment_key(seg),
            "status": "firing",
            "true_windows": 3,
            "false_windows": 0,
            "last_window": window,
            "updated_at": now,
        }
        for seg, window in zip(ALERT_SEGMENTS, ALERT_WINDOWS * 3, strict=False)
    ]
    with engine.begin() as conn:
        conn.execute(tables.alert_history.insert(), history)
        conn.execute(tables.alert_state.insert(), states)


def alert_visible(segment: tuple[tuple[str, str], ...], window: datetime) -> bool:
    """Ground truth: some stored segment of the window with >= K users lies inside it."""
    if window not in {T0 + w * EVERY for w in range(WINDOWS)}:
        return False
    return any(
        users >= K and all(dict(zip(("product_surface", "locale"), s, strict=True)).get(d) == v
                           for d, v in segment)
        for s, users in SEGMENTS.items()
    )  # fmt: skip


def expected_alert_rows(view: str) -> set[tuple[str, datetime]]:
    if view == "v_alert_history":
        pairs = [(s, w) for s in ALERT_SEGMENTS for w in ALERT_WINDOWS]
    else:
        pairs = list(zip(ALERT_SEGMENTS, ALERT_WINDOWS * 3, strict=False))
    return {(segment_key(s), w) for s, w in pairs if alert_visible(s, w)}


def alert_rows(engine: Engine, view: str) -> set[tuple[str, datetime]]:
    column = "window_start" if view == "v_alert_history" else "last_window"
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT segment, {column} FROM {view}")).all()
    return {(str(s), _utc(w)) for s, w in rows}


def _utc(value: datetime | str) -> datetime:
    """A raw SQLite read gives the stored text; PostgreSQL an aware datetime."""
    out = as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)
    assert out is not None
    return out


@pytest.mark.parametrize("view", ["v_alert_history", "v_alert_state"])
def test_alert_views_hide_segments_below_k(tmp_path, view):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    migrate(engine)
    fill(WarehouseSink(engine), drift=False)
    fill_alerts(engine)
    expected = expected_alert_rows(view)
    # The ground truth keeps some rows and drops others, the small segment's among them.
    assert 0 < len(expected) < len(ALERT_SEGMENTS) * (3 if view == "v_alert_history" else 1)
    assert alert_rows(engine, view) == expected
    assert not any("fr-FR" in s or "agent" in s for s, _ in alert_rows(engine, view))


def test_every_analyst_view_is_made_a_security_barrier_by_a_migration():
    """A new analyst view needs a migration that makes it a barrier (PostgreSQL test:
    tests/integration/test_analyst_leaks.py checks the catalog): migration 7 made those of
    its time, later ones create theirs as barriers.
    """
    views = [n for n in ANALYST_OBJECTS if n.startswith("v_")]
    made = [*m0007_analyst_barriers.VIEWS, *m0014_suppressed_views.VIEWS]
    assert sorted(made) == sorted(views)
