"""The first slice end to end: real broker, Spark's Kafka source, warehouse on SQLite and PG."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_events, produce_raw
from pipelines.synth.generator import generate_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.queries import aggregate_rows, ledger_rows
from pipelines.warehouse.tables import Tables, as_utc
from tests.integration.streaming_support import (
    DIMENSIONS,
    ground_truth,
    make_settings,
    run_job,
    warehouse_table,
)

pytestmark = pytest.mark.integration

# Event times within the contract's max_age (7 days) of the records' Kafka timestamps (now).
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def _events(seed, start, minutes, rate=8.0, scenarios=("violation-spike",)):
    return list(
        generate_events(
            seed=seed,
            start=start,
            duration=timedelta(minutes=minutes),
            rate_per_s=rate,
            scenarios=scenarios,
        )
    )


@pytest.fixture
def topic(kafka_broker, unique_topic):
    name = unique_topic("interactions")
    ensure_topics(kafka_broker.kafka, [name])
    return name


def test_counts_equal_ground_truth_per_window_and_segment(spark, kafka_broker, topic, tmp_path):
    events = _events(seed=11, start=T0, minutes=20)
    produce_events(kafka_broker.kafka, topic, events)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    settings = make_settings(kafka_broker.kafka, topic, tmp_path / "ckpt", url, max_offsets=3000)

    summary = run_job(spark, settings)

    engine = make_engine(url)
    assert warehouse_table(aggregate_rows(engine)) == ground_truth(events)
    assert len(summary.batches) >= 3  # back-pressure split the backlog into micro-batches
    ledger = ledger_rows(engine)
    assert sum(r["input_rows"] for r in ledger) == len(events)
    assert sum(r["aggregated_rows"] for r in ledger) == len(events)
    assert sum(r["rejected_rows"] + r["late_rows"] + r["duplicate_rows"] for r in ledger) == 0


def test_rerun_changes_no_row_and_new_events_add_exactly(spark, kafka_broker, topic, tmp_path):
    first = _events(seed=21, start=T0, minutes=10)
    produce_events(kafka_broker.kafka, topic, first)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    settings = make_settings(kafka_broker.kafka, topic, tmp_path / "ckpt", url)
    run_job(spark, settings)
    engine = make_engine(url)
    before = aggregate_rows(engine)
    ledger_before = ledger_rows(engine)

    again = run_job(spark, settings)

    assert again.input_rows == 0
    assert aggregate_rows(engine) == before  # not one value, timestamp or batch id changed
    assert ledger_rows(engine) == ledger_before

    more = _events(seed=22, start=T0 + timedelta(minutes=10), minutes=10, scenarios=())
    produce_events(kafka_broker.kafka, topic, more)
    run_job(spark, settings)
    assert warehouse_table(aggregate_rows(engine)) == ground_truth(first + more)


def test_batch_replayed_after_a_crash_changes_nothing(spark, kafka_broker, topic, tmp_path):
    events = _events(seed=31, start=T0, minutes=10)
    produce_events(kafka_broker.kafka, topic, events)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    checkpoint = tmp_path / "ckpt"
    settings = make_settings(kafka_broker.kafka, topic, checkpoint, url, max_offsets=2000)
    run_job(spark, settings)
    engine = make_engine(url)
    before = aggregate_rows(engine)

    # A job killed after the warehouse commit but before Spark's own commit leaves the last
    # batch without its commit file; on restart Spark runs that batch id again.
    commits = sorted(
        (p for p in (checkpoint / "commits").iterdir() if p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    last = commits[-1]
    last.unlink()
    (last.parent / f".{last.name}.crc").unlink(missing_ok=True)
    replay = run_job(spark, settings)

    assert [b.batch_id for b in replay.batches] == [int(last.name)]
    assert replay.batches[0].skipped
    assert aggregate_rows(engine) == before
    assert warehouse_table(before) == ground_truth(events)


def test_lost_checkpoint_cannot_count_offsets_twice(spark, kafka_broker, topic, tmp_path):
    events = _events(seed=41, start=T0, minutes=5, scenarios=())
    produce_events(kafka_broker.kafka, topic, events)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    run_job(spark, make_settings(kafka_broker.kafka, topic, tmp_path / "ckpt", url))
    engine = make_engine(url)
    before = aggregate_rows(engine)

    shutil.rmtree(tmp_path / "ckpt")
    with pytest.raises(Exception, match="already counted"):
        run_job(spark, make_settings(kafka_broker.kafka, topic, tmp_path / "ckpt", url))
    assert aggregate_rows(engine) == before


def test_late_and_unparseable_records_are_counted_not_aggregated(
    spark, kafka_broker, topic, tmp_path
):
    on_time = _events(seed=51, start=T0, minutes=30, rate=2.0, scenarios=())
    produce_events(kafka_broker.kafka, topic, on_time)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    settings = make_settings(
        kafka_broker.kafka, topic, tmp_path / "ckpt", url, watermark="10 minutes"
    )
    run_job(spark, settings)
    engine = make_engine(url)
    before = aggregate_rows(engine)

    # 15 minutes older than the newest event already seen: behind the 10-minute watermark.
    late = _events(seed=52, start=T0, minutes=5, rate=1.0, scenarios=())
    produce_events(kafka_broker.kafka, topic, late)
    produce_raw(kafka_broker.kafka, topic, [b"not json", b'{"event_id": 3}', b"[]"])
    run_job(spark, settings)

    assert aggregate_rows(engine) == before
    last = ledger_rows(engine)[-1]
    assert last["late_rows"] == len(late)
    assert json.loads(last["rejected_by_reason"]) == {"invalid_json": 2, "schema_violation": 1}
    assert last["input_rows"] == len(late) + 3
    assert last["aggregated_rows"] == 0


def test_postgres_warehouse_holds_the_same_table_as_sqlite(
    spark, kafka_broker, topic, tmp_path, postgres
):
    events = _events(seed=61, start=T0, minutes=15)
    produce_events(kafka_broker.kafka, topic, events)
    sqlite_url = f"sqlite:///{tmp_path / 'wh.db'}"
    pg_url = postgres.create_database("parity")
    # One batch whose 1-minute watermark closes the first two windows: drift on both.
    for ckpt, url in (("c1", sqlite_url), ("c2", pg_url)):
        settings = make_settings(
            kafka_broker.kafka, topic, tmp_path / ckpt, url, max_offsets=50_000,
            watermark="1 minute",
        )  # fmt: skip
        run_job(spark, settings)

    def comparable(url):
        ignore = {"updated_at"}
        return [
            {k: v for k, v in r.items() if k not in ignore}
            for r in aggregate_rows(make_engine(url))
        ]

    sqlite_rows = comparable(sqlite_url)
    assert sqlite_rows == comparable(pg_url)
    assert warehouse_table(sqlite_rows) == ground_truth(events)

    def table(url, name, key):
        engine = make_engine(url)
        t = getattr(Tables(engine), name)
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(t)).mappings()]
        for r in rows:
            r.pop("computed_at", None)
            r["window_start"] = as_utc(r["window_start"])
        return sorted(rows, key=lambda r: tuple(r[k] for k in key))

    key = ["window_start", *DIMENSIONS]
    assert table(sqlite_url, "hist", [*key, "distribution", "bin"]) == table(
        pg_url, "hist", [*key, "distribution", "bin"]
    )
    drift_sqlite = table(sqlite_url, "drift", [*key, "distribution"])
    drift_pg = table(pg_url, "drift", [*key, "distribution"])
    assert drift_sqlite, [
        (r["batch_id"], r["watermark_before"], r["watermark_after"])
        for r in ledger_rows(make_engine(sqlite_url))
    ]
    assert len(drift_sqlite) == len(drift_pg)
    assert any(r["status"] == "ok" for r in drift_sqlite)

    def same(a, b):
        assert a.keys() == b.keys()
        for k, v in a.items():
            if isinstance(v, float):
                assert v == pytest.approx(b[k], rel=1e-9), k
            else:
                assert v == b[k], k

    for a, b in zip(drift_sqlite, drift_pg, strict=True):
        same(a, b)
    tests_sqlite = table(sqlite_url, "rate_tests", [*key, "rate_id"])
    tests_pg = table(pg_url, "rate_tests", [*key, "rate_id"])
    assert len(tests_sqlite) == len(tests_pg) > 0
    for a, b in zip(tests_sqlite, tests_pg, strict=True):
        same(a, b)
