"""Aggregate classified records per tumbling event-time window x segment (pure DataFrames).

Nothing here starts a query or touches I/O, so the same functions serve the streaming job,
a backfill over a static DataFrame, and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.metrics.catalog import EVENT_COUNTERS, telemetry_counter_ids
from pipelines.metrics.distributions import DISTRIBUTIONS, Distribution
from pipelines.settings import SEGMENT_DIMENSIONS
from pipelines.stream.classify import AGGREGATED
from pipelines.warehouse.tables import ALL_DIMENSIONS_VALUE

UNKNOWN_VALUE = "unknown"
TELEMETRY_COUNTERS = telemetry_counter_ids()


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
        *[
            F.coalesce(F.expr(c.predicate or "false"), F.lit(False)).cast("long").alias(c.id)
            for c in EVENT_COUNTERS
        ],
        *[zero.alias(t) for t in TELEMETRY_COUNTERS],
    )
    seen = telemetry.select(
        F.col("event_time"),
        F.col("segment"),
        F.lit(None).cast("string").alias("user_id"),
        *[zero.alias(c.id) for c in EVENT_COUNTERS],
        F.lit(1).cast("long").alias("events_seen"),
        F.col("telemetry_complete").cast("long").alias("telemetry_complete"),
        F.col("redaction_failure").cast("long").alias("redaction_failures"),
    )
    rows = counted.unionByName(seen)
    w = F.window(F.col("event_time"), window)
    grouped = rows.groupBy(w.alias("w"), *[_dimension(d, dimensions) for d in SEGMENT_DIMENSIONS])
    sums = [F.sum(c.id).alias(c.id) for c in EVENT_COUNTERS] + [
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
        *[c.id for c in EVENT_COUNTERS],
        *TELEMETRY_COUNTERS,
        "users_sketch",
    )


def _bin_indexes(index: int, d: Distribution) -> Column:
    """array<struct<d, bin>>: the bin(s) one event counts in for distribution `d`."""
    value = F.expr(d.expression)
    if d.kind == "numeric":
        # The number of inner edges <= value is the bin index; below the first edge gives 0
        # and at or above the last gives the last bin (values are clipped, never dropped).
        inner = F.array(*[F.lit(float(e)) for e in d.edges[1:-1]])
        bins = F.array(F.size(F.filter(inner, lambda e: e <= value.cast("double"))))
    else:
        values = F.array(*[F.lit(v) for v in d.values])
        if d.kind == "multi":
            present = F.when(F.size(value) == 0, F.array(F.lit(d.values[0]))).otherwise(value)
            bins = F.transform(present, lambda v: F.array_position(values, v).cast("int") - 1)
        else:
            bins = F.array(F.array_position(values, value).cast("int") - 1)
    return F.transform(bins, lambda b: F.struct(F.lit(index).alias("d"), b.alias("bin")))


def window_segment_histograms(
    aggregated: DataFrame, *, window: str, dimensions: Sequence[str]
) -> DataFrame:
    """One row per window x segment x distribution x non-empty bin, with its event count.

    `d` is the index of the distribution in DISTRIBUTIONS; bins follow its definition.
    """
    flat = aggregated.select("event.*")
    entries = F.concat(*[_bin_indexes(i, d) for i, d in enumerate(DISTRIBUTIONS)])
    exploded = flat.select("event_time", "segment", F.explode(entries).alias("h"))
    w = F.window(F.col("event_time"), window)
    grouped = exploded.groupBy(
        w.alias("w"),
        *[_dimension(d, dimensions) for d in SEGMENT_DIMENSIONS],
        F.col("h.d").alias("d"),
        F.col("h.bin").alias("bin"),
    )
    return grouped.agg(F.count(F.lit(1)).alias("count")).select(
        F.unix_timestamp(F.col("w.start")).alias("window_start_s"),
        F.lit(",".join(dimensions)).alias("dimension_set"),
        *SEGMENT_DIMENSIONS,
        "d",
        "bin",
        "count",
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
