"""What the alert rules read of a window (pipelines.alerting.engine.load_window) is the same
on PostgreSQL as on SQLite: the scenario warehouse's aggregates, rate tests and drift rows,
copied into a PostgreSQL warehouse, read back window by window. And the job's read of many
windows at once, kept to the tests and drift rows its rules use (`windows_read`), gives
every rule the same inputs as the full read of each window, on both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from pipelines.alerting.backtest import stored_windows
from pipelines.alerting.engine import bind_rules, load_window, windows_read
from pipelines.alerting.inputs import rule_inputs
from pipelines.alerting.loader import load_rules
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.tables import Tables, as_utc
from tests.integration.scenario_warehouse import RULES_DIR

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


@pytest.fixture(scope="module")
def pg_copy(scenario_warehouse, postgres):
    """The scenario warehouse's aggregates, rate tests and drift rows, in PostgreSQL."""
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
    yield pg
    pg.dispose()


def test_load_window_reads_the_same_rows_on_postgresql(scenario_warehouse, pg_copy):
    wh = scenario_warehouse
    pg = pg_copy
    lite_tables, pg_tables = Tables(wh.engine), Tables(pg)
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


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_rules_read_of_many_windows_gives_the_inputs_of_the_full_read(
    scenario_warehouse, pg_copy, database
):
    wh = scenario_warehouse
    engine = wh.engine if database == "sqlite" else pg_copy
    tables = Tables(engine)
    rules = bind_rules(load_rules([RULES_DIR]), wh.dimensions)
    windows = stored_windows(wh.engine, wh.dimension_set, None, None)
    # More windows than one read takes, in no particular order: read in ascending order.
    shuffled = windows[1::2] + windows[::2]
    full_rows = kept_rows = 0
    with engine.connect() as conn:
        read = list(windows_read(conn, tables, shuffled, wh.dimensions, rules=rules))
        assert [w for w, _ in read] == sorted(as_utc(w) for w in windows)
        for w, kept in read:
            full = load_window(conn, tables, w, wh.dimensions)
            key = [*wh.dimensions]
            assert sorted(kept.rows, key=lambda r: [r[d] for d in key]) == sorted(
                full.rows, key=lambda r: [r[d] for d in key]
            )
            for rule in rules:
                assert rule_inputs(rule, kept) == rule_inputs(rule, full), (rule.name, w)
            full_rows += len(full.tests) + len(full.drift)
            kept_rows += len(kept.tests) + len(kept.drift)
    # The default rules read a few rates and distributions of the many stored.
    assert 0 < kept_rows < full_rows / 4, (kept_rows, full_rows)
