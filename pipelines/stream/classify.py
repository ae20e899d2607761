"""Decide the fate of every Kafka record of a micro-batch (pure DataFrame functions).

Each record ends in exactly one bucket, so the ledger's accounting closes:
    input = aggregated + rejected (by reason) + late + duplicates
Rejection reasons, in order of precedence:
    message_too_large, invalid_json, unknown_schema_version, schema_violation,
    event_time_out_of_range, pii_detected
then late (event_time before the watermark), then duplicate (event_id already aggregated
within the watermark, or earlier in the same batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import cache

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from pipelines.contract.records import (
    EVENT_TIME_OUT_OF_RANGE,
    INVALID_JSON,
    MESSAGE_TOO_LARGE,
    PII_DETECTED,
    SCHEMA_VIOLATION,
    UNKNOWN_SCHEMA_VERSION,
    Limits,
    check_batches,
    output_schema,
    record_checker,
)
from pipelines.privacy.detectors import screen_pattern
from pipelines.settings import SEGMENT_DIMENSIONS

DUPLICATE = "duplicate"
AGGREGATED = "aggregated"
REJECT_REASONS = (
    MESSAGE_TOO_LARGE,
    INVALID_JSON,
    UNKNOWN_SCHEMA_VERSION,
    SCHEMA_VIOLATION,
    EVENT_TIME_OUT_OF_RANGE,
    PII_DETECTED,
)
# Paths whose errors make an event's safety telemetry incomplete.
SAFETY_PATHS = ("moderation", "refusal", "injection", "jailbreak", "tool_calls", "privacy",
                "feedback", "request.outcome")  # fmt: skip
REDACTED_VALUE = "[REDACTED]"


def check_contract(
    raw: DataFrame,
    *,
    max_message_bytes: int,
    max_future: timedelta,
    max_age: timedelta,
    watermark: datetime | None = None,
) -> DataFrame:
    """Kafka records -> coordinates, `value` (rejected or late only), `event` (typed, may be
    partial), `errors`, `reason`, `detectors` (pipelines.contract.records, in Python on the
    executors: each record is decoded once).

    `reason` is null for an event that meets the contract, whose event_time lies within
    [kafka timestamp - max_age, kafka timestamp + max_future], whose free text holds no
    personal data and which is not behind `watermark`; else the first failing check (`late`
    last). The Kafka timestamp, not the wall clock, keeps a replayed batch's decisions
    identical.
    """
    limits = Limits(max_message_bytes, max_future, max_age)
    screen = screen_pattern()

    def check(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return check_batches(batches, record_checker(limits, screen), watermark)

    return raw.select("topic", "partition", "offset", "timestamp", "value").mapInArrow(
        check, _checked_schema()
    )


@cache
def _checked_schema() -> T.StructType:
    schema = from_arrow_schema(output_schema())
    assert isinstance(schema, T.StructType)
    return schema


def apply_verdicts(checked: DataFrame, prior_ids: DataFrame | None) -> DataFrame:
    """Add the final `status`: the record's reason (a rejection or late), else duplicate or
    aggregated.

    `prior_ids` holds the event ids aggregated by earlier batches within the watermark.
    """
    on_time = F.col("reason").isNull()
    # Duplicates are found on a narrow projection (id and coordinates), so only ids are
    # shuffled; the few records marked come back by a broadcast join on their coordinates.
    keys = checked.where(on_time).select(
        F.col("event.event_id").alias("_id"), "partition", "offset"
    )
    position = F.struct("partition", "offset")
    firsts = (
        keys.groupBy("_id")
        .agg(F.min(position).alias("_first"), F.count(F.lit(1)).alias("_n"))
        .where(F.col("_n") > 1)
    )
    repeated = (
        keys.join(firsts, "_id").where(position != F.col("_first")).select("partition", "offset")
    )
    if prior_ids is not None:
        seen = prior_ids.select(F.col("event_id").alias("_id")).distinct()
        repeated = repeated.unionByName(keys.join(seen, "_id").select("partition", "offset"))
    marks = repeated.distinct().withColumn("_duplicate", F.lit(True))
    ranked = checked.join(F.broadcast(marks), ["partition", "offset"], "left")
    duplicate = on_time & F.col("_duplicate").isNotNull()
    status = (
        F.when(~on_time, F.col("reason"))
        .when(duplicate, F.lit(DUPLICATE))
        .otherwise(F.lit(AGGREGATED))
    )
    # Every record that is not aggregated says why, in the same form as the contract errors.
    errors = F.when(
        duplicate,
        F.array(F.lit(f"{DUPLICATE}|$.event_id: already counted within the watermark")),
    ).otherwise(F.col("errors"))
    return ranked.withColumn("status", status).withColumn("errors", errors).drop("_duplicate")


def telemetry_rows(verdicts: DataFrame, screen: str) -> DataFrame:
    """Records attributable to a segment, for events_seen / telemetry_complete /
    redaction_failures: a readable event_time and a segment that met the contract.

    Segment values of a PII-rejected event that the screen flags are replaced, so that the
    personal data cannot become a segment key.
    """
    segment_ok = ~F.exists("errors", lambda e: e.contains("|$.segment"))
    attributable = (
        # Out-of-range times are not trusted enough to place an event in a window.
        F.col("status").isin(AGGREGATED, SCHEMA_VIOLATION, PII_DETECTED)
        & F.col("event.event_time").isNotNull()
        & F.col("event.segment").isNotNull()
        & segment_ok
    )
    pattern = r"\|\$\.(" + "|".join(p.replace(".", r"\.") for p in SAFETY_PATHS) + ")"
    complete = ~F.exists("errors", lambda e: e.rlike(pattern))
    is_pii = F.col("status") == PII_DETECTED
    dims = [
        F.when(is_pii & F.col(f"event.segment.{d}").rlike(screen), F.lit(REDACTED_VALUE))
        .otherwise(F.col(f"event.segment.{d}"))
        .alias(d)
        for d in SEGMENT_DIMENSIONS
    ]
    return verdicts.where(attributable).select(
        F.col("event.event_time").alias("event_time"),
        F.struct(*dims).alias("segment"),
        complete.alias("telemetry_complete"),
        is_pii.alias("redaction_failure"),
    )
