"""The analyst views on SQLite against sums this test adds up itself (PostgreSQL: integration)."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from pipelines.alerting.engine import segment_key
from pipelines.metrics.catalog import RATES
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import ANALYST_OBJECTS, Tables, as_utc
from schemas.warehouse.migrations import m0005_analyst_views, m0007_analyst_barriers
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
    assert m0005_analyst_views.RATES == tuple((r.id, r.numerator, r.denominator) for r in RATES)


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
    tests/integration/test_analyst_leaks.py checks the catalog).
    """
    views = tuple(n for n in ANALYST_OBJECTS if n.startswith("v_"))
    assert m0007_analyst_barriers.VIEWS == views
