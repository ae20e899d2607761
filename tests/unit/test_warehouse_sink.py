"""The warehouse sink against a real SQLite file: atomic, idempotent, exact sums."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError

from pipelines.metrics.catalog import counter_ids
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.warehouse.batch_result import (
    BatchResult,
    OffsetRange,
    OffsetsAlreadyIngestedError,
    counted_columns,
)
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import available_migrations, migrate
from pipelines.warehouse.queries import aggregate_rows, ledger_rows
from pipelines.warehouse.retry import RetryPolicy
from pipelines.warehouse.sink import WarehouseSink

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    migrate(engine)
    return engine


def _agg(locale, events, violations, minute=0):
    row = {
        "window_start": T0 + timedelta(minutes=minute),
        "window_end": T0 + timedelta(minutes=minute + 5),
        "dimension_set": "locale",
        **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
        **dict.fromkeys(counted_columns(), 0),
        "users_sketch": None,
    }
    row.update(locale=locale, events=events, violations=violations)
    return row


def _batch(batch_id, aggs, offsets, query_id="q1"):
    return BatchResult(
        query_id=query_id,
        batch_id=batch_id,
        topic="t",
        started_at=T0,
        input_rows=10,
        late_rows=0,
        aggregated_rows=sum(a["events"] for a in aggs),
        watermark_before=None,
        watermark_after=T0,
        offsets=offsets,
        aggregates=aggs,
    )


def test_migrations_apply_once_and_cover_every_catalog_counter(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert migrate(engine) == [m.version for m in available_migrations()]
    assert migrate(engine) == []
    columns = {c["name"] for c in inspect(engine).get_columns("segment_window_agg")}
    assert set(counter_ids()) <= columns
    assert set(SEGMENT_DIMENSIONS) <= columns


def test_batches_add_up_per_window_and_segment(engine):
    sink = WarehouseSink(engine)
    sink.commit(
        _batch(0, [_agg("de-DE", 10, 1), _agg("en-US", 5, 0)], [OffsetRange("t", 0, 0, 9, 10)])
    )
    sink.commit(_batch(1, [_agg("de-DE", 7, 2)], [OffsetRange("t", 0, 10, 16, 7)]))
    rows = {r["locale"]: r for r in aggregate_rows(engine)}
    assert rows["de-DE"]["events"] == 17 and rows["de-DE"]["violations"] == 3
    assert rows["de-DE"]["first_batch_id"] == 0 and rows["de-DE"]["last_batch_id"] == 1
    assert rows["en-US"]["events"] == 5
    assert rows["de-DE"]["window_start"] == T0
    assert [r["batch_id"] for r in ledger_rows(engine)] == [0, 1]


def test_committed_batch_is_recognised_and_a_second_commit_is_refused(engine):
    sink = WarehouseSink(engine)
    batch = _batch(0, [_agg("de-DE", 10, 1)], [OffsetRange("t", 0, 0, 9, 10)])
    sink.commit(batch)
    assert sink.is_committed("q1", 0)
    assert not sink.is_committed("q1", 1)
    before = aggregate_rows(engine)
    with pytest.raises(Exception):  # noqa: B017 - the ledger's primary key or the offsets check
        sink.commit(batch)
    assert aggregate_rows(engine) == before


def test_offsets_counted_by_another_query_are_refused_and_nothing_is_written(engine):
    sink = WarehouseSink(engine)
    sink.commit(_batch(0, [_agg("de-DE", 10, 1)], [OffsetRange("t", 0, 0, 9, 10)]))
    before = aggregate_rows(engine)
    overlapping = _batch(0, [_agg("de-DE", 3, 0)], [OffsetRange("t", 0, 5, 12, 8)], query_id="q2")
    with pytest.raises(OffsetsAlreadyIngestedError, match="already counted by query q1"):
        sink.commit(overlapping)
    assert aggregate_rows(engine) == before
    assert not sink.is_committed("q2", 0)


def test_watermark_is_the_latest_committed(engine):
    sink = WarehouseSink(engine)
    assert sink.watermark("q1") is None
    sink.commit(_batch(0, [], [OffsetRange("t", 0, 0, 0, 1)]))
    assert sink.watermark("q1") == T0


def _users_sketch(user_ids):
    import datasketches as ds

    sketch = ds.hll_sketch(11)
    for u in user_ids:
        sketch.update(u)
    return sketch.serialize_compact()


def test_analyst_view_hides_segments_with_fewer_than_k_distinct_users(engine):
    from sqlalchemy import text

    sink = WarehouseSink(engine)
    crowded = {**_agg("de-DE", 40, 1), "users_sketch": _users_sketch(f"u{i}" for i in range(25))}
    sparse = {**_agg("fr-FR", 40, 1), "users_sketch": _users_sketch(["a", "b", "c"])}
    sink.commit(_batch(0, [crowded, sparse], [OffsetRange("t", 0, 0, 79, 80)]))
    # A second batch adds users to fr-FR: the sketches merge (19 distinct, still below 20).
    more = {**_agg("fr-FR", 5, 0), "users_sketch": _users_sketch(f"x{i}" for i in range(16))}
    sink.commit(_batch(1, [more], [OffsetRange("t", 0, 80, 84, 5)]))

    def visible():
        with engine.connect() as conn:
            return {
                r.locale: r.distinct_users
                for r in conn.execute(text("SELECT * FROM v_segment_window"))
            }

    assert visible() == {"de-DE": 25}
    assert {r["locale"]: r["distinct_users"] for r in aggregate_rows(engine)} == {
        "de-DE": 25,
        "fr-FR": 19,
    }
    sink.set_min_distinct_users(10)
    assert visible() == {"de-DE": 25, "fr-FR": 19}


def test_recent_and_stale_batches_follow_the_newest_event_time(engine):
    from dataclasses import replace

    sink = WarehouseSink(engine)
    for batch_id, minute in enumerate([0, 10, 20]):
        batch = _batch(batch_id, [], [OffsetRange("t", 0, batch_id, batch_id, 1)])
        sink.commit(replace(batch, max_event_time=T0 + timedelta(minutes=minute)))
    assert sink.recent_batches("q1", None) == [0, 1, 2]
    assert sink.recent_batches("q1", T0 + timedelta(minutes=10)) == [1, 2]
    assert sink.stale_batches("q1", T0 + timedelta(minutes=15)) == [0, 1]
    # Batches already stale at the previous watermark were pruned then, not again.
    since = T0 + timedelta(minutes=5)
    assert sink.stale_batches("q1", T0 + timedelta(minutes=15), since=since) == [1]


def test_a_batch_is_underived_until_its_derivation_commits(engine):
    sink = WarehouseSink(engine)
    sink.commit(_batch(0, [_agg("de-DE", 10, 1)], [OffsetRange("t", 0, 0, 9, 10)]))
    sink.commit(
        _batch(1, [_agg("de-DE", 3, 0)], [OffsetRange("t", 0, 10, 12, 3)]), derive=lambda c: None
    )
    assert sink.underived("q1") == [(0, None, T0)]  # batch 1 was derived in its commit
    assert sink.underived("q2") == []

    def dies(conn):
        conn.execute(sink.tables.ledger.delete())  # written, then rolled back
        raise RuntimeError("died while deriving")

    with pytest.raises(RuntimeError, match="died while deriving"):
        sink.derive("q1", 0, dies)
    assert sink.underived("q1") == [(0, None, T0)]
    assert [r["batch_id"] for r in ledger_rows(engine)] == [0, 1]
    seen = []
    sink.derive("q1", 0, seen.append, now=T0 + timedelta(hours=1))
    assert len(seen) == 1 and sink.underived("q1") == []
    derived_at = {r["batch_id"]: r["derived_at"] for r in ledger_rows(engine)}
    assert derived_at[0] == T0 + timedelta(hours=1)


def test_batches_committed_before_migration_8_count_as_derived(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    earlier = [m for m in available_migrations() if m.version < 8]
    with engine.begin() as conn:  # a warehouse as the release before 8 left it
        for m in earlier:
            m.module.upgrade(conn)
        conn.exec_driver_sql(
            "INSERT INTO batch_ledger (query_id, batch_id, topic, started_at, committed_at, "
            "duration_ms, input_rows, parse_errors, late_rows, aggregated_rows, "
            "aggregate_rows_written, offsets) "
            "VALUES ('q1', 0, 't', '2026-11-23 10:00:00', '2026-11-23 10:00:05', 5000, "
            "1, 0, 0, 1, 1, '{}')"
        )
        conn.exec_driver_sql(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "description VARCHAR(300) NOT NULL, applied_at DATETIME NOT NULL)"
        )
        for m in earlier:
            conn.exec_driver_sql(
                "INSERT INTO schema_migrations VALUES (?, ?, '2026-11-23 09:00:00')",
                (m.version, m.description),
            )
    assert 8 in migrate(engine)
    assert WarehouseSink(engine).underived("q1") == []
    (row,) = ledger_rows(engine)
    assert row["derived_at"] == row["committed_at"]


def test_ledger_duration_stays_within_the_integer_column():
    from datetime import timedelta

    from pipelines.warehouse.batch_result import ledger_duration_ms

    assert ledger_duration_ms(timedelta(seconds=1.5)) == 1500
    assert ledger_duration_ms(timedelta(days=25)) == 2**31 - 1  # 2,160,000,000 ms otherwise
    assert ledger_duration_ms(timedelta(seconds=-3)) == 0


# -- a transient failure after the database applied the work ---------------------------------


def _lost_acknowledgement() -> OperationalError:
    """What the driver raises when the server closed the connection during COMMIT."""
    return OperationalError(
        "COMMIT", {}, ConnectionResetError("server closed the connection unexpectedly"),
        connection_invalidated=True,
    )  # fmt: skip


def test_a_commit_whose_acknowledgement_was_lost_is_not_applied_twice(engine):
    lines: list[str] = []
    sink = WarehouseSink(
        engine, retry=RetryPolicy(budget_s=10, initial_s=0.01, max_s=0.01), log=lines.append
    )
    real = sink._commit
    calls = []

    def applied_then_lost(*args):
        calls.append(1)
        real(*args)
        raise _lost_acknowledgement()

    sink._commit = applied_then_lost  # type: ignore[method-assign]
    batch = _batch(0, [_agg("de-DE", 10, 1), _agg("en-US", 5, 0)], [OffsetRange("t", 0, 0, 9, 10)])
    assert sink.commit(batch) == 2  # the stored count of the try that was applied
    assert calls == [1]  # tried again: found in the ledger, not written a second time
    rows = {r["locale"]: r for r in aggregate_rows(engine)}
    assert (rows["de-DE"]["events"], rows["de-DE"]["violations"], rows["en-US"]["events"]) == (
        10, 1, 5,
    )  # fmt: skip
    assert [r["batch_id"] for r in ledger_rows(engine)] == [0]
    assert lines[0].startswith("warehouse: committing batch 0 failed (server closed")
    assert lines[-1].startswith("warehouse: reachable again, committing batch 0 done after 2 tries")


def test_a_derivation_whose_acknowledgement_was_lost_is_not_run_twice(engine):
    sink = WarehouseSink(
        engine, retry=RetryPolicy(budget_s=10, initial_s=0.01, max_s=0.01), log=lambda _m: None
    )
    sink.commit(_batch(0, [_agg("de-DE", 10, 1)], [OffsetRange("t", 0, 0, 9, 10)]))
    assert sink.underived("q1") == [(0, None, T0)]
    real = sink._derive

    def applied_then_lost(*args):
        real(*args)
        raise _lost_acknowledgement()

    sink._derive = applied_then_lost  # type: ignore[method-assign]
    runs = []
    sink.derive("q1", 0, lambda conn: runs.append(1))
    assert runs == [1] and sink.underived("q1") == []


def test_a_transient_failure_of_the_commit_itself_is_tried_again_whole(engine):
    sink = WarehouseSink(
        engine, retry=RetryPolicy(budget_s=10, initial_s=0.01, max_s=0.01), log=lambda _m: None
    )
    failures = [1]

    def flaky(conn):  # runs inside the commit's transaction, which then rolls back
        if failures:
            failures.pop()
            raise _lost_acknowledgement()

    batch = _batch(0, [_agg("de-DE", 10, 1)], [OffsetRange("t", 0, 0, 9, 10)])
    sink.commit(batch, derive=flaky)
    rows = aggregate_rows(engine)
    assert [(r["locale"], r["events"]) for r in rows] == [("de-DE", 10)]
    assert [r["batch_id"] for r in ledger_rows(engine)] == [0]
