"""Decide the fate of every Kafka record of a micro-batch and count it (DataFrame functions
over the per-record passes of pipelines.contract.records and pipelines.stream.counting;
only `count_checked` runs a Spark job).

Each record ends in exactly one bucket, so the ledger's accounting closes:
    input = aggregated + rejected (by reason) + late + duplicates
Rejection reasons, in order of precedence:
    message_too_large, invalid_json, unknown_schema_version, schema_violation,
    event_time_out_of_range, pii_detected
then late (event_time before the watermark), then duplicate (event_id already aggregated
within the watermark, or earlier in the same batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc
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
    NO_SAMPLE,
    PARTIAL_SCHEMA,
    Counting,
    Counts,
    Sampling,
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

    One shuffle of a narrow projection: this batch's ids with their coordinates and the
    prior ids, grouped by id; only ids that occur more than once come back.
    """
    position = F.struct(F.col("partition"), F.col("offset"))
    # Where a prior id sits: before every record of this batch.
    before_this_batch = F.struct(
        F.lit(-1).alias("partition"), F.lit(-1).cast("bigint").alias("offset")
    )
    keys = checked.where(F.col("reason").isNull()).select(
        F.col("event.event_id").alias("_id"), position.alias("_at")
    )
    if prior_ids is not None:
        prior = prior_ids.select(
            F.col("event_id").alias("_id"),
            F.lit(None).cast("struct<partition:int,offset:bigint>").alias("_at"),
        )
        keys = keys.unionByName(prior)
    repeated = (
        keys.groupBy("_id")
        .agg(
            F.count(F.lit(1)).alias("_n"),
            # The first record of this batch is kept only when no earlier batch counted the
            # id (collect_list drops the prior ids' null positions).
            F.min(F.coalesce("_at", before_this_batch)).alias("_first"),
            F.collect_list("_at").alias("_all"),
        )
        .where(F.col("_n") > 1)
    )
    marked = repeated.select(
        F.explode(F.filter("_all", lambda at: at != F.col("_first"))).alias("_at")
    )
    return marked.select("_at.partition", "_at.offset")


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
    checked: DataFrame,
    duplicates: Sequence[tuple[int, int]],
    counting: Counting,
    sampling: Sampling = NO_SAMPLE,
) -> Counts:
    """The batch's counts: each partition sums its records in Python (one Spark job), the
    driver merges the partial sums (a few rows per window x segment and partition). The
    same pass draws the data-quality sample.
    """
    marks = frozenset(duplicates)

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return partial_counts(batches, counting, marks, sampling)

    table = checked.mapInArrow(count, _partial_schema()).toArrow()
    is_sample = pc.equal(table.column("kind"), "sample")
    sums = table.filter(pc.invert(is_sample)).drop_columns(["event"]).to_pylist()
    counts = merge_partials(sums, counting)
    sample = table.filter(is_sample).column("event").combine_chunks()
    return dataclasses.replace(counts, sample=sample)


@cache
def _partial_schema() -> T.StructType:
    schema = from_arrow_schema(PARTIAL_SCHEMA)
    assert isinstance(schema, T.StructType)
    return schema
