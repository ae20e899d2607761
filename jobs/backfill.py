"""Backfill: recompute a period's aggregates from retained Kafka records or a JSONL archive.

The records (`pipelines.stream.sources`) go through the same classification and metric
definitions as the streaming batches (`pipelines.stream.aggregate.Aggregator.recompute`);
the period's windows are then replaced in one transaction (`WarehouseSink.replace_windows`)
and their drift recomputed (`pipelines.drift.step.DriftStep`). Re-running the
same backfill leaves the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import SparkSession
from sqlalchemy.engine import Connection

from pipelines.drift.step import DriftStep
from pipelines.durations import parse_duration
from pipelines.errors import SafewatchError
from pipelines.settings import Settings
from pipelines.stream.aggregate import Aggregator
from pipelines.stream.sources import archive_records, kafka_records
from pipelines.warehouse.ledger import oldest_watermark
from pipelines.warehouse.migrate import open_warehouse
from pipelines.warehouse.retry import RetryPolicy
from pipelines.warehouse.sink import WarehouseSink
from pipelines.watermark import WatermarkMove, is_closed


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
    with engine.connect() as conn:
        watermark = oldest_watermark(conn, sink.tables)
    if watermark is not None and not is_closed(until, watermark) and not force:
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
    result, stages = Aggregator(settings).recompute(
        raw, since=since, until=until, admitted=sink.admitted_values()
    )
    log(
        "backfill: classified and aggregated "
        + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
    )
    dims = settings.stream.dimensions
    windows = sorted({r["window_start"] for r in result.aggregates})
    drift_windows: list[datetime] = []

    def derive(conn: Connection) -> None:
        if settings.drift.enabled:
            # The period's windows, as if a watermark move had just closed them.
            move = WatermarkMove(None, until, windows, now=now)
            drift_windows[:] = DriftStep(sink.tables, settings.drift, dims).run(conn, move)

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
