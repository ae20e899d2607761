"""Backfill: recompute a period's aggregates from retained Kafka records or a JSONL archive.

The records go through the same classification and metric definitions as the streaming
batches (`BatchProcessor.recompute`); the period's windows are then replaced in one
transaction (`WarehouseSink.replace_windows`) and their drift recomputed. Re-running the
same backfill leaves the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from pipelines.drift.compute import compute_drift
from pipelines.durations import parse_duration
from pipelines.errors import SafewatchError
from pipelines.settings import Settings
from pipelines.stream.batch import BatchProcessor
from pipelines.warehouse.migrate import open_warehouse
from pipelines.warehouse.retry import RetryPolicy
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import as_utc

RAW_SCHEMA = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
    ]
)


@dataclass(frozen=True)
class BackfillReport:
    run_id: int
    since: datetime
    until: datetime
    source: str
    input_rows: int
    aggregated_events: int
    outside_events: int
    duplicate_rows: int
    rejected_by_reason: dict[str, int]
    rows_deleted: int
    rows_written: int
    folded_rows: int  # aggregate rows whose segment had a value counted as `other`
    drift_windows: int
    seconds: float

    def describe(self) -> str:
        rejects = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected_by_reason.items()))
        rejected = sum(self.rejected_by_reason.values())
        return (
            f"backfill {self.run_id}: {self.since:%Y-%m-%d %H:%M} .. {self.until:%Y-%m-%d %H:%M} "
            f"from {self.source}: {self.input_rows} records read, "
            f"{self.aggregated_events} events counted in the period "
            f"({self.outside_events} outside it, {self.duplicate_rows} duplicates, "
            f"{rejected} rejected{f': {rejects}' if rejects else ''}); "
            f"{self.rows_deleted} aggregate rows replaced by {self.rows_written}"
            f"{f' ({self.folded_rows} folded into other)' if self.folded_rows else ''}; "
            f"drift for {self.drift_windows} window(s); {self.seconds:.1f} s"
        )


def align(since: datetime, until: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """Widen [since, until) to whole windows (windows are aligned to the Unix epoch)."""
    if until <= since:
        msg = f"--to ({until:%Y-%m-%dT%H:%M:%SZ}) must be after --from ({since:%Y-%m-%dT%H:%M:%SZ})"
        raise SafewatchError(msg)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start = epoch + ((since - epoch) // window) * window
    end = epoch + -((epoch - until) // window) * window
    return start, end


def kafka_records(
    spark: SparkSession, settings: Settings, since: datetime, until: datetime
) -> DataFrame:
    """The topic's retained records that can hold events of [since, until).

    From the first record produced at or after `since - contract.max_future` (an event can
    not be further ahead of its Kafka timestamp) to the end of the topic: late arrivals count.
    """
    earliest = since - parse_duration(settings.contract.max_future)
    return (
        spark.read.format("kafka")
        .options(**settings.kafka.spark_options())
        .option("subscribe", settings.kafka.topic_interactions)
        .option("startingTimestamp", str(int(earliest.timestamp() * 1000)))
        .option("startingOffsetsByTimestampStrategy", "latest")
        .option("endingOffsets", "latest")
        .load()
        .select(*RAW_SCHEMA.fieldNames())
    )


def archive_records(spark: SparkSession, paths: Sequence[Path]) -> DataFrame:
    """JSONL files, one event per line, as Kafka-shaped records.

    Each file is a partition of topic `archive:<file name>` and the line number (from 0) is
    the offset, so rejects name the line. An archive has no arrival time: the event's own
    event_time stands in for the Kafka timestamp, so the arrival-time range check passes.
    """
    frames = []
    for index, path in enumerate(paths):
        if not path.is_file():
            msg = f"no such archive file: {path}"
            raise SafewatchError(msg)
        lines = spark.read.text(str(path)).rdd.zipWithIndex()
        frame = spark.createDataFrame(
            lines.map(lambda pair: (pair[0][0], pair[1])),
            T.StructType(
                [T.StructField("line", T.StringType()), T.StructField("offset", T.LongType())]
            ),
        )
        event_time = F.to_timestamp(F.get_json_object("line", "$.event_time"))
        frames.append(
            frame.select(
                F.lit(None).cast("binary").alias("key"),
                F.col("line").cast("binary").alias("value"),
                F.lit(f"archive:{path.name}").alias("topic"),
                F.lit(index).alias("partition"),
                F.col("offset"),
                F.coalesce(event_time, F.lit(datetime(1970, 1, 1, tzinfo=UTC))).alias("timestamp"),
            )
        )
    if not frames:
        msg = "no archive file given"
        raise SafewatchError(msg)
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def run_backfill(
    spark: SparkSession,
    settings: Settings,
    *,
    since: datetime,
    until: datetime,
    archives: Sequence[Path] = (),
    force: bool = False,
    log: Callable[[str], None] = print,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackfillReport:
    """Recompute and replace the windows of [since, until) (widened to whole windows)."""
    started = now()
    window = parse_duration(settings.stream.window)
    since, until = align(since, until, window)
    engine = open_warehouse(settings.warehouse, log=log)
    sink = WarehouseSink(
        engine,
        users_lg_k=settings.privacy.users_sketch_lg_k,
        retry=RetryPolicy.of(settings.warehouse),
        log=log,
    )
    sink.sync_distribution_bins()
    watermark = _oldest_watermark(sink)
    if watermark is not None and until > watermark and not force:
        msg = (
            f"windows up to {until:%Y-%m-%d %H:%M} are not all closed: the streaming job's "
            f"watermark is {watermark:%Y-%m-%d %H:%M}, and it still adds to later windows. "
            "Backfill an earlier period, or pass --force if that job is stopped for good."
        )
        raise SafewatchError(msg)
    if archives:
        source = "archive " + ", ".join(str(p) for p in archives)
        raw = archive_records(spark, archives)
    else:
        source = f"Kafka topic {settings.kafka.topic_interactions}"
        raw = kafka_records(spark, settings, since, until)
    log(f"backfill: reading {source} for {since:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M} UTC")
    processor = BatchProcessor(sink, settings, log=log)
    result, stages = processor.recompute(raw, since=since, until=until)
    log(
        "backfill: classified and aggregated "
        + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
    )
    dims = settings.stream.dimensions
    windows = sorted({r["window_start"] for r in result.aggregates})
    drift_windows: list[datetime] = []

    def derive(conn: Connection) -> None:
        if settings.drift.enabled and windows:
            compute_drift(
                conn,
                sink.tables,
                windows,
                dimensions=dims,
                settings=settings.drift,
                now=now(),
            )
            drift_windows.extend(windows)

    run = {
        "period_start": since,
        "period_end": until,
        "dimension_set": ",".join(dims),
        "source": source,
        "input_rows": result.input_rows,
        "aggregated_events": result.aggregated_events,
        "outside_events": result.outside_events,
        "duplicate_rows": result.duplicate_rows,
        "rejected_by_reason": json.dumps(result.rejected_by_reason, sort_keys=True),
        "started_at": started,
    }
    replaced = sink.replace_windows(
        run,
        aggregates=result.aggregates,
        histograms=result.histograms,
        admissions=result.admissions,
        now=now(),
        derive=derive,
    )
    return BackfillReport(
        run_id=replaced.run_id,
        since=since,
        until=until,
        source=source,
        input_rows=result.input_rows,
        aggregated_events=result.aggregated_events,
        outside_events=result.outside_events,
        duplicate_rows=result.duplicate_rows,
        rejected_by_reason=result.rejected_by_reason,
        rows_deleted=replaced.rows_deleted,
        rows_written=replaced.rows_written,
        folded_rows=result.folded_rows,
        drift_windows=len(drift_windows),
        seconds=(now() - started).total_seconds(),
    )


def _oldest_watermark(sink: WarehouseSink) -> datetime | None:
    """The lowest of the latest watermarks of the streaming queries in the ledger."""
    t = sink.tables.ledger
    with sink.engine.connect() as conn:
        latest = (
            select(t.c.query_id, func.max(t.c.watermark_after).label("wm"))
            .group_by(t.c.query_id)
            .subquery()
        )
        value = conn.execute(select(func.min(latest.c.wm))).scalar()
    return as_utc(value)
