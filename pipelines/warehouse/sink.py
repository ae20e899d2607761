"""Write one micro-batch to the warehouse: aggregates, ledger row and offsets, atomically.

Lifecycle per batch (called by the streaming job's foreachBatch):
  1. `is_committed(query_id, batch_id)`: a batch already in the ledger is skipped, so a
     replayed batch id (Spark re-runs the last batch after a crash) changes nothing.
  2. `watermark(query_id)`: the watermark left by the previous batch, used to classify late
     events deterministically (a re-run of the same batch sees the same value).
  3. `commit(BatchResult)`: one transaction that adds the batch's partial counts and
     histograms to the stored rows (upsert with +), records newly admitted dimension values,
     inserts the ledger row and the offset ranges. If any part fails nothing is written and
     the error propagates, so Spark does not commit the batch.
  4. `derive(query_id, batch_id, fn)`: the drift statistics and alert rules of the windows
     the batch closed and its quality results, in a second transaction that marks the
     ledger row derived (`derived_at`). `underived(query_id)` lists the batches a crash
     left between the two, for the job to derive when it restarts. (`commit(...,
     derive=fn)` does both in one.)

With a `retry` policy (the job's: settings warehouse.retry_*), every one of these rides out
a transient outage of the database (pipelines/warehouse/retry.py): each is one transaction
or one read, tried again after the database is back. A commit or derivation tried again
first checks the ledger, since one whose acknowledgement was lost may have been applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pipelines.contract.reasons import PARSE_ERRORS
from pipelines.crashpoints import crash_point
from pipelines.errors import SafewatchError
from pipelines.metrics.buckets import (
    CounterBuckets,
    add_counter_buckets,
    encode_counter_buckets,
    read_counter_buckets,
)
from pipelines.metrics.catalog import counter_ids
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.metrics.sketches import merge_sketches
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.warehouse.bulk import execute_many
from pipelines.warehouse.engine import describe
from pipelines.warehouse.retry import RetryPolicy, retrying
from pipelines.warehouse.tables import Tables, as_utc

T = TypeVar("T")

_CHUNK = 200  # rows per INSERT statement; keeps SQLite under its bound-parameter limit
SEGMENT_KEY = ("window_start", "dimension_set", *SEGMENT_DIMENSIONS)


def counted_columns() -> tuple[str, ...]:
    """Columns of segment_window_agg that batches add to."""
    return counter_ids()


class OffsetsAlreadyIngestedError(SafewatchError):
    """The batch's Kafka offsets were already counted by another query (checkpoint reset)."""


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    start: int  # first offset in the batch
    end: int  # last offset in the batch (inclusive)
    rows: int


@dataclass(frozen=True)
class BatchResult:
    query_id: str
    batch_id: int
    topic: str
    started_at: datetime
    input_rows: int
    late_rows: int
    aggregated_rows: int
    watermark_before: datetime | None
    watermark_after: datetime | None
    offsets: Sequence[OffsetRange]
    # Each aggregate: window_start, window_end, dimension_set, all SEGMENT_DIMENSIONS, every
    # counter of COUNTED_COLUMNS and users_sketch (serialized HLL sketch bytes or None);
    # optionally bucket_sums (pipelines.metrics.buckets.CounterBuckets: counter id -> sums
    # per user bucket) and slice_sums (the same, per slice of the window), added to the
    # stored sums.
    aggregates: Sequence[dict[str, Any]] = field(default_factory=list)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    duplicate_rows: int = 0
    dlq_rows: int = 0
    max_event_time: datetime | None = None
    quality_success: bool | None = None
    quality_rows: Sequence[dict[str, Any]] = field(default_factory=list)
    # Each histogram row: window_start, dimension_set, all SEGMENT_DIMENSIONS, distribution,
    # bin, count.
    histograms: Sequence[dict[str, Any]] = field(default_factory=list)
    # Dimension values this batch admitted (cardinality control): dimension, value, events.
    admissions: Sequence[tuple[str, str, int]] = field(default_factory=list)
    # Rejected and late records, without payload (pipelines.stream.dlq.rejected_event).
    rejected_events: Sequence[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def parse_errors(self) -> int:
        """Records that were not a readable event at all (kept for the ledger's column):
        also those whose check failed unexpectedly (unprocessable), which keep no event.
        """
        return sum(self.rejected_by_reason.get(r, 0) for r in PARSE_ERRORS)


@dataclass(frozen=True)
class ReplacedWindows:
    """What `WarehouseSink.replace_windows` did (also logged in backfill_runs)."""

    run_id: int
    rows_deleted: int
    rows_written: int


# batch_ledger.duration_ms is an INTEGER (PostgreSQL: 32 bits, ~24.8 days of milliseconds).
_MAX_DURATION_MS = 2**31 - 1


def ledger_duration_ms(elapsed: timedelta) -> int:
    """A batch's duration for batch_ledger.duration_ms, within the column's range: a batch
    whose start time is weeks old (a result built from a replay, a wrong clock) or in the
    future is recorded at the bound, not a failed commit.
    """
    return max(0, min(_MAX_DURATION_MS, int(elapsed.total_seconds() * 1000)))


def added_sums(
    stored_row: bool, stored: bytes | None, added: CounterBuckets | None
) -> bytes | None:
    """The stored form of per-part counter sums (bucket_sums, slice_sums) after a batch
    adds `added` to a row (`stored_row`: the row exists, holding `stored`). Sums add up
    like the counters; a row stored or added without them (counted before they were kept),
    or whose sums do not have the same parts (a changed setting), keeps none (NULL): its
    sums are unknown, and its readers fall back (docs/warehouse.md).
    """
    stored_sums = read_counter_buckets(stored)
    if added is None or (stored_row and stored_sums is None):
        return None
    try:
        return encode_counter_buckets(add_counter_buckets(stored_sums, added))
    except ValueError:
        return None


class WarehouseSink:
    """The job's reads and writes of the warehouse (see the module docstring); with `retry`,
    each one tried again through a transient outage, logging to `log`.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        users_lg_k: int = 11,
        retry: RetryPolicy | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.engine = engine
        self.tables = Tables(engine)
        self.users_lg_k = users_lg_k
        self.retry = retry
        self.log = log

    def _retrying(self, what: str, work: Callable[[], T]) -> T:
        if self.retry is None:
            return work()
        return retrying(
            work, policy=self.retry, what=what, target=describe(self.engine), log=self.log
        )

    def set_min_distinct_users(self, k: int) -> None:
        """The k below which the analyst view v_segment_window hides a row."""
        with self.engine.begin() as conn:
            conn.execute(
                self.tables.analyst_settings.update()
                .where(self.tables.analyst_settings.c.id == 1)
                .values(min_distinct_users=k)
            )

    def is_committed(self, query_id: str, batch_id: int) -> bool:
        row = self._retrying(
            f"reading the ledger row of batch {batch_id}",
            lambda: self._ledger_row(query_id, batch_id),
        )
        return row is not None

    def _ledger_row(self, query_id: str, batch_id: int) -> Any:
        """The batch's ledger row (aggregate_rows_written, derived_at), or None; read once,
        not retried (a try of a retried unit of work reads it).
        """
        ledger = self.tables.ledger
        with self.engine.connect() as conn:
            return conn.execute(
                select(ledger.c.aggregate_rows_written, ledger.c.derived_at).where(
                    and_(ledger.c.query_id == query_id, ledger.c.batch_id == batch_id)
                )
            ).first()

    def watermark(self, query_id: str) -> datetime | None:
        ledger = self.tables.ledger

        def read() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(func.max(ledger.c.watermark_after)).where(ledger.c.query_id == query_id)
                ).scalar()

        return as_utc(self._retrying("reading the watermark from the ledger", read))

    def admitted_values(self) -> dict[str, set[str]]:
        """Dimension -> the values admitted so far by cardinality control."""
        t = self.tables.dimension_values

        def read() -> dict[str, set[str]]:
            found: dict[str, set[str]] = {}
            with self.engine.connect() as conn:
                for dim, value in conn.execute(select(t.c.dimension, t.c.value)):
                    found.setdefault(dim, set()).add(value)
            return found

        return self._retrying("reading the admitted dimension values", read)

    def sync_distribution_bins(self) -> None:
        """Write the bins of every distribution to distribution_bins (for analysts' joins)."""
        t = self.tables.bins
        rows = []
        for d in DISTRIBUTIONS:
            for i in range(d.bins):
                numeric = d.kind == "numeric"
                rows.append(
                    {
                        "distribution": d.id,
                        "bin": i,
                        "label": d.bin_label(i),
                        "lower": d.edges[i] if numeric else None,
                        "upper": d.edges[i + 1] if numeric else None,
                    }
                )
        with self.engine.begin() as conn:
            conn.execute(t.delete())
            for i in range(0, len(rows), _CHUNK):
                conn.execute(t.insert(), rows[i : i + _CHUNK])

    def commit(
        self,
        result: BatchResult,
        *,
        now: datetime | None = None,
        derive: Callable[[Connection], None] | None = None,
    ) -> int:
        """Write the batch in one transaction; returns the number of aggregate rows touched.

        `derive(conn)` runs last inside the transaction, so what it derives from the stored
        rows (drift statistics) commits or fails together with the batch, and the ledger row
        is marked derived. Without it the batch is derived later (`derive`). Raises
        OffsetsAlreadyIngestedError (and writes nothing) when another query already counted
        any of these offsets. With a retry policy, a try after a transient failure first
        reads the ledger: a batch found there was committed by the try whose acknowledgement
        was lost, and its stored count of aggregate rows is returned.
        """
        committed_at = now or datetime.now(UTC)
        tried = False

        def attempt() -> int:
            nonlocal tried
            if tried:
                row = self._ledger_row(result.query_id, result.batch_id)
                if row is not None:
                    return int(row.aggregate_rows_written)
            tried = True
            return self._commit(result, committed_at, derive)

        return self._retrying(f"committing batch {result.batch_id}", attempt)

    def _commit(
        self,
        result: BatchResult,
        committed_at: datetime,
        derive: Callable[[Connection], None] | None,
    ) -> int:
        with self.engine.begin() as conn:
            self._check_offsets(conn, result)
            written = self._upsert_aggregates(conn, result, committed_at)
            self._upsert_histograms(conn, result)
            if result.admissions:
                conn.execute(
                    self.tables.dimension_values.insert(),
                    [
                        {
                            "dimension": dim,
                            "value": value,
                            "events_when_admitted": events,
                            "query_id": result.query_id,
                            "batch_id": result.batch_id,
                            "admitted_at": committed_at,
                        }
                        for dim, value, events in result.admissions
                    ],
                )
            conn.execute(
                self.tables.ledger.insert().values(
                    query_id=result.query_id,
                    batch_id=result.batch_id,
                    topic=result.topic,
                    started_at=result.started_at,
                    committed_at=committed_at,
                    duration_ms=ledger_duration_ms(committed_at - result.started_at),
                    input_rows=result.input_rows,
                    parse_errors=result.parse_errors,
                    late_rows=result.late_rows,
                    aggregated_rows=result.aggregated_rows,
                    aggregate_rows_written=written,
                    rejected_rows=result.rejected_rows,
                    rejected_by_reason=json.dumps(result.rejected_by_reason, sort_keys=True),
                    duplicate_rows=result.duplicate_rows,
                    dlq_rows=result.dlq_rows,
                    max_event_time=result.max_event_time,
                    quality_success=result.quality_success,
                    watermark_before=result.watermark_before,
                    watermark_after=result.watermark_after,
                    derived_at=committed_at if derive is not None else None,
                    offsets=json.dumps(
                        {f"{o.topic}:{o.partition}": [o.start, o.end] for o in result.offsets},
                        sort_keys=True,
                    ),
                )
            )
            if result.quality_rows:
                conn.execute(
                    self.tables.quality.insert(),
                    [
                        {**row, "query_id": result.query_id, "batch_id": result.batch_id}
                        for row in result.quality_rows
                    ],
                )
            if result.rejected_events:
                conn.execute(
                    self.tables.rejected.insert(),
                    [
                        {
                            **row,
                            "query_id": result.query_id,
                            "batch_id": result.batch_id,
                            "recorded_at": committed_at,
                        }
                        for row in result.rejected_events
                    ],
                )
            if result.offsets:
                conn.execute(
                    self.tables.offsets.insert(),
                    [
                        {
                            "topic": o.topic,
                            "kafka_partition": o.partition,
                            "start_offset": o.start,
                            "end_offset": o.end,
                            "query_id": result.query_id,
                            "batch_id": result.batch_id,
                        }
                        for o in result.offsets
                    ],
                )
            if derive is not None:
                derive(conn)
            crash_point("in-commit", result.batch_id)
        return written

    def derive(
        self,
        query_id: str,
        batch_id: int,
        derive: Callable[[Connection], None],
        *,
        now: datetime | None = None,
        quality: tuple[bool, Sequence[dict[str, Any]]] | None = None,
    ) -> None:
        """Run `derive(conn)` for a committed batch and mark it derived, in one transaction;
        with `quality` (success, result rows), also record the batch's quality results.
        With a retry policy `derive` may run again after a transient failure (its earlier
        transaction rolled back): it must start afresh each time. A try that finds the batch
        already derived (the acknowledgement was lost) does nothing.
        """
        tried = False

        def attempt() -> None:
            nonlocal tried
            if tried:
                row = self._ledger_row(query_id, batch_id)
                if row is not None and row.derived_at is not None:
                    return
            tried = True
            self._derive(query_id, batch_id, derive, now, quality)

        self._retrying(f"deriving batch {batch_id}", attempt)

    def _derive(
        self,
        query_id: str,
        batch_id: int,
        derive: Callable[[Connection], None],
        now: datetime | None,
        quality: tuple[bool, Sequence[dict[str, Any]]] | None,
    ) -> None:
        ledger = self.tables.ledger
        with self.engine.begin() as conn:
            derive(conn)
            done: dict[str, Any] = {"derived_at": now or datetime.now(UTC)}
            if quality is not None:
                success, rows = quality
                done["quality_success"] = success
                if rows:
                    conn.execute(
                        self.tables.quality.insert(),
                        [{**row, "query_id": query_id, "batch_id": batch_id} for row in rows],
                    )
            conn.execute(
                ledger.update()
                .where(ledger.c.query_id == query_id, ledger.c.batch_id == batch_id)
                .values(**done)
            )

    def underived(self, query_id: str) -> list[tuple[int, datetime | None, datetime | None]]:
        """(batch id, watermark before, after) of the query's committed batches not yet
        derived, in batch order: what a crash between a commit and its derivation left.
        """
        ledger = self.tables.ledger
        stmt = (
            select(ledger.c.batch_id, ledger.c.watermark_before, ledger.c.watermark_after)
            .where(ledger.c.query_id == query_id, ledger.c.derived_at.is_(None))
            .order_by(ledger.c.batch_id)
        )

        def read() -> list[tuple[int, datetime | None, datetime | None]]:
            with self.engine.connect() as conn:
                return [
                    (int(b), as_utc(before), as_utc(after))
                    for b, before, after in conn.execute(stmt)
                ]

        return self._retrying("reading the ledger's underived batches", read)

    def replace_windows(
        self,
        run: dict[str, Any],
        *,
        aggregates: Sequence[dict[str, Any]],
        histograms: Sequence[dict[str, Any]],
        admissions: Sequence[tuple[str, str, int]],
        now: datetime,
        derive: Callable[[Connection], None] | None = None,
    ) -> ReplacedWindows:
        """Replace every window of [run.period_start, run.period_end) of run.dimension_set.

        One transaction: the period's aggregates, histograms, drift and rate tests are
        deleted and the recomputed rows inserted; the run is logged in backfill_runs, whose
        negated id the rows carry as batch ids. Running it again with the same rows leaves
        the same tables.
        """
        t = self.tables
        since, until, dimension_set = run["period_start"], run["period_end"], run["dimension_set"]
        with self.engine.begin() as conn:
            inserted = conn.execute(
                t.backfill_runs.insert().values(
                    **run,
                    aggregate_rows_deleted=0,
                    aggregate_rows_written=0,
                    histogram_rows_written=len(histograms),
                    committed_at=now,
                )
            ).inserted_primary_key
            assert inserted is not None
            run_id = int(inserted[0])
            deleted = 0
            for table in (t.agg, t.hist, t.drift, t.rate_tests):
                done = conn.execute(
                    table.delete().where(
                        table.c.window_start >= since,
                        table.c.window_start < until,
                        table.c.dimension_set == dimension_set,
                    )
                )
                if table is t.agg:
                    deleted = done.rowcount
            if admissions:
                conn.execute(
                    t.dimension_values.insert(),
                    [
                        {
                            "dimension": dim,
                            "value": value,
                            "events_when_admitted": events,
                            "query_id": "backfill",
                            "batch_id": -run_id,
                            "admitted_at": now,
                        }
                        for dim, value, events in admissions
                    ],
                )
            result = BatchResult(
                query_id="backfill",
                batch_id=-run_id,
                topic="",
                started_at=run["started_at"],
                input_rows=0,
                late_rows=0,
                aggregated_rows=0,
                watermark_before=None,
                watermark_after=None,
                offsets=[],
                aggregates=aggregates,
                histograms=histograms,
            )
            written = self._upsert_aggregates(conn, result, now)
            self._upsert_histograms(conn, result)
            conn.execute(
                t.backfill_runs.update()
                .where(t.backfill_runs.c.id == run_id)
                .values(aggregate_rows_deleted=deleted, aggregate_rows_written=written)
            )
            if derive is not None:
                derive(conn)
        return ReplacedWindows(run_id, deleted, written)

    def _existing_sketches(
        self, conn: Connection, aggregates: Sequence[dict[str, Any]], key: list[str]
    ) -> dict[tuple[Any, ...], tuple[bytes | None, bytes | None, bytes | None]]:
        """The stored users_sketch, bucket_sums and slice_sums of the rows the batch adds to."""
        t = self.tables.agg
        windows = sorted({row["window_start"] for row in aggregates})
        sets = sorted({row["dimension_set"] for row in aggregates})
        found: dict[tuple[Any, ...], tuple[bytes | None, bytes | None, bytes | None]] = {}
        for i in range(0, len(windows), _CHUNK):
            stmt = select(
                *[t.c[k] for k in key], t.c.users_sketch, t.c.bucket_sums, t.c.slice_sums
            ).where(
                and_(t.c.window_start.in_(windows[i : i + _CHUNK]), t.c.dimension_set.in_(sets))
            )
            for r in conn.execute(stmt).mappings():
                values = tuple(as_utc(r[k]) if k == "window_start" else r[k] for k in key)
                found[values] = (r["users_sketch"], r["bucket_sums"], r["slice_sums"])
        return found

    def recent_batches(self, query_id: str, not_before: datetime | None) -> list[int]:
        """Committed batches of the query that may hold events at or after `not_before`."""
        ledger = self.tables.ledger
        stmt = select(ledger.c.batch_id).where(ledger.c.query_id == query_id)
        if not_before is not None:
            stmt = stmt.where(ledger.c.max_event_time >= not_before)
        stmt = stmt.where(ledger.c.max_event_time.is_not(None))
        return self._retrying("reading recent batches from the ledger", lambda: self._ids(stmt))

    def stale_batches(
        self, query_id: str, watermark: datetime, since: datetime | None = None
    ) -> list[int]:
        """Committed batches whose newest event is behind `watermark` (and, with `since`, not
        behind that earlier watermark: those became stale before and were handled then).
        """
        ledger = self.tables.ledger
        stmt = select(ledger.c.batch_id).where(
            and_(ledger.c.query_id == query_id, ledger.c.max_event_time < watermark)
        )
        if since is not None:
            stmt = stmt.where(ledger.c.max_event_time >= since)
        return self._retrying("reading stale batches from the ledger", lambda: self._ids(stmt))

    def _ids(self, stmt: Any) -> list[int]:
        with self.engine.connect() as conn:
            return sorted(conn.scalars(stmt))

    def _check_offsets(self, conn: Connection, result: BatchResult) -> None:
        t = self.tables.offsets
        for o in result.offsets:
            clash = conn.execute(
                select(t.c.query_id, t.c.batch_id, t.c.start_offset, t.c.end_offset).where(
                    and_(
                        t.c.topic == o.topic,
                        t.c.kafka_partition == o.partition,
                        t.c.start_offset <= o.end,
                        t.c.end_offset >= o.start,
                    )
                )
            ).first()
            if clash is not None:
                msg = (
                    f"offsets {o.start}..{o.end} of {o.topic}[{o.partition}] were already counted "
                    f"by query {clash.query_id} batch {clash.batch_id}: the checkpoint was reset "
                    "or another job reads the same topic into this warehouse. Restore the "
                    "checkpoint (setting stream.checkpoint_dir) or point the job at an empty "
                    "warehouse; nothing was written."
                )
                raise OffsetsAlreadyIngestedError(msg)

    def _upsert_aggregates(
        self, conn: Connection, result: BatchResult, committed_at: datetime
    ) -> int:
        if not result.aggregates:
            return 0
        t = self.tables.agg
        counters = counted_columns()
        key = list(SEGMENT_KEY)
        existing = self._existing_sketches(conn, result.aggregates, key)
        rows = []
        for row in result.aggregates:
            # Distinct counts do not add up: merge the batch's sketch with the stored one
            # (one writer per warehouse table, inside this transaction).
            stored_sketch, stored_buckets, stored_slices = existing.get(
                tuple(row[k] for k in key), (None, None, None)
            )
            sketch, distinct = merge_sketches(
                [stored_sketch, row.get("users_sketch")], self.users_lg_k
            )
            stored_row = tuple(row[k] for k in key) in existing
            rows.append(
                {
                    **{k: row[k] for k in ("window_start", "window_end", *key[1:], *counters)},
                    "users_sketch": sketch,
                    "bucket_sums": added_sums(stored_row, stored_buckets, row.get("bucket_sums")),
                    "slice_sums": added_sums(stored_row, stored_slices, row.get("slice_sums")),
                    "distinct_users": distinct,
                    "first_batch_id": result.batch_id,
                    "last_batch_id": result.batch_id,
                    "updated_at": committed_at,
                }
            )
        # One statement executed with many parameter sets: compiled once, batched by the driver.
        stmt = upsert_for(conn)(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=key,
            set_={
                **{c: t.c[c] + stmt.excluded[c] for c in counters},
                "users_sketch": stmt.excluded.users_sketch,
                "bucket_sums": stmt.excluded.bucket_sums,
                "slice_sums": stmt.excluded.slice_sums,
                "distinct_users": stmt.excluded.distinct_users,
                "last_batch_id": stmt.excluded.last_batch_id,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        conn.execute(stmt, rows)
        return len(rows)

    def _upsert_histograms(self, conn: Connection, result: BatchResult) -> None:
        if not result.histograms:
            return
        t = self.tables.hist
        key = [*SEGMENT_KEY, "distribution", "bin"]
        stmt = upsert_for(conn)(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=key, set_={"count": t.c["count"] + stmt.excluded["count"]}
        )
        columns = [*key, "count"]
        rows = list(map(itemgetter(*columns), result.histograms))  # ~60,000 rows: C, not a loop
        execute_many(conn, stmt, t, columns, rows)


def upsert_for(conn: Connection) -> Any:
    """The dialect's INSERT that supports ON CONFLICT (SQLite and PostgreSQL)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    msg = f"warehouse dialect {dialect!r} is not supported (use SQLite or PostgreSQL)"
    raise SafewatchError(msg)
