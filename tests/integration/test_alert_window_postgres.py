"""What the alert rules read of a window (pipelines.alerting.engine.load_window) is the same
on PostgreSQL as on SQLite: the scenario warehouse's aggregates, rate tests and drift rows,
copied into a PostgreSQL warehouse, read back window by window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from pipelines.alerting.backtest import stored_windows
from pipelines.alerting.engine import load_window
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.tables import Tables, as_utc

pytestmark = pytest.mark.integration


def _normal(row: Any) -> dict[str, Any]:
    """Date-times as UTC instants (SQLite returns them naive), binary as bytes."""
    out = {}
    for k, v in dict(row).items():
        if isinstance(v, datetime):
            v = as_utc(v)
        elif isinstance(v, memoryview):
            v = bytes(v)
        out[k] = v
    return out


def test_load_window_reads_the_same_rows_on_postgresql(scenario_warehouse, postgres):
    wh = scenario_warehouse
    pg = make_engine(postgres.create_database("alert_windows"))
    migrate(pg)
    lite_tables, pg_tables = Tables(wh.engine), Tables(pg)
    for name in ("agg", "rate_tests", "drift"):
        with wh.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(getattr(lite_tables, name))).mappings()]
        assert rows, name
        with pg.begin() as conn:
            conn.execute(getattr(pg_tables, name).insert(), rows)
    windows = stored_windows(wh.engine, wh.dimension_set, None, None)
    assert len(windows) >= 10
    read = {"tests": 0, "drift": 0}
    for w in windows:
        with wh.engine.connect() as conn:
            lite = load_window(conn, lite_tables, w, wh.dimensions)
        with pg.connect() as conn:
            found = load_window(conn, pg_tables, w, wh.dimensions)
        assert lite.rows, w
        key = tuple(wh.dimensions)
        assert sorted((_normal(r) for r in found.rows), key=lambda r: [r[d] for d in key]) == (
            sorted((_normal(r) for r in lite.rows), key=lambda r: [r[d] for d in key])
        )
        assert {k: _normal(v) for k, v in found.tests.items()} == {
            k: _normal(v) for k, v in lite.tests.items()
        }
        assert {k: _normal(v) for k, v in found.drift.items()} == {
            k: _normal(v) for k, v in lite.drift.items()
        }
        read["tests"] += len(lite.tests)
        read["drift"] += len(lite.drift)
    assert read["tests"] > 100 and read["drift"] > 100, read
    pg.dispose()
