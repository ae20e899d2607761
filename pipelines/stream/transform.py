"""Aggregate classified records per tumbling event-time window x segment (pure DataFrames).

Nothing here starts a query or touches I/O, so the same functions serve the streaming job,
a backfill over a static DataFrame, and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.metrics.catalog import COUNTERS
from pipelines.settings import SEGMENT_DIMENSIONS
from pipelines.stream.classify import AGGREGATED
from pipelines.warehouse.tables import ALL_DIMENSIONS_VALUE

UNKNOWN_VALUE = "unknown"
TELEMETRY_COUNTERS = ("events_seen", "telemetry_complete", "redaction_failures")


def _dimension(name: str, dimensions: Sequence[str]) -> Column:
    if name in dimensions:
        return F.coalesce(F.col(f"segment.{name}"), F.lit(UNKNOWN_VALUE)).alias(name)
    return F.lit(ALL_DIMENSIONS_VALUE).alias(name)


def window_segment_counts(
    telemetry: DataFrame,
    aggregated: DataFrame,
    *,
    window: str,
    dimensions: Sequence[str],
    users_lg_k: int,
) -> DataFrame:
    """One row per window x segment: every catalog counter, the telemetry counters and a
    HyperLogLog sketch of the aggregated events' user ids.

    `telemetry` comes from `classify.telemetry_rows` (event_time, segment, telemetry_complete,
    redaction_failure); `aggregated` holds the parsed `event` of the aggregated records.
    Catalog predicates see the event's fields at top level (`moderation.action`). Dimensions
    not grouped by get '*'. Window bounds come back as epoch seconds (UTC), which avoids any
    time-zone conversion between the JVM and Python.
    """
    zero = F.lit(0).cast("long")
    flat = aggregated.select("event.*")
    counted = flat.select(
        F.col("event_time"),
        F.col("segment"),
        F.col("user_id"),
        *[F.coalesce(F.expr(c.predicate), F.lit(False)).cast("long").alias(c.id) for c in COUNTERS],
        *[zero.alias(t) for t in TELEMETRY_COUNTERS],
    )
    seen = telemetry.select(
        F.col("event_time"),
        F.col("segment"),
        F.lit(None).cast("string").alias("user_id"),
        *[zero.alias(c.id) for c in COUNTERS],
        F.lit(1).cast("long").alias("events_seen"),
        F.col("telemetry_complete").cast("long").alias("telemetry_complete"),
        F.col("redaction_failure").cast("long").alias("redaction_failures"),
    )
    rows = counted.unionByName(seen)
    w = F.window(F.col("event_time"), window)
    grouped = rows.groupBy(w.alias("w"), *[_dimension(d, dimensions) for d in SEGMENT_DIMENSIONS])
    sums = [F.sum(c.id).alias(c.id) for c in COUNTERS] + [
        F.sum(t).alias(t) for t in TELEMETRY_COUNTERS
    ]
    return grouped.agg(
        *sums,
        F.hll_sketch_agg(F.col("user_id"), users_lg_k).alias("users_sketch"),
    ).select(
        F.unix_timestamp(F.col("w.start")).alias("window_start_s"),
        F.unix_timestamp(F.col("w.end")).alias("window_end_s"),
        F.lit(",".join(dimensions)).alias("dimension_set"),
        *SEGMENT_DIMENSIONS,
        *[c.id for c in COUNTERS],
        *TELEMETRY_COUNTERS,
        "users_sketch",
    )


def aggregated_events(verdicts: DataFrame) -> DataFrame:
    return verdicts.where(F.col("status") == AGGREGATED).select("event")


def batch_statistics(verdicts: DataFrame) -> DataFrame:
    """Per Kafka partition and status: offset range, rows, max event time (epoch s)."""
    return verdicts.groupBy("topic", "partition", "status").agg(
        F.min("offset").alias("start_offset"),
        F.max("offset").alias("end_offset"),
        F.count(F.lit(1)).alias("rows"),
        F.max(F.unix_timestamp("event.event_time")).alias("max_event_time_s"),
    )
