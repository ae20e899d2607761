"""Decide the fate of every Kafka record of a micro-batch and count it: DataFrame functions
over one Python pass per partition (pipelines.contract.records checks each record,
pipelines.stream.counting counts it); only `collected` runs a Spark job.

Each record ends in exactly one bucket, so the ledger's accounting closes:
    input = aggregated + rejected (by reason) + late + duplicates
Rejection reasons, in order of precedence:
    message_too_large, invalid_json, unknown_schema_version, schema_violation,
    event_time_out_of_range; and unprocessable (checking the record raised something
    unexpected: the record is rejected instead of the batch failing)
then late (event_time before the watermark), then duplicate (event_id already aggregated
within the watermark, or earlier in the same batch).

An event that meets the contract but whose free text still holds personal data is
aggregated like any other, by its structured fields: the checker replaces each text in
which a detector hits by `[REDACTED]` (never stored), the segment counts it in
redaction_failures, and a masked copy goes to the DLQ (reason pii_detected, disposition
counted: `dead_letters`). Rejecting it would bias the safety rates: refusals that point to a
helpline would vanish from the refusal rate.
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

from pipelines.contract.reasons import COUNTED, PII_DETECTED, REJECTED
from pipelines.contract.records import Limits, check_batches, record_checker
from pipelines.privacy.detectors import screen_pattern
from pipelines.stream.counting import Counting
from pipelines.stream.heap import settle
from pipelines.stream.merge import Counts, merge_partials
from pipelines.stream.packing import IDS, PARTIAL_SCHEMA, RECORD, SAMPLE, ids_of
from pipelines.stream.partials import partial_counts
from pipelines.stream.sampling import NO_SAMPLE, Sampling, sample_of


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
        checker = record_checker(limits, screen, counting.allow)
        settle()  # the worker's imports and checker: out of the collections after each task
        checked = check_batches(batches, checker, watermark)
        return partial_counts(checked, counting, duplicates, sampling, keep_records=keep_records)

    return raw.select("topic", "partition", "offset", "timestamp", "value").mapInArrow(
        run, _partial_schema()
    )


def dead_letters(checked: DataFrame, duplicates: Sequence[tuple[int, int]] = ()) -> DataFrame:
    """The records the DLQ receives, with their `status` (a reason code, or late) and
    `disposition`: each rejected or late record ("rejected"), and each counted record whose
    free text held personal data ("counted": counted with that text dropped; status
    pii_detected, so that the producing team sees its redaction failing). A duplicate was
    not counted, so its copy is left out (`duplicates`: (partition, offset) of the counted
    records' repeats).
    """
    counted = F.col("reason").isNull()
    copy = counted & (F.size("detectors") > 0)
    if duplicates:
        repeats = [F.struct(F.lit(p).cast("int"), F.lit(o).cast("long")) for p, o in duplicates]
        copy = copy & ~F.struct("partition", "offset").isin(*repeats)
    message = F.concat(
        F.lit(f"{PII_DETECTED}|$: free text holds "),
        F.array_join("detectors", ", "),
        F.lit(" (upstream redaction failed); counted with that text dropped"),
    )
    return checked.where((F.col("kind") == RECORD) & (F.col("reason").isNotNull() | copy)).select(
        "topic", "partition", "offset", "kafka_timestamp", "value",
        F.when(counted, F.array(message)).otherwise(F.col("errors")).alias("errors"),
        "detectors",
        F.coalesce("reason", F.lit(PII_DETECTED)).alias("status"),
        F.when(counted, F.lit(COUNTED)).otherwise(F.lit(REJECTED)).alias("disposition"),
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
    """The partial rows of `check_and_count` and the IDS_SCHEMA rows (event_id, partition,
    offset, event_time, text_dropped) of its on-time valid records, in one Spark job (the
    `record` rows, which the DLQ needs, stay on the executors).
    """
    table = (
        checked.where(F.col("kind") != RECORD)
        .drop("value", "errors", "detectors", "kafka_timestamp", "reason")
        .toArrow()
    )
    return table.filter(pc.not_equal(table.column("kind"), IDS)), ids_of(table)


def counts_of(partials: pa.Table, counting: Counting, sampling: Sampling) -> Counts:
    """Merge the partial rows of `check_and_count` (without its `record` rows)."""
    is_sample = pc.equal(partials.column("kind"), SAMPLE)
    sums = partials.filter(pc.invert(is_sample)).select(_SUM_COLUMNS).to_pylist()
    counts = merge_partials(sums, counting)
    sample = sample_of(partials, sampling.rows) if sampling.rows else None
    return dataclasses.replace(counts, sample=sample)


_SUM_COLUMNS = ("kind", "window_start_s", "segment", "counters", "histogram", "users_sketch",
                "bucket_cells", "bucket_values", "slice_cells", "slice_values", "topic",
                "partition", "status", "start_offset", "end_offset", "rows",
                "max_event_time_us")  # fmt: skip


@cache
def _partial_schema() -> T.StructType:
    schema = from_arrow_schema(PARTIAL_SCHEMA)
    assert isinstance(schema, T.StructType)
    return schema
