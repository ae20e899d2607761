"""Backfill from the real broker and from a JSONL archive: the stream's figures, idempotent."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from jobs.backfill import run_backfill
from pipelines.errors import SafewatchError
from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_events, produce_raw
from pipelines.synth.generator import generate_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.queries import aggregate_rows
from pipelines.warehouse.tables import Tables, as_utc
from tests.integration.streaming_support import (
    ground_truth,
    make_settings,
    run_job,
    warehouse_table,
)

pytestmark = pytest.mark.integration

# Event times within the contract's max_age (7 days) of the records' Kafka timestamps (now).
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
# Bookkeeping, and the sketch's bytes: a sketch merged across micro-batches serializes
# differently from one built at once (its estimate, distinct_users, is compared).
BOOKKEEPING = {"first_batch_id", "last_batch_id", "updated_at", "computed_at", "users_sketch"}


def snapshot(engine, since=None, until=None) -> dict[str, list[tuple]]:
    """Every row of the derived tables (minus bookkeeping), optionally within a period."""
    t = Tables(engine)
    out = {}
    with engine.connect() as conn:
        for table in (t.agg, t.hist, t.drift, t.rate_tests):
            columns = [c for c in table.columns if c.name not in BOOKKEEPING]
            query = select(*columns)
            if since is not None:
                query = query.where(table.c.window_start >= since, table.c.window_start < until)
            rows = [
                tuple(as_utc(v) if isinstance(v, datetime) else v for v in r)
                for r in conn.execute(query)
            ]
            out[table.name] = sorted(rows, key=repr)
    return out


@pytest.fixture(scope="module")
def streamed(spark, kafka_broker, tmp_path_factory):
    """35 minutes of events (and two unreadable records) through the streaming job."""
    tmp = tmp_path_factory.mktemp("backfill")
    topic = f"backfill.{uuid.uuid4().hex[:12]}"
    ensure_topics(kafka_broker.kafka, [topic])
    events = list(
        generate_events(
            seed=23, start=T0, duration=timedelta(minutes=35), rate_per_s=2.5,
            scenarios=("violation-spike",),
        )
    )  # fmt: skip
    produce_events(kafka_broker.kafka, topic, events)
    produce_raw(kafka_broker.kafka, topic, [b"not json", b'{"schema_version": "9"}'])
    url = f"sqlite:///{tmp / 'stream.db'}"
    settings = make_settings(
        kafka_broker.kafka, topic, tmp / "ckpt", url, max_offsets=2000, watermark="10 minutes"
    )
    summary = run_job(spark, settings)
    # Several micro-batches, none with late events: the stream counted every event, so the
    # backfill must give exactly its rows.
    assert len(summary.batches) >= 2
    assert sum(b.late_rows for b in summary.batches) == 0
    return settings, events, tmp


def test_kafka_backfill_reproduces_the_stream_and_is_idempotent(spark, streamed):
    settings, events, _ = streamed
    engine = make_engine(settings.warehouse.url.get_secret_value())
    before = snapshot(engine)
    since, until = T0 + timedelta(minutes=7), T0 + timedelta(minutes=19)

    first = run_backfill(spark, settings, since=since, until=until, log=lambda _m: None)
    # Widened to whole windows; every event of those windows counted once, no reject lost.
    assert (first.since, first.until) == (T0 + timedelta(minutes=5), T0 + timedelta(minutes=20))
    in_period = [e for e in events if first.since <= _time(e) < first.until]
    assert first.aggregated_events == len(in_period), first
    assert first.input_rows == len(events) + 2
    assert first.rejected_by_reason == {"invalid_json": 1, "unknown_schema_version": 1}
    assert first.rows_deleted == first.rows_written > 0
    assert first.drift_windows == 3
    assert snapshot(engine) == before  # the same metric definitions give the same rows

    second = run_backfill(spark, settings, since=since, until=until, log=lambda _m: None)
    assert snapshot(engine) == before
    assert second.run_id == first.run_id + 1
    t = Tables(engine)
    with engine.connect() as conn:
        marked = conn.execute(
            select(t.agg.c.first_batch_id).where(t.agg.c.window_start >= first.since)
            .where(t.agg.c.window_start < first.until).distinct()
        ).scalars().all()  # fmt: skip
    assert marked == [-second.run_id]


def test_backfill_refuses_windows_the_stream_has_not_closed(spark, streamed):
    settings, _, _ = streamed
    with pytest.raises(SafewatchError, match="not all closed"):
        run_backfill(
            spark, settings, since=T0, until=T0 + timedelta(minutes=40), log=lambda _m: None
        )


def test_archive_backfill_into_an_empty_warehouse_equals_ground_truth(spark, streamed):
    settings, events, tmp = streamed
    archive = tmp / "events.jsonl"
    lines = [json.dumps(e) for e in events]
    lines.insert(5, "{broken")
    archive.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp / 'archive.db'}"
    fresh = settings.model_copy(
        update={"warehouse": settings.warehouse.model_copy(update={"url": SecretStr(url)})}
    )
    report = run_backfill(
        spark, fresh, since=T0, until=T0 + timedelta(minutes=35), archives=[archive],
        log=lambda _m: None,
    )  # fmt: skip
    assert report.rejected_by_reason == {"invalid_json": 1}
    assert report.aggregated_events == len(events)
    engine = make_engine(url)
    assert warehouse_table(aggregate_rows(engine)) == ground_truth(events)
    # ... and the same histograms as the stream wrote for those windows.
    stream_engine = make_engine(settings.warehouse.url.get_secret_value())
    assert snapshot(engine)["segment_window_hist"] == snapshot(stream_engine)["segment_window_hist"]
    t = Tables(engine)
    with engine.connect() as conn:
        bad = conn.execute(select(t.backfill_runs.c.rejected_by_reason)).scalar_one()
    assert json.loads(bad) == {"invalid_json": 1}


def test_archive_errors_are_clear(spark, streamed, tmp_path):
    settings, _, _ = streamed
    with pytest.raises(SafewatchError, match="no such archive file"):
        run_backfill(
            spark, settings, since=T0, until=T0 + timedelta(minutes=5),
            archives=[tmp_path / "missing.jsonl"], log=lambda _m: None,
        )  # fmt: skip
    with pytest.raises(SafewatchError, match="must be after"):
        run_backfill(spark, settings, since=T0, until=T0, log=lambda _m: None)


def _time(event: dict) -> datetime:
    return datetime.fromisoformat(event["event_time"].replace("Z", "+00:00")).astimezone(UTC)
