"""The dead-letter topic: one scrubbed record per rejected or late Kafka record.

Record value (JSON): reason, disposition, errors (`<reason>|<json path>: <message>`,
masked), detectors (PII detectors that fired), source (topic, partition, offset, timestamp of
the original), query_id, batch_id, payload (the original with PII masked and raw ids
replaced; never the raw bytes), payload_bytes (length of the original), payload_truncated
and, when it is true, payload_sha256. Record key: `<topic>:<partition>:<offset>` of the
original, so a consumer can drop the rare repeat written when a batch is retried after a
crash (delivery to the DLQ is at least once; the warehouse stays exactly once).

disposition: what the job did with the original. "rejected" (not counted: the reason says
why; also a late record) or "counted" (counted, with its free text dropped because that
text held personal data; the masked copy is for the producing team). Taken from the input
column `disposition` when there is one and it is not null, otherwise "rejected".

Bounds, whatever the original holds (`pipelines.privacy.scrub.dlq_payload`): the whole
record value is at most `kafka.dlq_max_record_bytes` bytes. An original larger than
`scrub.PAYLOAD_PREFIX_BYTES` (64 KiB), or whose scrubbed text does not fit, is kept as a
masked prefix with payload_truncated true, payload_bytes and payload_sha256 (hex SHA-256 of
the whole original), so a producing team can find its message; at most
`scrub.MAX_ERRORS` error messages of at most `scrub.MAX_ERROR_BYTES` bytes are kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.contract.reasons import REJECTED
from pipelines.settings import KafkaSettings
from pipelines.stream.udfs import scrub_udf

# Room in a DLQ record value for everything but payload and errors: reason, disposition,
# detectors (at most a dozen names), source (a Kafka topic name has at most 249
# characters), query_id, batch_id, payload_bytes, payload_truncated, payload_sha256 and
# the field names, with a wide margin.
_FIXED_FIELDS_BYTES = 4_096
_MAX_DISPOSITION_CHARS = 64
_DEFAULT_MAX_RECORD_BYTES: int = KafkaSettings.model_fields["dlq_max_record_bytes"].default


def dlq_records(
    rejected: DataFrame,
    *,
    query_id: str,
    batch_id: int,
    max_record_bytes: int = _DEFAULT_MAX_RECORD_BYTES,
) -> DataFrame:
    """Key/value rows for the DLQ from classified records (status = reason or 'late'; an
    optional string column `disposition`), each value at most `max_record_bytes` bytes
    (`kafka.dlq_max_record_bytes`).
    """
    budget = max_record_bytes - _FIXED_FIELDS_BYTES
    if budget < 1_024:
        msg = (
            f"kafka.dlq_max_record_bytes is {max_record_bytes}: "
            f"set at least {_FIXED_FIELDS_BYTES + 1_024}"
        )
        raise ValueError(msg)
    disposition = (
        F.substring(F.col("disposition"), 1, _MAX_DISPOSITION_CHARS)
        if "disposition" in rejected.columns
        else F.lit(None).cast("string")
    )
    scrubbed = rejected.withColumn(
        "scrubbed", scrub_udf(F.col("value"), F.col("errors"), F.lit(budget))
    )
    record = F.struct(
        F.col("status").alias("reason"),
        F.coalesce(disposition, F.lit(REJECTED)).alias("disposition"),
        F.col("scrubbed.errors").alias("errors"),
        F.coalesce(F.col("detectors"), F.array().cast("array<string>")).alias("detectors"),
        F.struct(
            F.col("topic"),
            F.col("partition"),
            F.col("offset"),
            F.date_format("kafka_timestamp", "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("timestamp"),
        ).alias("source"),
        F.lit(query_id).alias("query_id"),
        F.lit(batch_id).alias("batch_id"),
        F.col("scrubbed.payload").alias("payload"),
        F.col("scrubbed.payload_bytes").alias("payload_bytes"),
        F.col("scrubbed.payload_truncated").alias("payload_truncated"),
        F.col("scrubbed.payload_sha256").alias("payload_sha256"),
    )
    return scrubbed.select(
        F.concat_ws(":", "topic", "partition", "offset").alias("key"),
        F.to_json(record).alias("value"),
    )


# What the warehouse's index of rejected records reads of a DLQ record value.
_INDEX_SCHEMA = (
    "reason string, disposition string, errors array<string>, detectors array<string>, "
    "source struct<topic: string, partition: int, offset: bigint, timestamp: string>"
)


def rejected_events(records: DataFrame) -> list[dict[str, Any]]:
    """The `rejected_events` rows of the rejected ones among `dlq_records` rows: their values
    are read on the executors, so no payload reaches the driver (the errors are bounded).
    """
    index = (
        records.select(F.from_json("value", _INDEX_SCHEMA).alias("r"))
        .where(F.col("r.disposition") == REJECTED)
        .select("r.*")
    )
    return [rejected_event(row.asDict(recursive=True)) for row in index.collect()]


def rejected_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """The warehouse's `rejected_events` row of a parsed DLQ record: all but the payload."""
    source = record["source"]
    stamp = source.get("timestamp")
    return {
        "topic": source["topic"],
        "kafka_partition": source["partition"],
        "kafka_offset": source["offset"],
        "kafka_timestamp": datetime.fromisoformat(stamp) if stamp else None,
        "reason": record["reason"],
        "errors": json.dumps(record.get("errors") or [], ensure_ascii=False),
        "detectors": json.dumps(record.get("detectors") or []),
    }


def write_dlq(records: DataFrame, kafka: KafkaSettings) -> None:
    """Write the rows to the DLQ topic with Spark's Kafka sink (raises on failure)."""
    (
        records.write.format("kafka")
        .options(**kafka.spark_options())
        .option("topic", kafka.topic_dlq)
        .save()
    )
