"""Topic administration for any Kafka cluster described by `KafkaSettings`.

Every function connects, does its work and disconnects. A cluster that cannot be reached (or
refuses the credentials) raises InfraError naming the bootstrap servers and the setting.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipelines.errors import InfraError
from pipelines.settings import KafkaSettings

_BOOTSTRAP_SETTING = "SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS"


# How long one bootstrap server may take to accept a TCP connection before the next is tried.
REACH_TIMEOUT_S = 5.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_reachable(kafka: KafkaSettings, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Return once a bootstrap server accepts a TCP connection; raise InfraError as soon as
    none does, naming the fix, instead of letting a Kafka client retry for its full timeout
    (30 s and more) against a broker that is not there.
    """
    failures = []
    hosts = []
    for server in kafka.bootstrap_servers.split(","):
        address = server.strip().rpartition("://")[2]
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        hosts.append(host)
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            failures.append(f"{address}: {reason}")
    if all(h in _LOOPBACK for h in hosts):
        fix = "start the local broker with `safewatch infra up`"
    else:
        fix = "check that the cluster is up and reachable from this machine"
    msg = (
        f"no Kafka broker answers at {kafka.bootstrap_servers} ({'; '.join(failures)}): "
        f"{fix}, or point {_BOOTSTRAP_SETTING} at your cluster"
    )
    raise InfraError(msg)


def connect_timeout_option(client_cls: type, timeout_s: float) -> dict[str, int]:
    """The kafka-python option bounding a client's first connection, as keyword arguments.

    kafka-python 3 calls it `bootstrap_timeout_ms`; 2.x bounds it by `api_version_auto_timeout_ms`.
    """
    defaults: dict[str, Any] = getattr(client_cls, "DEFAULT_CONFIG", {})
    timeout_ms = max(1, int(timeout_s * 1000))
    if "bootstrap_timeout_ms" in defaults:
        return {"bootstrap_timeout_ms": timeout_ms}
    return {"api_version_auto_timeout_ms": timeout_ms}


def ensure_topics(
    kafka: KafkaSettings,
    topics: Sequence[str] | None = None,
    *,
    log: Callable[[str], None] = print,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create whichever of `topics` do not exist yet and return their names (in order).

    `topics` defaults to the interactions, dead-letter and alerts topics. New topics get
    `kafka.partitions` partitions and `kafka.replication_factor` replicas; existing topics are
    left as they are, so calling this again creates nothing.
    """
    if topics is None:
        topics = (kafka.topic_interactions, kafka.topic_dlq, kafka.topic_alerts)
    wanted = list(dict.fromkeys(topics))
    created: list[str] = []
    with _admin(kafka, timeout_s) as admin:
        existing = set(_call(kafka, admin.list_topics))
        for name in (t for t in wanted if t not in existing):
            new = NewTopic(name, kafka.partitions, kafka.replication_factor)
            try:
                admin.create_topics([new])
            except TopicAlreadyExistsError:
                continue  # created concurrently by someone else: that is the goal too
            except KafkaError as exc:
                msg = (
                    f"creating topic {name} on {kafka.bootstrap_servers} failed: {exc!r}; check "
                    "SAFEWATCH_KAFKA__PARTITIONS and SAFEWATCH_KAFKA__REPLICATION_FACTOR"
                )
                raise InfraError(msg) from exc
            log(f"created topic {name} ({kafka.partitions} partitions)")
            created.append(name)
        # Creation is acknowledged before every partition has a leader; wait for leaders so
        # callers can produce and query offsets right away (kafka-python 3 only).
        wait = getattr(admin, "wait_for_topics", None)
        if created and wait is not None:
            _call(kafka, wait, created, timeout_ms=int(timeout_s * 1000))
    return created


def recreate_topic(
    kafka: KafkaSettings,
    topic: str,
    *,
    log: Callable[[str], None] = print,
    timeout_s: float = 30.0,
) -> None:
    """Delete `topic` with all its records if it exists, then create it empty.

    Deletion is asynchronous in Kafka: creation is retried until the old topic is gone.
    """
    with _admin(kafka, timeout_s) as admin:
        if topic in _call(kafka, admin.list_topics):
            _call(kafka, admin.delete_topics, [topic])
            log(f"deleted topic {topic}")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ensure_topics(kafka, [topic], log=log, timeout_s=timeout_s):
                return
        except InfraError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            msg = f"topic {topic} still exists {timeout_s:.0f} s after its deletion"
            raise InfraError(msg)
        time.sleep(0.5)


def topic_exists(kafka: KafkaSettings, topic: str, *, timeout_s: float = 30.0) -> bool:
    """Whether `topic` exists on the cluster (never creates it)."""
    with _admin(kafka, timeout_s) as admin:
        return topic in _call(kafka, admin.list_topics)


def end_offsets(kafka: KafkaSettings, topic: str, *, timeout_s: float = 30.0) -> dict[int, int]:
    """Next offset of every partition of `topic` (partition -> offset); commits nothing.

    Raises InfraError when the topic does not exist.
    """
    check_reachable(kafka)
    options = kafka.python_client_options() | connect_timeout_option(KafkaConsumer, timeout_s)
    consumer = _call(kafka, KafkaConsumer, group_id=None, enable_auto_commit=False, **options)
    try:
        partitions = _call(kafka, consumer.partitions_for_topic, topic)
        if not partitions:
            msg = f"topic {topic} does not exist on {kafka.bootstrap_servers}"
            raise InfraError(msg)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        offsets = _call(kafka, consumer.end_offsets, tps)
    finally:
        consumer.close()
    return {tp.partition: int(offsets[tp]) for tp in tps}


@contextmanager
def _admin(kafka: KafkaSettings, timeout_s: float) -> Iterator[Any]:
    check_reachable(kafka)
    options = kafka.python_client_options() | connect_timeout_option(KafkaAdminClient, timeout_s)
    admin = _call(kafka, KafkaAdminClient, **options)
    try:
        yield admin
    finally:
        admin.close()


def _call(kafka: KafkaSettings, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`func(*args, **kwargs)`, turning kafka-python's errors into an InfraError to act on."""
    try:
        return func(*args, **kwargs)
    except KafkaError as exc:
        msg = (
            f"cannot use the Kafka cluster at {kafka.bootstrap_servers}: {exc!r}; check "
            f"{_BOOTSTRAP_SETTING} (and SAFEWATCH_KAFKA__SECURITY_PROTOCOL / SASL settings "
            "if the cluster needs authentication)"
        )
        raise InfraError(msg) from exc
