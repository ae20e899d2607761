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

What a batch hands the sink is in pipelines/warehouse/batch_result.py, the upserts that add
its counts to the stored rows in pipelines/warehouse/upsert.py, and the ledger's reads
(watermarks, committed batches and offsets) in pipelines/warehouse/ledger.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from pipelines.crashpoints import crash_point
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.warehouse import ledger
from pipelines.warehouse.batch_result import BatchResult, ReplacedWindows, ledger_duration_ms
from pipelines.warehouse.engine import describe
from pipelines.warehouse.retry import RetryPolicy, retrying
from pipelines.warehouse.tables import Tables
from pipelines.warehouse.upsert import CHUNK, upsert_aggregates, upsert_histograms

T = TypeVar("T")


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

    def _reading(self, what: str, read: Callable[[Connection], T]) -> T:
        """`read` on a connection of its own, tried again as `_retrying` does."""

        def work() -> T:
            with self.engine.connect() as conn:
                return read(conn)

        return self._retrying(what, work)

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
        with self.engine.connect() as conn:
            return ledger.ledger_row(conn, self.tables, query_id, batch_id)

    def watermark(self, query_id: str) -> datetime | None:
        return self._reading(
            "reading the watermark from the ledger",
            lambda conn: ledger.query_watermark(conn, self.tables, query_id),
        )

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
            for i in range(0, len(rows), CHUNK):
                conn.execute(t.insert(), rows[i : i + CHUNK])

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
            ledger.check_offsets(conn, self.tables, result.offsets)
            written = upsert_aggregates(
                conn,
                self.tables,
                result.aggregates,
                batch_id=result.batch_id,
                committed_at=committed_at,
                users_lg_k=self.users_lg_k,
            )
            upsert_histograms(conn, self.tables, result.histograms)
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
        t = self.tables.ledger
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
                t.update().where(t.c.query_id == query_id, t.c.batch_id == batch_id).values(**done)
            )

    def underived(self, query_id: str) -> list[tuple[int, datetime | None, datetime | None]]:
        """(batch id, watermark before, after) of the query's committed batches not yet
        derived, in batch order: what a crash between a commit and its derivation left.
        """
        return self._reading(
            "reading the ledger's underived batches",
            lambda conn: ledger.underived_batches(conn, self.tables, query_id),
        )

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
            written = upsert_aggregates(
                conn,
                t,
                aggregates,
                batch_id=-run_id,
                committed_at=now,
                users_lg_k=self.users_lg_k,
            )
            upsert_histograms(conn, t, histograms)
            conn.execute(
                t.backfill_runs.update()
                .where(t.backfill_runs.c.id == run_id)
                .values(aggregate_rows_deleted=deleted, aggregate_rows_written=written)
            )
            if derive is not None:
                derive(conn)
        return ReplacedWindows(run_id, deleted, written)

    def recent_batches(self, query_id: str, not_before: datetime | None) -> list[int]:
        """Committed batches of the query that may hold events at or after `not_before`."""
        return self._reading(
            "reading recent batches from the ledger",
            lambda conn: ledger.recent_batches(conn, self.tables, query_id, not_before),
        )

    def stale_batches(
        self, query_id: str, watermark: datetime, since: datetime | None = None
    ) -> list[int]:
        """Committed batches whose newest event is behind `watermark` (and, with `since`, not
        behind that earlier watermark: those became stale before and were handled then).
        """
        return self._reading(
            "reading stale batches from the ledger",
            lambda conn: ledger.stale_batches(conn, self.tables, query_id, watermark, since),
        )
