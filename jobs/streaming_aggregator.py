"""The streaming aggregator: Kafka -> parse -> window x segment counts -> warehouse.

Thin wiring of pipelines/: Spark's Kafka source with back-pressure, one foreachBatch that
commits each micro-batch atomically and idempotently, a checkpoint for offsets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipelines.settings import Settings
from pipelines.stream.batch import BatchProcessor, BatchReport
from pipelines.stream.durations import spark_interval
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink


@dataclass
class RunSummary:
    batches: list[BatchReport] = field(default_factory=list)

    @property
    def input_rows(self) -> int:
        return sum(b.input_rows for b in self.batches)

    @property
    def aggregated_rows(self) -> int:
        return sum(b.aggregated_rows for b in self.batches)


def start_query(
    spark: SparkSession,
    settings: Settings,
    *,
    until_caught_up: bool,
    log: Callable[[str], None] = print,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> StreamingQuery:
    """Start the aggregation query; with `until_caught_up` it stops once the topic is drained."""
    engine = make_engine(settings.warehouse.url.get_secret_value())
    migrate(engine, log=log)
    sink = WarehouseSink(engine, users_lg_k=settings.privacy.users_sketch_lg_k)
    sink.set_min_distinct_users(settings.privacy.min_distinct_users)
    sink.sync_distribution_bins()
    processor = BatchProcessor(sink, settings, log=log, on_batch=on_batch)
    raw = (
        spark.readStream.format("kafka")
        .options(**settings.kafka.spark_options())
        .option("subscribe", settings.kafka.topic_interactions)
        .option("startingOffsets", settings.stream.starting_offsets)
        .option("maxOffsetsPerTrigger", str(settings.stream.max_offsets_per_trigger))
        # Retention deleting unread data must stop the job loudly, not skip events.
        .option("failOnDataLoss", "true")
        .load()
    )
    writer = (
        raw.writeStream.queryName("safewatch_aggregator")
        .foreachBatch(processor)
        .option("checkpointLocation", settings.stream.checkpoint_dir)
    )
    if until_caught_up:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=spark_interval(settings.stream.trigger_interval))
    query = writer.start()
    processor.bind_query(str(query.id))
    return query


def run(
    spark: SparkSession,
    settings: Settings,
    *,
    until_caught_up: bool,
    log: Callable[[str], None] = print,
) -> RunSummary:
    """Run the query in the foreground until caught up (or until interrupted when continuous)."""
    summary = RunSummary()
    query = start_query(
        spark, settings, until_caught_up=until_caught_up, log=log, on_batch=summary.batches.append
    )
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        log("stopping the streaming query (the checkpoint keeps its place)")
        query.stop()
    return summary
