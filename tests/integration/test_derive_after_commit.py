"""A batch's closed windows are derived after its commit, in their own transaction.

The job commits a batch's counts, then derives the windows its watermark closed (drift
statistics, rate tests, alert rules) while Spark counts the next batch. A job that dies
between the two leaves a committed batch without its derivation; the restarted job derives
it before anything else. Either way the warehouse must end exactly as when every batch is
derived inside its commit: the reference is the session's `scenario_warehouse`, built from
the same hour of traffic.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import (
    applied_versions,
    available_migrations,
    migrate,
    schema_migrations,
)
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import Tables
from tests.integration.scenario_warehouse import JobDied, build_scenario_warehouse

NOW = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
# Columns that hold the wall-clock time of writing (or a row id), not a result.
WRITTEN_AT = {"computed_at", "updated_at", "recorded_at", "id", "committed_at", "started_at"}


def _rows(engine: Engine, table_name: str) -> list[tuple[Any, ...]]:
    table = getattr(Tables(engine), table_name)
    columns = [c for c in table.c if c.name not in WRITTEN_AT and c.name != "derived_at"]
    if table_name == "alert_state":  # its started_at is a window's start, a result
        columns = [c for c in table.c if c.name != "updated_at"]
    with engine.connect() as conn:
        return sorted((tuple(row) for row in conn.execute(select(*columns))), key=lambda r: repr(r))


def _ledger_quality(engine: Engine) -> list[tuple[int, bool | None]]:
    ledger = Tables(engine).ledger
    with engine.connect() as conn:
        rows = conn.execute(select(ledger.c.batch_id, ledger.c.quality_success)).all()
    return [(int(b), None if ok is None else bool(ok)) for b, ok in rows]


def _dying_sink(dies: set[int]) -> Any:
    """A sink whose derivation of the batches in `dies` dies once, inside its transaction
    (after the drift rows and alert states were written, before the commit)."""

    class DyingSink(WarehouseSink):
        def derive(self, query_id: str, batch_id: int, derive: Any, **kw: Any) -> None:
            def dying(conn: Any) -> None:
                derive(conn)
                if batch_id in dies:
                    dies.discard(batch_id)
                    raise JobDied(f"died deriving batch {batch_id}")

            super().derive(query_id, batch_id, dying, **kw)

    return DyingSink


@pytest.mark.parametrize(
    ("overlap", "dies"),
    [(True, {1}), (False, {2})],
    ids=["background-dies-after-batch-1", "inline-dies-after-batch-2"],
)
def test_restarted_job_derives_what_the_crash_left(
    spark, scenario_warehouse, tmp_path, overlap: bool, dies: set[int]
) -> None:
    reference = scenario_warehouse
    died = set(dies)
    built = build_scenario_warehouse(
        spark,
        tmp_path,
        now=reference.start + timedelta(hours=3),
        overlap=overlap,
        make_sink=_dying_sink(dies),
    )
    try:
        assert not dies, "the planned death did not happen"
        assert built.events == reference.events
        # Sanity: the reference has closed windows with drift rows and alert transitions.
        assert len(_rows(reference.engine, "drift")) > 1000
        assert _rows(reference.engine, "alert_history")
        for name in ("agg", "hist", "drift", "rate_tests", "alert_state", "alert_history"):
            assert _rows(built.engine, name) == _rows(reference.engine, name), name
        ledger = Tables(built.engine).ledger
        with built.engine.connect() as conn:
            rows = conn.execute(select(ledger.c.batch_id, ledger.c.derived_at)).all()
        assert sorted(b for b, _ in rows) == [0, 1, 2, 3]
        assert all(at is not None for _, at in rows)
        # The death hit a batch with windows to derive, and the restart derived them; only
        # its quality results are missing (the sample was in memory only).
        (batch,) = died
        assert reference.reports[batch].drift_windows
        quality = {b: ok for b, ok in _ledger_quality(built.engine)}
        assert quality == {
            b: None if b == batch else ok for b, ok in _ledger_quality(reference.engine)
        }
        assert all(ok is not None for b, ok in _ledger_quality(reference.engine))
    finally:
        built.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def v7_warehouse(request, tmp_path):
    """A warehouse as the release before migration 8 left it, with one committed batch."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/w.db"
    else:
        url = request.getfixturevalue("postgres").create_database(f"v7_{uuid.uuid4().hex[:12]}")
    engine = make_engine(url)
    applied_versions(engine)  # creates schema_migrations
    committed = datetime(2026, 11, 23, 10, 0, 5, tzinfo=UTC)
    with engine.begin() as conn:
        for m in available_migrations():
            if m.version < 8:
                m.module.upgrade(conn)
                conn.execute(
                    schema_migrations.insert().values(
                        version=m.version, description=m.description, applied_at=committed
                    )
                )
        conn.execute(
            text(
                "INSERT INTO batch_ledger (query_id, batch_id, topic, started_at, committed_at, "
                "duration_ms, input_rows, parse_errors, late_rows, aggregated_rows, "
                "aggregate_rows_written, offsets) VALUES ('q1', 0, 't', :started, :committed, "
                "5000, 1, 0, 0, 1, 1, '{}')"
            ),
            {"started": committed - timedelta(seconds=5), "committed": committed},
        )
    yield engine
    engine.dispose()


def test_migration_8_counts_earlier_batches_as_derived_and_shows_the_column(v7_warehouse):
    engine = v7_warehouse
    assert migrate(engine) == [m.version for m in available_migrations() if m.version >= 8]
    sink = WarehouseSink(engine)
    assert sink.underived("q1") == []
    with engine.connect() as conn:
        row = conn.execute(text("SELECT committed_at, derived_at FROM v_batch_ledger")).one()
        assert row.derived_at == row.committed_at
        if engine.dialect.name == "postgresql":  # still a security barrier after the change
            options = conn.execute(
                text("SELECT reloptions FROM pg_class WHERE relname = 'v_batch_ledger'")
            ).scalar()
            assert "security_barrier=true" in options
    # A batch committed now is underived until its derivation commits, on this dialect too.
    ledger = Tables(engine).ledger
    with engine.begin() as conn:
        conn.execute(
            ledger.insert().values(
                query_id="q1", batch_id=1, topic="t", started_at=NOW, committed_at=NOW,
                duration_ms=1, input_rows=0, parse_errors=0,
                late_rows=0, aggregated_rows=0, aggregate_rows_written=0, offsets="{}",
                watermark_after=datetime(2026, 11, 23, 9, 55, tzinfo=UTC),
            )
        )  # fmt: skip
    assert sink.underived("q1") == [(1, None, datetime(2026, 11, 23, 9, 55, tzinfo=UTC))]
    sink.derive("q1", 1, lambda conn: None)
    assert sink.underived("q1") == []
