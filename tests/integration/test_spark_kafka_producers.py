"""Spark keeps a Kafka producer per configuration for its Kafka writes, for as long as the
JVM runs; `close_kafka_producers` closes them, so a stopped broker is not called for.
"""

from __future__ import annotations

import pytest

from pipelines.stream.session import close_kafka_producers
from tests.faults.harness import wait_for

pytestmark = pytest.mark.integration


def _producer_threads(spark) -> int:
    """Live I/O threads of Kafka producers in the JVM (one per open producer)."""
    jvm = spark.sparkContext._jvm
    threads = jvm.java.lang.Thread.getAllStackTraces().keySet().toArray()
    return sum(
        1
        for t in threads
        if t.getName().startswith("kafka-producer-network-thread") and t.isAlive()
    )


def test_the_producers_of_spark_kafka_writes_are_closed(spark, kafka_broker, unique_topic):
    topic = unique_topic("producers")
    (
        spark.createDataFrame([("k", "v")], ["key", "value"])
        .write.format("kafka")
        .option("kafka.bootstrap.servers", kafka_broker.kafka.bootstrap_servers)
        .option("topic", topic)
        .save()
    )
    assert _producer_threads(spark) >= 1  # the write's producer stays open
    close_kafka_producers()
    assert wait_for(lambda: _producer_threads(spark) == 0, 30)
