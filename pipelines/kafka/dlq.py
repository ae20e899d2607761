"""The dead-letter topic: one scrubbed record per rejected or late Kafka record.

Record value (JSON): reason, errors (`<reason>|<json path>: <message>`, masked), detectors
(PII detectors that fired), source (topic, partition, offset, timestamp of the original),
query_id, batch_id and payload (the original with PII masked and raw ids replaced; never the
raw bytes). Record key: `<topic>:<partition>:<offset>` of the original, so a consumer can
drop the rare repeat written when a batch is retried after a crash (delivery to the DLQ is
at least once; the warehouse stays exactly once).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipelines.settings import KafkaSettings
from pipelines.stream.udfs import scrub_udf


def dlq_records(rejected: DataFrame, *, query_id: str, batch_id: int) -> DataFrame:
    """Key/value rows for the DLQ from classified records (status = reason or 'late')."""
    scrubbed = rejected.withColumn(
        "scrubbed", scrub_udf(F.make_valid_utf8(F.col("value").cast("string")), F.col("errors"))
    )
    record = F.struct(
        F.col("status").alias("reason"),
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
    )
    return scrubbed.select(
        F.concat_ws(":", "topic", "partition", "offset").alias("key"),
        F.to_json(record).alias("value"),
    )


def rejected_event(value: str) -> dict[str, Any]:
    """The warehouse's `rejected_events` row of a DLQ record value: everything but the payload."""
    record = json.loads(value)
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
