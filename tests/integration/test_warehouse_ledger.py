"""The ledger's watermarks and the windows a watermark has closed, and the alert store's reads
that `alerts status` and the demo print, on SQLite and on PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.ledger import (
    closed_windows,
    latest_watermark,
    oldest_watermark,
    query_watermark,
)
from pipelines.warehouse.sink import WarehouseSink
from tests.integration.alert_windows import warehouse_engine
from tests.unit.test_warehouse_sink import _agg

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def sink(request, tmp_path):
    engine = warehouse_engine(request, tmp_path, "ledger")
    yield WarehouseSink(engine)
    engine.dispose()


def _commit(sink, query_id, batch_id, watermark, aggs=(), offset=0):
    sink.commit(
        BatchResult(
            query_id=query_id,
            batch_id=batch_id,
            topic="t",
            started_at=T0,
            input_rows=1,
            late_rows=0,
            aggregated_rows=0,
            watermark_before=None,
            watermark_after=watermark,
            offsets=[OffsetRange("t", 0, offset, offset, 1)],
            aggregates=list(aggs),
        )
    )


def test_watermarks_of_one_query_of_all_and_the_oldest_of_the_latest(sink):
    with sink.engine.connect() as conn:
        assert query_watermark(conn, sink.tables, "q1") is None
        assert latest_watermark(conn, sink.tables) is None
        assert oldest_watermark(conn, sink.tables) is None
    _commit(sink, "q1", 0, T0 + timedelta(minutes=5), offset=0)
    _commit(sink, "q1", 1, T0 + timedelta(minutes=20), offset=1)
    _commit(sink, "q2", 0, T0 + timedelta(minutes=10), offset=2)
    _commit(sink, "q2", 1, None, offset=3)  # a batch with no event keeps no watermark
    with sink.engine.connect() as conn:
        assert query_watermark(conn, sink.tables, "q1") == T0 + timedelta(minutes=20)
        assert query_watermark(conn, sink.tables, "q2") == T0 + timedelta(minutes=10)
        assert query_watermark(conn, sink.tables, "q3") is None
        assert latest_watermark(conn, sink.tables) == T0 + timedelta(minutes=20)
        # q1 reached 10:20, q2 10:10: the oldest of the two latest is q2's.
        assert oldest_watermark(conn, sink.tables) == T0 + timedelta(minutes=10)
    assert sink.watermark("q1") == T0 + timedelta(minutes=20)


def test_closed_windows_end_at_or_before_the_watermark(sink):
    # Windows start every 5 minutes from 10:00 to 10:25 and end 5 minutes later.
    aggs = [_agg("de-DE", 1, 0, minute=5 * w) for w in range(6)]
    aggs.append({**_agg("de-DE", 1, 0, minute=0), "dimension_set": "model_version"})
    _commit(sink, "q1", 0, T0 + timedelta(minutes=20), aggs)
    at = [T0 + timedelta(minutes=5 * w) for w in range(6)]
    with sink.engine.connect() as conn:

        def closed(**bounds):
            return closed_windows(conn, sink.tables, "locale", **bounds)

        # Ends 10:05 .. 10:20 are <= 10:20: the windows starting 10:00 .. 10:15.
        assert closed(watermark=T0 + timedelta(minutes=20)) == at[:4]
        # A move from 10:10 to 10:20 closed the windows ending in (10:10, 10:20].
        assert closed(watermark=at[4], after=at[2]) == at[2:4]
        # Starting in [10:05, 10:15) among those closed at 10:20.
        assert closed(watermark=at[4], since=at[1], until=at[3]) == at[1:3]
        assert closed(watermark=at[4], since=at[3]) == at[3:4]
        assert closed(watermark=at[4], until=at[1]) == at[:1]
        assert closed(watermark=T0) == []
        assert closed_windows(
            conn, sink.tables, "model_version", watermark=T0 + timedelta(hours=1)
        ) == [T0]


def test_the_alert_reads_people_see(sink):
    from pipelines.alerting import store

    t = sink.tables
    seg = '[["locale","de-DE"]]'
    state = {
        "rule": "R", "segment": seg, "started_at": T0, "firing_since": T0, "last_window": T0,
        "true_windows": 2, "false_windows": 0, "updated_at": T0,
    }  # fmt: skip
    history = {
        "rule": "R", "segment": seg, "severity": "sev2", "from_status": "pending",
        "metric": "violation_rate", "summary": "s", "description": "d", "recorded_at": T0,
    }  # fmt: skip
    notice = {"dedup_key": "k|firing", "payload": "{}", "created_at": T0, "attempts": 0,
              "next_attempt_at": T0}  # fmt: skip
    with sink.engine.begin() as conn:
        conn.execute(
            t.alert_state.insert(),
            [
                {**state, "status": "firing"},
                {**state, "segment": '[["locale","en-US"]]', "status": "inactive"},
            ],
        )
        conn.execute(
            t.alert_history.insert(),
            [
                {**history, "window_start": T0 + timedelta(minutes=5), "to_status": "resolved"},
                {**history, "window_start": T0, "to_status": "firing"},
            ],
        )
        conn.execute(
            t.outbox.insert(),
            [
                {**notice, "channel": "kafka", "sent_at": None},
                {**notice, "channel": "webhook", "attempts": 1, "sent_at": T0},
            ],
        )  # fmt: skip
    with sink.engine.connect() as conn:
        assert [(s["segment"], s["status"]) for s in store.active_states(conn, t)] == [
            (seg, "firing")
        ]
        assert [tuple(n) for n in store.unsent_notices(conn, t)] == [("kafka", 0, None)]
        assert [h["to_status"] for h in store.transitions(conn, t)] == ["firing", "resolved"]
        assert sorted((n.channel, n.sent_at is None) for n in store.notices(conn, t)) == [
            ("kafka", True),
            ("webhook", False),
        ]
