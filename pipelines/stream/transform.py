"""Pure DataFrame transformations of the streaming job: parse, classify, aggregate.

Each takes and returns a DataFrame; nothing here starts a query or touches I/O, so the same
functions serve the streaming job, a backfill over a static DataFrame, and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.contract.spark_schema import spark_schema_from_json_schema
from pipelines.metrics.catalog import COUNTERS
from pipelines.settings import SEGMENT_DIMENSIONS
from pipelines.warehouse.tables import ALL_DIMENSIONS_VALUE

UNKNOWN_VALUE = "unknown"


def parse_kafka_records(raw: DataFrame) -> DataFrame:
    """Kafka records -> topic, partition, offset, `event` (parsed struct) and `parse_error`.

    `parse_error` is true when the value is not a JSON object carrying at least an event_id
    and a readable event_time; such records are counted, never aggregated.
    """
    schema = spark_schema_from_json_schema()
    parsed = F.from_json(
        F.col("value").cast("string"),
        schema,
        {"mode": "PERMISSIVE", "timestampFormat": "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS][.SSS]XXX"},
    )
    return raw.select(
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        parsed.alias("event"),
    ).withColumn(
        "parse_error",
        F.col("event").isNull()
        | F.col("event.event_id").isNull()
        | F.col("event.event_time").isNull(),
    )


def classify_late(parsed: DataFrame, watermark: datetime | None) -> DataFrame:
    """Add `late`: the event's time is before the watermark left by the previous batch."""
    if watermark is None:
        return parsed.withColumn("late", F.lit(False))
    return parsed.withColumn(
        "late", ~F.col("parse_error") & (F.col("event.event_time") < F.lit(watermark))
    )


def _dimension(name: str, dimensions: Sequence[str]) -> Column:
    if name in dimensions:
        return F.coalesce(F.col(f"segment.{name}"), F.lit(UNKNOWN_VALUE)).alias(name)
    return F.lit(ALL_DIMENSIONS_VALUE).alias(name)


def aggregate_window_segments(
    events: DataFrame, *, window: str, dimensions: Sequence[str]
) -> DataFrame:
    """Count every catalog counter per tumbling event-time window x segment.

    `events` holds only rows to aggregate (parsed, on time); counter predicates see the
    event's fields at top level (`moderation.action`). Dimensions not grouped by get
    the value '*'. Window bounds come back as epoch seconds (UTC) to avoid any time-zone
    conversion between the JVM and Python.
    """
    flat = events.select("event.*")
    w = F.window(F.col("event_time"), window)
    grouped = flat.groupBy(w.alias("w"), *[_dimension(d, dimensions) for d in SEGMENT_DIMENSIONS])
    counts = [
        F.count_if(F.coalesce(F.expr(c.predicate), F.lit(False))).alias(c.id) for c in COUNTERS
    ]
    return grouped.agg(*counts).select(
        F.unix_timestamp(F.col("w.start")).alias("window_start_s"),
        F.unix_timestamp(F.col("w.end")).alias("window_end_s"),
        F.lit(",".join(dimensions)).alias("dimension_set"),
        *SEGMENT_DIMENSIONS,
        *[c.id for c in COUNTERS],
    )


def batch_statistics(classified: DataFrame) -> DataFrame:
    """Per Kafka partition: offset range, rows, parse errors, late rows, max event time (s)."""
    return classified.groupBy("topic", "partition").agg(
        F.min("offset").alias("start_offset"),
        F.max("offset").alias("end_offset"),
        F.count(F.lit(1)).alias("rows"),
        F.count_if(F.col("parse_error")).alias("parse_errors"),
        F.count_if(F.col("late")).alias("late_rows"),
        F.max(F.when(~F.col("parse_error"), F.unix_timestamp("event.event_time"))).alias(
            "max_event_time_s"
        ),
    )
