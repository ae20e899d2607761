"""Where a backfill reads raw records from: the Kafka topic's retained records, or JSONL
archives shaped like them, as a batch DataFrame with the columns of Spark's Kafka source
(`RAW_SCHEMA`), so the same counting (`pipelines.stream.aggregate`) reads either.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.durations import parse_duration
from pipelines.errors import SafewatchError
from pipelines.settings import Settings

RAW_SCHEMA = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
    ]
)


def kafka_records(
    spark: SparkSession, settings: Settings, since: datetime, until: datetime
) -> DataFrame:
    """The topic's retained records that can hold events of [since, until).

    From the first record produced at or after `since - contract.max_future` (an event can
    not be further ahead of its Kafka timestamp) to the end of the topic: late arrivals count.
    """
    earliest = since - parse_duration(settings.contract.max_future)
    return (
        spark.read.format("kafka")
        .options(**settings.kafka.spark_options())
        .option("subscribe", settings.kafka.topic_interactions)
        .option("startingTimestamp", str(int(earliest.timestamp() * 1000)))
        .option("startingOffsetsByTimestampStrategy", "latest")
        .option("endingOffsets", "latest")
        .load()
        .select(*RAW_SCHEMA.fieldNames())
    )


def archive_records(spark: SparkSession, paths: Sequence[Path]) -> DataFrame:
    """JSONL files, one event per line, as Kafka-shaped records.

    Each file is a partition of topic `archive:<file name>` and the line number (from 0) is
    the offset, so rejects name the line. An archive has no arrival time: the event's own
    event_time stands in for the Kafka timestamp, so the arrival-time range check passes.
    """
    frames = []
    for index, path in enumerate(paths):
        if not path.is_file():
            msg = f"no such archive file: {path}"
            raise SafewatchError(msg)
        lines = spark.read.text(str(path)).rdd.zipWithIndex()
        frame = spark.createDataFrame(
            lines.map(lambda pair: (pair[0][0], pair[1])),
            T.StructType(
                [T.StructField("line", T.StringType()), T.StructField("offset", T.LongType())]
            ),
        )
        event_time = F.to_timestamp(F.get_json_object("line", "$.event_time"))
        frames.append(
            frame.select(
                F.lit(None).cast("binary").alias("key"),
                F.col("line").cast("binary").alias("value"),
                F.lit(f"archive:{path.name}").alias("topic"),
                F.lit(index).alias("partition"),
                F.col("offset"),
                F.coalesce(event_time, F.lit(datetime(1970, 1, 1, tzinfo=UTC))).alias("timestamp"),
            )
        )
    if not frames:
        msg = "no archive file given"
        raise SafewatchError(msg)
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out
