"""Decide the fate of every Kafka record of a micro-batch and count it: DataFrame functions
over one Python pass per partition (pipelines.contract.records checks each record,
pipelines.stream.counting counts it); only `collected` runs a Spark job.

Each record ends in exactly one bucket, so the ledger's accounting closes:
    input = aggregated + rejected (by reason) + late + duplicates
Rejection reasons, in order of precedence:
    message_too_large, invalid_json, unknown_schema_version, schema_violation,
    event_time_out_of_range, pii_detected; and unprocessable (checking the record raised
    something unexpected: the record is rejected instead of the batch failing)
then late (event_time before the watermark), then duplicate (event_id already aggregated
within the watermark, or earlier in the same batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc
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
    UNPROCESSABLE,
    Limits,
    check_batches,
    record_checker,
)
from pipelines.privacy.detectors import screen_pattern
from pipelines.stream.counting import (
    NO_SAMPLE,
    PARTIAL_SCHEMA,
    RECORD,
    SAMPLE,
    Counting,
    Counts,
    Sampling,
    merge_partials,
    partial_counts,
    sample_of,
)

REJECT_REASONS = (
    MESSAGE_TOO_LARGE,
    INVALID_JSON,
    UNKNOWN_SCHEMA_VERSION,
    SCHEMA_VIOLATION,
    EVENT_TIME_OUT_OF_RANGE,
    PII_DETECTED,
    UNPROCESSABLE,
)


def check_and_count(
    raw: DataFrame,
    *,
    limits: Limits,
    watermark: datetime | None,
    counting: Counting,
    sampling: Sampling = NO_SAMPLE,
    duplicates: frozenset[tuple[int, int]] = frozenset(),
    keep_records: bool = True,
) -> DataFrame:
    """Kafka records -> PARTIAL_SCHEMA rows: each partition checks its records
    (pipelines.contract.records: each is decoded once) and counts them (stream.counting) in
    the same Python pass on the executors.

    A record's reason is null for an event that meets the contract, whose event_time lies
    within [kafka timestamp - max_age, kafka timestamp + max_future], whose free text holds
    no personal data and which is not behind `watermark`; else the first failing check
    (`late` last). The Kafka timestamp, not the wall clock, keeps a replayed batch's
    decisions identical. The records at `duplicates` (partition, offset) count as
    duplicates; with `keep_records`, every record also comes out as a `record` row.
    """
    screen = screen_pattern()

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        checked = check_batches(batches, record_checker(limits, screen), watermark)
        return partial_counts(checked, counting, duplicates, sampling, keep_records=keep_records)

    return raw.select("topic", "partition", "offset", "timestamp", "value").mapInArrow(
        run, _partial_schema()
    )


def rejected_records(checked: DataFrame) -> DataFrame:
    """The rejected and late records, with their `status` (the reason), for the DLQ."""
    return checked.where((F.col("kind") == RECORD) & F.col("reason").isNotNull()).select(
        "topic", "partition", "offset", "kafka_timestamp", "value", "errors", "detectors",
        F.col("reason").alias("status"),
    )  # fmt: skip


def counted_ids(ids: pa.Table, duplicates: Sequence[tuple[int, int]]) -> pa.Table:
    """event_id and event_time of the aggregated records: the on-time valid ones (`ids`,
    the `record` rows whose reason is null) but the duplicates.
    """
    if duplicates:
        marks = set(duplicates)
        coordinates = zip(ids.column("partition").to_pylist(), ids.column("offset").to_pylist(),
                          strict=True)  # fmt: skip
        ids = ids.filter(pa.array([xy not in marks for xy in coordinates], pa.bool_()))
    return ids.select(["event_id", "event_time"])


def collected(checked: DataFrame) -> tuple[pa.Table, pa.Table]:
    """The partial rows of `check_and_count` and the event_id, partition, offset and
    event_time of its on-time valid records, in one Spark job (rejected and late records
    stay on the executors).
    """
    on_time = (F.col("kind") == RECORD) & F.col("reason").isNull()
    table = (
        checked.where((F.col("kind") != RECORD) | on_time)
        .drop("value", "errors", "detectors", "kafka_timestamp", "reason")
        .toArrow()
    )
    records = pc.equal(table.column("kind"), RECORD)
    ids = table.filter(records).select(["event_id", "partition", "offset", "event_time"])
    return table.filter(pc.invert(records)), ids


def counts_of(partials: pa.Table, counting: Counting, sampling: Sampling) -> Counts:
    """Merge the partial rows of `check_and_count` (without its `record` rows)."""
    is_sample = pc.equal(partials.column("kind"), SAMPLE)
    sums = partials.filter(pc.invert(is_sample)).select(_SUM_COLUMNS).to_pylist()
    counts = merge_partials(sums, counting)
    sample = sample_of(partials.filter(is_sample), sampling.rows) if sampling.rows else None
    return dataclasses.replace(counts, sample=sample)


_SUM_COLUMNS = ("kind", "window_start_s", "segment", "counters", "histogram", "users_sketch",
                "topic", "partition", "status", "start_offset", "end_offset", "rows",
                "max_event_time_s")  # fmt: skip


@cache
def _partial_schema() -> T.StructType:
    schema = from_arrow_schema(PARTIAL_SCHEMA)
    assert isinstance(schema, T.StructType)
    return schema
