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

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from functools import cache

import pyarrow as pa
from pyspark.sql import Column, DataFrame
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
from pipelines.stream.counting import (
    AGGREGATED,
    DUPLICATE,
    PARTIAL_SCHEMA,
    Counting,
    Counts,
    merge_partials,
    partial_counts,
)

REJECT_REASONS = (
    MESSAGE_TOO_LARGE,
    INVALID_JSON,
    UNKNOWN_SCHEMA_VERSION,
    SCHEMA_VIOLATION,
    EVENT_TIME_OUT_OF_RANGE,
    PII_DETECTED,
)


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


def duplicate_marks(checked: DataFrame, prior_ids: DataFrame | None) -> DataFrame:
    """(partition, offset) of the on-time valid records whose event id was already counted:
    by an earlier batch within the watermark (`prior_ids`), or earlier in this batch.

    Found on a narrow projection (id and coordinates), so only ids are shuffled.
    """
    keys = checked.where(F.col("reason").isNull()).select(
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
    return repeated.distinct()


def with_status(checked: DataFrame, duplicates: Sequence[tuple[int, int]]) -> DataFrame:
    """Add the final `status`: the record's reason (a rejection or late), else duplicate when
    its (partition, offset) is in `duplicates`, else aggregated.
    """
    duplicate: Column = F.lit(False)
    if duplicates:
        marks = checked.sparkSession.createDataFrame(
            [(p, o, True) for p, o in duplicates], "partition int, offset long, _duplicate boolean"
        )
        checked = checked.join(F.broadcast(marks), ["partition", "offset"], "left")
        duplicate = F.coalesce(F.col("_duplicate"), F.lit(False))
    on_time = F.col("reason").isNull()
    status = (
        F.when(~on_time, F.col("reason"))
        .when(duplicate, F.lit(DUPLICATE))
        .otherwise(F.lit(AGGREGATED))
    )
    # Every record that is not aggregated says why, in the same form as the contract errors.
    errors = F.when(
        on_time & duplicate,
        F.array(F.lit(f"{DUPLICATE}|$.event_id: already counted within the watermark")),
    ).otherwise(F.col("errors"))
    out = checked.withColumn("status", status).withColumn("errors", errors)
    return out.drop("_duplicate") if duplicates else out


def aggregated_events(verdicts: DataFrame) -> DataFrame:
    return verdicts.where(F.col("status") == AGGREGATED).select("event")


def count_checked(
    checked: DataFrame, duplicates: Sequence[tuple[int, int]], counting: Counting
) -> Counts:
    """The batch's counts: each partition sums its records in Python (one Spark job), the
    driver merges the partial sums (a few rows per window x segment and partition).
    """
    marks = frozenset(duplicates)

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return partial_counts(batches, counting, marks)

    partials = checked.mapInArrow(count, _partial_schema()).toArrow().to_pylist()
    return merge_partials(partials, counting)


@cache
def _partial_schema() -> T.StructType:
    schema = from_arrow_schema(PARTIAL_SCHEMA)
    assert isinstance(schema, T.StructType)
    return schema
