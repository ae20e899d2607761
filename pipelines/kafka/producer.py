"""Write interaction events (or recorded raw lines) to a Kafka topic, losing none silently.

Every send is acknowledged by all in-sync replicas (`acks="all"`); a send that fails raises
InfraError instead of being dropped, and the functions return only after every message is
acknowledged. Events are keyed by `session_id`, so a session stays in one partition (and in
order).
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.codec import has_gzip
from kafka.errors import KafkaError

from pipelines.errors import InfraError
from pipelines.kafka.admin import check_reachable, connect_timeout_option
from pipelines.settings import KafkaSettings

_BOOTSTRAP_SETTING = "SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS"
_BATCH_BYTES = 256 * 1024


def produce_events(
    kafka: KafkaSettings,
    topic: str,
    events: Iterable[dict[str, Any]],
    *,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 5000,
) -> int:
    """Send each event as compact UTF-8 JSON keyed by its session_id; return how many.

    Returns after every message is acknowledged; raises InfraError when the cluster cannot
    be reached or any send fails. `progress(n)` is called every `progress_every` messages
    and once at the end with the total.
    """

    def messages() -> Iterator[tuple[bytes | None, bytes]]:
        for event in events:
            value = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
            session = event.get("session_id")
            key = session.encode("utf-8") if isinstance(session, str) else None
            yield key, value.encode("utf-8")

    return _produce(kafka, topic, messages(), progress, progress_every)


def produce_raw(
    kafka: KafkaSettings,
    topic: str,
    payloads: Iterable[bytes],
    *,
    keys: Iterable[bytes | None] | None = None,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 5000,
) -> int:
    """Send `payloads` as-is (e.g. recorded lines for a replay), with `keys` if given.

    `keys`, when given, must yield one key (or None) per payload. Same guarantees and
    errors as `produce_events`.
    """
    if keys is None:
        pairs: Iterable[tuple[bytes | None, bytes]] = ((None, p) for p in payloads)
    else:
        pairs = zip(keys, payloads, strict=True)
    return _produce(kafka, topic, pairs, progress, progress_every)


def iter_jsonl_lines(path: Path) -> Iterator[bytes]:
    """The non-empty lines of a .jsonl (or gzip-compressed .jsonl.gz) file, without newline."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for line in fh:
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                yield stripped


class _Delivery:
    """Counts acknowledgements and keeps the first failure (callbacks run in the I/O thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acked = 0
        self.error: BaseException | None = None

    def ok(self, _metadata: Any) -> None:
        with self._lock:
            self.acked += 1

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc


def _produce(
    kafka: KafkaSettings,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    progress: Callable[[int], None] | None,
    progress_every: int,
) -> int:
    producer = _connect(kafka)
    delivery = _Delivery()
    sent = 0
    try:
        for key, value in messages:
            future = producer.send(topic, value=value, key=key)
            future.add_callback(delivery.ok)
            future.add_errback(delivery.failed)
            sent += 1
            if delivery.error is not None:
                break  # stop early: the error is raised below
            if progress is not None and sent % progress_every == 0:
                progress(sent)
        producer.flush()
    except KafkaError as exc:
        msg = f"sending to topic {topic} on {kafka.bootstrap_servers} failed: {exc!r}"
        raise InfraError(msg) from exc
    finally:
        producer.close()
    if delivery.error is not None:
        msg = (
            f"a message to topic {topic} on {kafka.bootstrap_servers} was not acknowledged: "
            f"{delivery.error!r}"
        )
        raise InfraError(msg) from delivery.error
    if delivery.acked != sent:
        msg = f"only {delivery.acked} of {sent} messages to topic {topic} were acknowledged"
        raise InfraError(msg)
    if progress is not None and sent % progress_every != 0:
        progress(sent)
    return sent


def _connect(kafka: KafkaSettings, timeout_s: float = 30.0) -> Any:
    check_reachable(kafka)
    options: dict[str, Any] = kafka.python_client_options()
    options |= connect_timeout_option(KafkaProducer, timeout_s)
    try:
        return KafkaProducer(
            **options,
            acks="all",
            linger_ms=20,
            batch_size=_BATCH_BYTES,
            compression_type="gzip" if has_gzip() else None,
        )
    except KafkaError as exc:  # NoBrokersAvailable (kafka-python 2) or a bootstrap timeout
        msg = (
            f"no Kafka broker reachable at {kafka.bootstrap_servers} ({exc!r}); start one "
            f"(`safewatch infra up`) or point {_BOOTSTRAP_SETTING} at your cluster"
        )
        raise InfraError(msg) from exc
