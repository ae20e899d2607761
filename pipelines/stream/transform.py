"""Aggregate classified records per tumbling event-time window x segment (pure DataFrames).

Nothing here starts a query or touches I/O, so the same functions serve the streaming job,
a backfill over a static DataFrame, and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.expressions import per_spark_context
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


# A histogram entry is one integer: distribution index * CODE_BASE + bin (bins < CODE_BASE).
CODE_BASE = 1024


def _numeric_bin(edges: tuple[float, ...], value: Column) -> Column:
    """The number of inner edges <= value: below the first edge gives 0, at or above the last
    the last bin (values are clipped, never dropped). A binary search written out as nested
    CASE: log2(bins) comparisons per event, all in generated code (no lambda per edge).
    """
    inner = [float(e) for e in edges[1:-1]]

    def search(lo: int, hi: int) -> Column:
        # inner[lo - 1] <= value < inner[hi] is known here.
        if lo == hi:
            return F.lit(lo)
        mid = (lo + hi) // 2
        return F.when(value >= F.lit(inner[mid]), search(mid + 1, hi)).otherwise(search(lo, mid))

    return F.coalesce(search(0, len(inner)), F.lit(0))


def _bin_codes(index: int, d: Distribution) -> Column:
    """array<int>: the histogram entries one event counts in for distribution `d`."""
    if d.bins > CODE_BASE:
        msg = f"distribution {d.id} has {d.bins} bins, more than {CODE_BASE}"
        raise ValueError(msg)
    value = F.expr(d.expression)
    base = index * CODE_BASE
    if d.kind == "numeric":
        return F.array(F.lit(base) + _numeric_bin(d.edges, value.cast("double")))
    if d.kind == "multi":
        # An event counts once in every bin whose value it holds, in the first (`none`)
        # when it holds none (the contract makes the items unique and known).
        held = F.array_compact(
            F.array(
                *[
                    F.when(F.array_contains(value, v), F.lit(base + i))
                    for i, v in enumerate(d.values)
                    if i > 0
                ]
            )
        )
        return F.when(F.size(held) == 0, F.array(F.lit(base))).otherwise(held)
    values = F.array(*[F.lit(v) for v in d.values])
    return F.array(F.lit(base - 1) + F.array_position(values, value).cast("int"))


@per_spark_context
def _histogram_codes() -> Column:
    """array<int>: every histogram entry of one event (its fields at top level)."""
    return F.concat(*[_bin_codes(i, d) for i, d in enumerate(DISTRIBUTIONS)])


def window_segment_histograms(
    aggregated: DataFrame, *, window: str, dimensions: Sequence[str]
) -> DataFrame:
    """One row per window x segment x distribution x non-empty bin, with its event count.

    `d` is the index of the distribution in DISTRIBUTIONS; bins follow its definition.
    """
    flat = aggregated.select("event.*")
    exploded = flat.select("event_time", "segment", F.explode(_histogram_codes()).alias("code"))
    w = F.window(F.col("event_time"), window)
    grouped = exploded.groupBy(
        w.alias("w"), *[_dimension(d, dimensions) for d in SEGMENT_DIMENSIONS], "code"
    )
    return grouped.agg(F.count(F.lit(1)).alias("count")).select(
        F.unix_timestamp(F.col("w.start")).alias("window_start_s"),
        F.lit(",".join(dimensions)).alias("dimension_set"),
        *SEGMENT_DIMENSIONS,
        (F.col("code") / CODE_BASE).cast("int").alias("d"),
        (F.col("code") % CODE_BASE).alias("bin"),
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
