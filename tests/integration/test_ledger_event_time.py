"""The ledger keeps a batch's newest event time to the microsecond, on SQLite and PostgreSQL.

Events with microsecond event times go the job's way without Spark: the record checks and
the per-partition counting (pipelines.stream.counting), the partial sums merged, the batch's
newest event time taken from them, the batch committed through the sink. The ledger must
give back the newest event time written in the events, and the watermark that follows from
it, to the microsecond.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from sqlalchemy import Engine, select

from pipelines.contract.records import Limits, RecordChecker
from pipelines.contract.shapes import INPUT_SCHEMA
from pipelines.privacy.detectors import detector_names, screen_pattern
from pipelines.stream.counting import Counting
from pipelines.stream.merge import latest_event_time, merge_partials
from pipelines.stream.partials import partial_counts
from pipelines.synth.generator import generate_events
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.queries import ledger_rows
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import Tables, as_utc

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
WATERMARK = timedelta(minutes=10)
COUNTING = Counting(window_s=300, dimensions=("locale",), users_lg_k=11, screen=screen_pattern())
CHECKER = RecordChecker(
    Limits(1_000_000, timedelta(minutes=30), timedelta(days=7)),
    screen=screen_pattern(),
    detect=detector_names,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wh.db'}"
    else:
        database = f"ledger_event_time_{uuid.uuid4().hex[:8]}"  # a fresh one per test
        url = request.getfixturevalue("postgres").create_database(database)
    made = make_engine(url)
    migrate(made)
    yield made
    made.dispose()


def _checked(events: list[dict], partition: int, first_offset: int) -> pa.RecordBatch:
    n = len(events)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(["t"] * n),
            pa.array([partition] * n, pa.int32()),
            pa.array(range(first_offset, first_offset + n), pa.int64()),
            pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),
            pa.array([json.dumps(e).encode() for e in events], pa.binary()),
        ],
        schema=INPUT_SCHEMA,
    )
    return CHECKER.check_batch(batch, watermark=None)


def _rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("newest_us", [987_654, 1, 999_999])
def test_the_ledger_keeps_the_microseconds_of_the_newest_event_time(engine, newest_us):
    events = list(
        generate_events(
            seed=5, start=NOW - timedelta(minutes=8), duration=timedelta(minutes=2), rate_per_s=1
        )
    )
    # Every event time with microseconds; the newest in the second partition, followed
    # there by a record a second newer that is rejected (its time is not the batch's).
    for i, e in enumerate(events):
        e["event_time"] = _rfc3339(NOW - timedelta(minutes=8, microseconds=-(i * 1_000_003)))
    newest = NOW - timedelta(minutes=4) + timedelta(microseconds=newest_us)
    events[-1]["event_time"] = _rfc3339(newest)
    rejected = dict(events[0], event_id="x", event_time=_rfc3339(newest + timedelta(seconds=1)))
    rejected["refusal"] = dict(events[0]["refusal"], style="rude")  # a contract violation
    half = len(events) // 2
    batches = [_checked(events[:half], 0, 0), _checked([*events[half:], rejected], 1, 0)]
    partials = [row for b in batches for p in partial_counts([b], COUNTING, frozenset())
                for row in p.to_pylist()]  # fmt: skip
    counts = merge_partials(partials, COUNTING)
    assert {s["status"] for s in counts.stats} == {"aggregated", "schema_violation"}

    max_event_time = latest_event_time(counts.stats)
    assert max_event_time == newest
    WarehouseSink(engine).commit(
        BatchResult(
            query_id="q",
            batch_id=0,
            topic="t",
            started_at=NOW,
            input_rows=len(events) + 1,
            late_rows=0,
            aggregated_rows=len(events),
            watermark_before=None,
            watermark_after=max_event_time - WATERMARK,
            offsets=[OffsetRange("t", 0, 0, half - 1, half)],
            aggregates=[],
            max_event_time=max_event_time,
        )
    )
    ledger = Tables(engine).ledger
    with engine.connect() as conn:
        stored = conn.execute(select(ledger.c.max_event_time, ledger.c.watermark_after)).one()
    assert as_utc(stored[0]) == newest
    assert as_utc(stored[1]) == newest - WATERMARK
    assert as_utc(stored[0]).microsecond == newest_us  # type: ignore[union-attr]
    (row,) = ledger_rows(engine)
    assert row["max_event_time"] == newest
