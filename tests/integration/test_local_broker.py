"""The local Kafka broker launcher and topic administration, against a real broker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipelines.errors import InfraError
from pipelines.infra.kafka_broker import LocalKafkaBroker
from pipelines.kafka.admin import end_offsets, ensure_topics, topic_exists
from pipelines.settings import BrokerSettings, KafkaSettings

pytestmark = pytest.mark.integration


def quiet(_: str) -> None:
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_start_is_idempotent_and_status_reports_the_pid(kafka_broker) -> None:
    broker = kafka_broker.broker
    before = broker.status()
    assert before.running
    assert before.pid is not None
    assert before.formatted

    broker.start()
    # A second launcher (as another process would build it) finds the broker via the pid file.
    messages: list[str] = []
    LocalKafkaBroker(broker.settings, log=messages.append).start()

    assert broker.status().pid == before.pid
    assert any("already running" in m for m in messages)
    assert str(before.pid) in before.describe()


def test_ensure_topics_creates_missing_topics_once(kafka_broker, unique_topic) -> None:
    kafka = kafka_broker.kafka.model_copy(
        update={
            "topic_interactions": unique_topic("interactions"),
            "topic_dlq": unique_topic("dlq"),
            "topic_alerts": unique_topic("alerts"),
        }
    )
    topics = [kafka.topic_interactions, kafka.topic_dlq, kafka.topic_alerts]

    assert ensure_topics(kafka, log=quiet) == topics
    for topic in topics:
        assert topic_exists(kafka, topic)
        assert end_offsets(kafka, topic) == {0: 0, 1: 0}  # kafka.partitions == 2
    assert ensure_topics(kafka, log=quiet) == []


def test_produced_message_is_consumed_and_counted(kafka_broker, unique_topic) -> None:
    kafka = kafka_broker.kafka
    topic = unique_topic("roundtrip")
    assert not topic_exists(kafka, topic)
    ensure_topics(kafka, [topic], log=quiet)

    producer = KafkaProducer(**kafka.python_client_options())
    try:
        producer.send(topic, key=b"k", value=b"hello").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15_000,
        **kafka.python_client_options(),
    )
    try:
        record = next(iter(consumer))  # StopIteration after consumer_timeout_ms
    finally:
        consumer.close()

    assert (record.key, record.value) == (b"k", b"hello")
    assert sum(end_offsets(kafka, topic).values()) == 1


def test_end_offsets_of_a_missing_topic_raises(kafka_broker, unique_topic) -> None:
    with pytest.raises(InfraError, match="does not exist"):
        end_offsets(kafka_broker.kafka, unique_topic("missing"))


def test_stop_ends_the_broker_and_closes_its_port(kafka_broker, tmp_path: Path) -> None:
    settings = kafka_broker.broker.settings.model_copy(
        update={"port": free_port(), "controller_port": free_port(), "data_dir": tmp_path}
    )
    broker = LocalKafkaBroker(settings, log=quiet)
    try:
        pid = broker.start().pid
        assert pid is not None and pid != kafka_broker.broker.status().pid
        assert broker.stop() is True
    finally:
        broker.stop()

    status = broker.status()
    assert not status.running
    assert status.pid is None
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", settings.port), timeout=1).close()
    assert broker.stop() is False  # idempotent


def test_unreachable_cluster_names_the_setting() -> None:
    unreachable = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(InfraError, match="SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS"):
        ensure_topics(unreachable, log=quiet, timeout_s=1)


def test_missing_jars_raise_with_the_setup_hint(tmp_path: Path) -> None:
    empty = tmp_path / "jars"
    empty.mkdir()
    settings = BrokerSettings(data_dir=tmp_path / "kafka", jars_dir=empty)

    with pytest.raises(InfraError, match="infra/setup.sh") as excinfo:
        LocalKafkaBroker(settings, log=quiet).start()
    assert str(empty) in str(excinfo.value)
