"""`check_reachable`: a Kafka command with no broker to talk to stops at once, naming the fix,
instead of letting the client retry for its whole timeout.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pipelines.errors import InfraError
from pipelines.kafka.admin import check_reachable, topic_exists
from pipelines.kafka.producer import produce_raw
from pipelines.settings import KafkaSettings


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_no_local_broker_names_infra_up(closed_port: int) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port}")
    with pytest.raises(InfraError) as info:
        check_reachable(kafka)
    message = str(info.value)
    assert f"no Kafka broker answers at 127.0.0.1:{closed_port}" in message
    assert "Connection refused" in message
    assert "`safewatch infra up`" in message
    assert "SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS" in message


def test_one_server_that_answers_is_enough(closed_port: int, listening_port: int) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port},localhost:{listening_port}")
    check_reachable(kafka)  # returns: the second server accepts connections


def test_a_remote_cluster_is_not_told_to_start_a_local_broker(closed_port: int) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port},kafka.invalid:9092")
    with pytest.raises(InfraError) as info:
        check_reachable(kafka, timeout_s=2)
    assert "infra up" not in str(info.value)
    assert "reachable from this machine" in str(info.value)


def test_admin_and_producer_check_first(closed_port: int) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port}")
    with pytest.raises(InfraError, match="no Kafka broker answers"):
        topic_exists(kafka, "any")
    with pytest.raises(InfraError, match="no Kafka broker answers"):
        produce_raw(kafka, "any", [b"{}"])
