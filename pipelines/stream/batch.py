"""The foreachBatch body: classify one micro-batch, aggregate it, commit it to the warehouse."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.metrics.catalog import counter_ids
from pipelines.settings import SEGMENT_DIMENSIONS, StreamSettings
from pipelines.stream.durations import parse_duration, spark_interval
from pipelines.stream.transform import (
    aggregate_window_segments,
    batch_statistics,
    classify_late,
    parse_kafka_records,
)
from pipelines.warehouse.sink import BatchResult, OffsetRange, WarehouseSink


@dataclass(frozen=True)
class BatchReport:
    batch_id: int
    skipped: bool
    input_rows: int = 0
    parse_errors: int = 0
    late_rows: int = 0
    aggregated_rows: int = 0
    aggregate_rows_written: int = 0
    seconds: float = 0.0
    watermark: datetime | None = None

    def describe(self) -> str:
        if self.skipped:
            return f"batch {self.batch_id}: already in the ledger, skipped (replay)"
        wm = self.watermark.strftime("%Y-%m-%d %H:%M:%S") if self.watermark else "none"
        return (
            f"batch {self.batch_id}: {self.input_rows} records -> {self.aggregated_rows} "
            f"aggregated, {self.parse_errors} unparseable, {self.late_rows} late; "
            f"{self.aggregate_rows_written} aggregate rows upserted in {self.seconds:.1f} s; "
            f"watermark {wm}"
        )


class BatchProcessor:
    """Callable for `DataStreamWriter.foreachBatch`; `bind_query` must follow `start()`.

    Idempotent per (query id, batch id): a batch id found in the ledger is skipped, so Spark's
    re-execution of the last batch after a crash changes nothing.
    """

    def __init__(
        self,
        sink: WarehouseSink,
        stream: StreamSettings,
        *,
        log: Callable[[str], None] = print,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self.sink = sink
        self.window = spark_interval(stream.window)
        self.watermark_delay: timedelta = parse_duration(stream.watermark)
        self.dimensions = stream.dimensions
        self.log = log
        self.clock = clock
        self.on_batch = on_batch
        self._query_id: str | None = None
        self._bound = threading.Event()

    def bind_query(self, query_id: str) -> None:
        self._query_id = query_id
        self._bound.set()

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        if not self._bound.wait(timeout=120) or self._query_id is None:
            msg = "BatchProcessor.bind_query was not called after the query started"
            raise RuntimeError(msg)
        report = self.process(df, batch_id, self._query_id)
        self.log(report.describe())
        if self.on_batch:
            self.on_batch(report)

    def process(self, df: DataFrame, batch_id: int, query_id: str) -> BatchReport:
        """Aggregate and commit `df` as batch `batch_id` of `query_id` (skipped if committed)."""
        if self.sink.is_committed(query_id, batch_id):
            return BatchReport(batch_id=batch_id, skipped=True)
        started = self.clock()
        watermark_before = self.sink.watermark(query_id)
        classified = classify_late(parse_kafka_records(df), watermark_before).persist()
        try:
            stats = batch_statistics(classified).collect()
            on_time = classified.where(~F.col("parse_error") & ~F.col("late"))
            aggregates = aggregate_window_segments(
                on_time, window=self.window, dimensions=self.dimensions
            ).collect()
        finally:
            classified.unpersist()

        input_rows = sum(s["rows"] for s in stats)
        parse_errors = sum(s["parse_errors"] for s in stats)
        late_rows = sum(s["late_rows"] for s in stats)
        max_times = [s["max_event_time_s"] for s in stats if s["max_event_time_s"] is not None]
        watermark_after = watermark_before
        if max_times:
            candidate = datetime.fromtimestamp(max(max_times), UTC) - self.watermark_delay
            if watermark_after is None or candidate > watermark_after:
                watermark_after = candidate
        rows = [_aggregate_row(r) for r in aggregates]
        result = BatchResult(
            query_id=query_id,
            batch_id=batch_id,
            topic=",".join(sorted({s["topic"] for s in stats})),
            started_at=started,
            input_rows=input_rows,
            parse_errors=parse_errors,
            late_rows=late_rows,
            aggregated_rows=sum(r["events"] for r in rows),
            watermark_before=watermark_before,
            watermark_after=watermark_after,
            offsets=[
                OffsetRange(
                    s["topic"], s["partition"], s["start_offset"], s["end_offset"], s["rows"]
                )
                for s in stats
            ],
            aggregates=rows,
        )
        written = self.sink.commit(result, now=self.clock())
        return BatchReport(
            batch_id=batch_id,
            skipped=False,
            input_rows=input_rows,
            parse_errors=parse_errors,
            late_rows=late_rows,
            aggregated_rows=result.aggregated_rows,
            aggregate_rows_written=written,
            seconds=(self.clock() - started).total_seconds(),
            watermark=watermark_after,
        )


def _aggregate_row(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "window_start": datetime.fromtimestamp(row["window_start_s"], UTC),
        "window_end": datetime.fromtimestamp(row["window_end_s"], UTC),
        "dimension_set": row["dimension_set"],
    }
    out.update({d: row[d] for d in SEGMENT_DIMENSIONS})
    out.update({c: int(row[c]) for c in counter_ids()})
    return out
