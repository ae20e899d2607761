"""Deliver the notification outbox: every channel, in order, retried with backoff until sent.

The alert engine writes one row per alert notice and channel in the batch's transaction
(`notification_outbox`); this module sends the pending ones and marks them sent. A channel
that is down keeps its rows: each failure doubles the wait before the next attempt (from
`retry_initial` up to `retry_max`), and nothing is ever dropped. A row is marked sent only
after its channel accepted it, so a crash between the two re-sends it: delivery is at least
once, and every payload carries a stable identity (Alertmanager: the labels; webhook and
Kafka: `dedup_key`) for receivers to collapse repeats.

The job calls `deliver` after each batch and, with `DeliveryLoop`, every
alerting.deliver_interval_s on its own: notices held by a channel that was down go out once
it is back, also when no event arrives. `backoff` gives the wait after n failed attempts.

Notifiers are small classes with one method, `send(payloads)`, raising NotifierError with
a message free of secrets (a webhook is shown as `scheme://host:port/***`: its path and query
are often the credential). `deliver` masks what is left (`pipelines.redact.redact_text`)
before an error reaches the log or the outbox's `last_error`. The HTTP notifiers
(Alertmanager, webhook) each keep one httpx client, whose connections their sends reuse,
until `close()`.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine

from pipelines.alerting import store
from pipelines.alerting.alertmanager_client import (
    NotifierError,
    http_client,
    post_alerts,
    split_credentials,
)
from pipelines.errors import SafewatchError
from pipelines.redact import redact_text, redact_webhook_url, url_secrets
from pipelines.settings import KafkaSettings
from pipelines.warehouse.retry import short_error
from pipelines.warehouse.tables import Tables


class Notifier(Protocol):
    channel: str

    def send(self, payloads: Sequence[Mapping[str, Any]]) -> None: ...


class AlertmanagerNotifier:
    """Posts alerts to Alertmanager's API v2: labels, annotations, startsAt, endsAt."""

    channel = "alertmanager"

    def __init__(self, url: str, *, timeout: float = 10.0, generator_url: str = "") -> None:
        self.url = url
        self.timeout = timeout
        self.generator_url = generator_url
        self._client = http_client(timeout)

    def send(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        alerts = [
            {
                "labels": p["labels"],
                "annotations": p["annotations"],
                "startsAt": p["startsAt"],
                "endsAt": p["endsAt"],
                **({"generatorURL": self.generator_url} if self.generator_url else {}),
            }
            for p in payloads
        ]
        post_alerts(self.url, alerts, timeout=self.timeout, client=self._client)

    def close(self) -> None:
        """Close the client's pooled connections, once the notifier is no longer used."""
        self._client.close()


class WebhookNotifier:
    """POSTs `{"alerts": [payload, ...]}` as JSON to a URL (any 2xx is success).

    User information in the URL is sent as basic authentication. Errors name the webhook as
    `scheme://host:port/***` and mask every part of the URL in httpx's message.
    """

    channel = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.shown = redact_webhook_url(url)
        self._secrets = url_secrets(url, path=True)
        self._client = http_client(timeout)

    def send(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        body = json.dumps({"alerts": list(payloads)}).encode()
        try:
            url, auth = split_credentials(self.url)
            response = self._client.request(
                "POST", url, content=body, headers={"Content-Type": "application/json"}, auth=auth
            )
        except (ValueError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            # httpx's text would quote a part of the URL.
            msg = (
                f"the webhook URL {self.shown} is not a valid http(s) URL; check "
                "SAFEWATCH_ALERTING__NOTIFY_WEBHOOK_URL"
            )
            raise NotifierError(msg, url=self.shown) from exc
        except (httpx.HTTPError, OSError) as exc:
            msg = (
                f"cannot reach the webhook {self.shown} "
                f"({redact_text(str(exc), self._secrets)}); check "
                "SAFEWATCH_ALERTING__NOTIFY_WEBHOOK_URL"
            )
            raise NotifierError(msg, url=self.shown) from exc
        if not response.is_success:
            msg = f"webhook {self.shown} answered HTTP {response.status_code}"
            if response.is_redirect:  # not followed (http_client): the notice stays pending
                msg += (
                    " (a redirect: set SAFEWATCH_ALERTING__NOTIFY_WEBHOOK_URL to the address "
                    "it points to)"
                )
            raise NotifierError(msg, url=self.shown, status=response.status_code)

    def close(self) -> None:
        """Close the client's pooled connections, once the notifier is no longer used."""
        self._client.close()


class KafkaNotifier:
    """Publishes each payload as JSON to the alerts topic, keyed by its dedup key."""

    channel = "kafka"

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic

    def send(self, payloads: Sequence[Mapping[str, Any]]) -> None:
        from pipelines.kafka.producer import produce_raw

        try:
            produce_raw(
                self.kafka,
                self.topic,
                [json.dumps(p, sort_keys=True).encode() for p in payloads],
                keys=[str(p.get("dedup_key", "")).encode() for p in payloads],
            )
        except SafewatchError as exc:
            msg = f"cannot publish alerts to Kafka topic {self.topic}: {exc}"
            raise NotifierError(msg, url=self.kafka.bootstrap_servers) from exc


def backoff(initial: timedelta, maximum: timedelta, attempts: int) -> timedelta:
    """The wait after `attempts` failed attempts: `initial` doubled per attempt, at most
    `maximum`, for any number of attempts (a channel down for days fails thousands of times;
    2 ** attempts seconds stops fitting in a timedelta after a few dozen).
    """
    if attempts < 0:
        msg = f"attempts must not be negative, got {attempts}"
        raise ValueError(msg)
    if initial >= maximum:
        return maximum
    doublings = math.ceil(math.log2(maximum / initial))
    return maximum if attempts >= doublings else min(initial * 2**attempts, maximum)


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int  # rows whose attempt failed in this call (they stay pending)
    pending: int  # rows still unsent after this call
    errors: tuple[str, ...] = ()
    sent_by_channel: Mapping[str, int] = field(default_factory=dict)
    oldest_pending_at: datetime | None = None  # when the oldest unsent row was queued


def deliver(
    engine: Engine,
    notifiers: Mapping[str, Notifier],
    *,
    now: datetime,
    retry_initial: timedelta = timedelta(seconds=5),
    retry_max: timedelta = timedelta(minutes=5),
    limit: int = 500,
    log: Callable[[str], None] | None = None,
    tables: Tables | None = None,
) -> DeliveryReport:
    """Send the due rows of every channel that has a notifier, oldest first, in one request
    per channel; mark them sent, or schedule the next attempt. Rows of a channel without a
    notifier stay pending (they are sent once one is configured). Pass the warehouse's
    `tables` when calling it often (after every batch): reflecting them costs queries.
    """
    tables = tables or Tables(engine)
    sent = failed = 0
    errors: list[str] = []
    by_channel: dict[str, int] = {}
    for channel, notifier in notifiers.items():
        with engine.connect() as conn:
            due = store.due_notices(conn, tables, channel, now, limit)
        if not due:
            continue
        payloads = [{**json.loads(r.payload), "dedup_key": r.dedup_key} for r in due]
        ids = [r.id for r in due]
        try:
            notifier.send(payloads)
        except NotifierError as exc:
            failed += len(due)
            error = redact_text(str(exc))
            errors.append(error)
            if log:
                log(f"alerts: {channel} delivery failed ({len(due)} pending, retried): {error}")
            retries = [
                (r.id, r.attempts, now + backoff(retry_initial, retry_max, r.attempts)) for r in due
            ]
            with engine.begin() as conn:
                store.retry_later(conn, tables, retries, error)
            continue
        with engine.begin() as conn:
            store.mark_sent(conn, tables, ids, now)
        sent += len(due)
        by_channel[channel] = len(due)
    with engine.connect() as conn:
        pending, oldest = store.pending_notices(conn, tables)
    return DeliveryReport(sent, failed, pending, tuple(errors), by_channel, oldest)


class DeliveryLoop:
    """Delivers the outbox every `interval_s` seconds on its own thread, whether batches
    arrive or not: notices held by a channel that was down reach it once it is back, also
    when traffic has stopped (itself a likely symptom of an incident).

    `deliver_once` is the job's delivery (it must be safe to call from two threads: the job
    also delivers right after each batch). An error is logged when a run of failures starts
    and when it ends, never raised: the next tick tries again.
    """

    def __init__(
        self,
        deliver_once: Callable[[], None],
        interval_s: float,
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        if interval_s <= 0:
            msg = f"the delivery interval must be positive, got {interval_s}"
            raise ValueError(msg)
        self.deliver_once = deliver_once
        self.interval_s = interval_s
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: str | None = None

    def start(self) -> DeliveryLoop:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="safewatch-outbox", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop, waiting for a delivery under way (at most `timeout` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def tick(self) -> None:
        """One delivery, its error logged (not raised)."""
        try:
            self.deliver_once()
        except Exception as exc:  # noqa: BLE001 - a loop that must outlive any one error
            error = short_error(exc)
            if self._failing is None:
                self.log(f"alerts: outbox delivery failed, trying again every "
                         f"{self.interval_s:g} s: {error}")  # fmt: skip
            self._failing = error
            return
        if self._failing is not None:
            self.log("alerts: outbox delivery works again")
            self._failing = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()
