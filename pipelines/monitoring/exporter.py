"""The job's Prometheus metrics: batches, records, lag, notifications, alerts, headline rates.

Every metric lives on the `CollectorRegistry` given to `JobMetrics`; nothing is registered at
import, so a test (or a second job in one process) builds its own registry. `JobMetrics` is
pure bookkeeping: the job calls it after each batch, the lag poller and the notifier call it
with what they saw, and `serve` exposes the registry on `/metrics` for Prometheus to scrape.
Names and labels are documented in docs/observability.md; the alert rules on them are in
alerts/prometheus/pipeline.rules.yml.

Every label has a bounded set of values: outcomes, reasons, channels, severities and rate ids
are fixed here, topics are the job's few topics, and the rates' dimension keeps at most
`max_label_values` values plus `other`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pipelines.alerting.model import SEVERITIES
from pipelines.cardinality import admit
from pipelines.contract.reasons import REJECT_REASONS
from pipelines.errors import InfraError
from pipelines.metrics.catalog import RATES, rate, rate_value
from pipelines.segments import (
    ALL_DIMENSIONS_VALUE,
    OTHER_VALUE,
    SEGMENT_DIMENSIONS,
    UNKNOWN_VALUE,
)

PREFIX = "safewatch_"
BATCH_OUTCOMES = ("committed", "skipped", "failed")
NOTIFICATION_CHANNELS = ("alertmanager", "webhook", "kafka")
HEADLINE_RATES = tuple(r.id for r in RATES if r.headline)  # the catalog's headline rates
# Batches take seconds locally and up to the trigger's worth of back-pressure in production.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300)


class _Report(Protocol):
    """What `observe_batch` reads of a `pipelines.stream.reports.BatchReport`."""

    @property
    def skipped(self) -> bool: ...
    @property
    def input_rows(self) -> int: ...
    @property
    def aggregated_rows(self) -> int: ...
    @property
    def late_rows(self) -> int: ...
    @property
    def duplicate_rows(self) -> int: ...
    @property
    def text_dropped_rows(self) -> int: ...
    @property
    def rejected_by_reason(self) -> Mapping[str, int]: ...
    @property
    def seconds(self) -> float: ...
    @property
    def watermark(self) -> datetime | None: ...


@dataclass(frozen=True)
class _RateSample:
    rate_id: str
    label_value: str
    value: float
    lower: float
    upper: float


class _RatesCollector(Collector):
    """`safewatch_rate`, `_lower`, `_upper` from a snapshot replaced whole by `set_rates`.

    A scrape reads one snapshot (a single reference), so it never sees half of an update.
    """

    def __init__(self, dimension: str) -> None:
        self.dimension = dimension
        self.snapshot: tuple[_RateSample, ...] = ()

    def describe(self) -> list[GaugeMetricFamily]:
        return self._families(())

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families(self.snapshot)

    def _families(self, samples: tuple[_RateSample, ...]) -> list[GaugeMetricFamily]:
        labels = ["rate", self.dimension]
        value = GaugeMetricFamily(
            f"{PREFIX}rate",
            f"Headline safety rate (numerator/denominator of the metric catalog) per "
            f"{self.dimension}, over the warehouse rows last given to the exporter.",
            labels=labels,
        )
        lower = GaugeMetricFamily(
            f"{PREFIX}rate_lower", "Lower bound of the rate's Wilson 95 % interval.", labels=labels
        )
        upper = GaugeMetricFamily(
            f"{PREFIX}rate_upper", "Upper bound of the rate's Wilson 95 % interval.", labels=labels
        )
        for s in samples:
            key = [s.rate_id, s.label_value]
            value.add_metric(key, s.value)
            lower.add_metric(key, s.lower)
            upper.add_metric(key, s.upper)
        return [value, lower, upper]


class JobMetrics:
    """The streaming job's metrics, registered on `registry` (names prefixed `safewatch_`).

    `rate_dimension` is the one segment dimension the headline rates are broken down by; it
    keeps at most `max_label_values` values (first admitted, most records first, then kept for
    the life of this object so that a series never flips to `other`); later values are summed
    into `other`. `clock` gives the time recorded as the last successful batch.

    Raises ValueError when the registry already holds a `safewatch_` metric of the same name
    (one JobMetrics per registry) or `rate_dimension` is not a segment dimension.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_label_values: int = 20,
        rate_dimension: str = "product_surface",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if rate_dimension not in SEGMENT_DIMENSIONS:
            msg = f"rate_dimension {rate_dimension!r} is not one of {list(SEGMENT_DIMENSIONS)}"
            raise ValueError(msg)
        if max_label_values < 1:
            msg = f"max_label_values must be at least 1, got {max_label_values}"
            raise ValueError(msg)
        self.max_label_values = max_label_values
        self.rate_dimension = rate_dimension
        self._clock = clock
        self._lock = threading.Lock()  # set_rates may run on another thread than the job
        self._admitted: set[str] = set()
        self._rates = tuple(rate(r) for r in HEADLINE_RATES)  # KeyError if one is renamed
        self._counter_columns = tuple(
            sorted({c for r in self._rates for c in (r.numerator, r.denominator)})
        )
        r = registry
        self.batches = Counter(
            f"{PREFIX}batches_total",
            "Micro-batches by outcome: committed, skipped (a replay already in the ledger) "
            "or failed.",
            ["outcome"],
            registry=r,
        )
        self.batch_duration = Histogram(
            f"{PREFIX}batch_duration_seconds",
            "Wall-clock seconds of a committed or failed micro-batch.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.input_rows = Counter(
            f"{PREFIX}input_rows_total", "Kafka records read by committed batches.", registry=r
        )
        self.aggregated_rows = Counter(
            f"{PREFIX}aggregated_rows_total",
            "Records aggregated (valid, on time, not duplicates).",
            registry=r,
        )
        self.late_rows = Counter(
            f"{PREFIX}late_rows_total", "Records older than the watermark.", registry=r
        )
        self.duplicate_rows = Counter(
            f"{PREFIX}duplicate_rows_total", "Records whose event_id was already seen.", registry=r
        )
        self.text_dropped_rows = Counter(
            f"{PREFIX}text_dropped_rows_total",
            "Aggregated records whose free text still held personal data (upstream redaction "
            "failed): counted with that text dropped, a masked copy sent to the dead-letter "
            "topic.",
            registry=r,
        )
        self.rejected_rows = Counter(
            f"{PREFIX}rejected_rows_total",
            "Records rejected to the dead-letter topic, by reason code.",
            ["reason"],
            registry=r,
        )
        self.last_success = Gauge(
            f"{PREFIX}last_successful_batch_timestamp_seconds",
            "Unix time at which the last batch was committed or skipped as a replay; 0 until then.",
            registry=r,
        )
        self.start_time = Gauge(
            f"{PREFIX}start_timestamp_seconds",
            "Unix time at which these metrics were created (the job started).",
            registry=r,
        )
        self.watermark = Gauge(
            f"{PREFIX}watermark_timestamp_seconds",
            "Event-time watermark after the last committed batch, as Unix time.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}consumer_lag_records",
            "Records in the topic not yet processed, summed over its partitions.",
            ["topic"],
            registry=r,
        )
        self.notifications_pending = Gauge(
            f"{PREFIX}notifications_pending",
            "Alert notifications waiting to be delivered (queued or being retried).",
            registry=r,
        )
        self._oldest_pending: datetime | None = None
        self.notifications_oldest_pending_age = Gauge(
            f"{PREFIX}notifications_oldest_pending_age_seconds",
            "Age of the oldest alert notification not yet delivered (0: none waiting): how "
            "long a page has been held back by a channel that is down.",
            registry=r,
        )
        self.notifications_oldest_pending_age.set_function(self._oldest_pending_age)
        self.notifications_failed = Counter(
            f"{PREFIX}notifications_failed_total",
            "Alert notifications given up on after their retries.",
            registry=r,
        )
        self.notifications_sent = Counter(
            f"{PREFIX}notifications_sent_total",
            "Alert notifications delivered, by channel.",
            ["channel"],
            registry=r,
        )
        self.alerts_firing = Gauge(
            f"{PREFIX}alerts_firing",
            "Safewatch metric alerts currently firing, by severity.",
            ["severity"],
            registry=r,
        )
        self._rates_collector = _RatesCollector(rate_dimension)
        registry.register(self._rates_collector)

        # Every labelled series exists from the start at 0, so that increase() sees the first
        # event and dashboards show 0 rather than no data.
        for outcome in BATCH_OUTCOMES:
            self.batches.labels(outcome=outcome)
        for reason in REJECT_REASONS:
            self.rejected_rows.labels(reason=reason)
        for channel in NOTIFICATION_CHANNELS:
            self.notifications_sent.labels(channel=channel)
        for severity in SEVERITIES:
            self.alerts_firing.labels(severity=severity)
        self.start_time.set(clock().timestamp())

    # -- batches ---------------------------------------------------------------------------

    def observe_batch(self, report: _Report) -> None:
        """Count one finished batch (a `BatchReport`): committed, or skipped as a replay.

        A skipped batch only counts as `skipped` and as progress (last success). Raises
        ValueError, before counting anything, for a reason code outside `REJECT_REASONS` or a
        negative count.
        """
        if report.skipped:
            self.batches.labels(outcome="skipped").inc()
            self.last_success.set(self._clock().timestamp())
            return
        unknown = sorted(set(report.rejected_by_reason) - set(REJECT_REASONS))
        if unknown:
            msg = f"batch reports unknown reject reason(s) {unknown}; known: {REJECT_REASONS}"
            raise ValueError(msg)
        counts = {
            "input_rows": report.input_rows,
            "aggregated_rows": report.aggregated_rows,
            "late_rows": report.late_rows,
            "duplicate_rows": report.duplicate_rows,
            "text_dropped_rows": report.text_dropped_rows,
            **{f"rejected_by_reason[{k}]": v for k, v in report.rejected_by_reason.items()},
            "seconds": report.seconds,
        }
        negative = {k: v for k, v in counts.items() if v < 0}
        if negative:
            msg = f"batch report has negative count(s) {negative}"
            raise ValueError(msg)
        self.batches.labels(outcome="committed").inc()
        self.batch_duration.observe(report.seconds)
        self.input_rows.inc(report.input_rows)
        self.aggregated_rows.inc(report.aggregated_rows)
        self.late_rows.inc(report.late_rows)
        self.duplicate_rows.inc(report.duplicate_rows)
        self.text_dropped_rows.inc(report.text_dropped_rows)
        for reason, n in report.rejected_by_reason.items():
            self.rejected_rows.labels(reason=reason).inc(n)
        if report.watermark is not None:
            self.watermark.set(report.watermark.timestamp())
        self.last_success.set(self._clock().timestamp())

    def observe_failure(self, seconds: float) -> None:
        """Count one batch that raised after `seconds`."""
        if seconds < 0:
            msg = f"batch seconds must be >= 0, got {seconds}"
            raise ValueError(msg)
        self.batches.labels(outcome="failed").inc()
        self.batch_duration.observe(seconds)

    # -- polled state ----------------------------------------------------------------------

    def set_lag(self, topic: str, records: int) -> None:
        """The consumer lag of `topic`, summed over its partitions by the caller."""
        if records < 0:
            msg = f"lag of topic {topic!r} must be >= 0, got {records}"
            raise ValueError(msg)
        self.consumer_lag.labels(topic=topic).set(records)

    def set_notifications(
        self,
        pending: int,
        failed_delta: int = 0,
        sent_by_channel: Mapping[str, int] | None = None,
        oldest_pending_at: datetime | None = None,
    ) -> None:
        """Notifications now pending; failed and sent ones since the previous call (deltas);
        when the oldest pending one was queued (its age is computed at each scrape).

        Raises ValueError, before changing anything, for a channel outside
        `NOTIFICATION_CHANNELS` or a negative number.
        """
        sent = dict(sent_by_channel or {})
        unknown = sorted(set(sent) - set(NOTIFICATION_CHANNELS))
        if unknown:
            msg = f"unknown notification channel(s) {unknown}; known: {NOTIFICATION_CHANNELS}"
            raise ValueError(msg)
        if pending < 0 or failed_delta < 0 or any(v < 0 for v in sent.values()):
            msg = f"notification counts must be >= 0: {pending=}, {failed_delta=}, {sent=}"
            raise ValueError(msg)
        self.notifications_pending.set(pending)
        with self._lock:
            self._oldest_pending = oldest_pending_at if pending else None
        self.notifications_failed.inc(failed_delta)
        for channel, n in sent.items():
            self.notifications_sent.labels(channel=channel).inc(n)

    def _oldest_pending_age(self) -> float:
        with self._lock:
            oldest = self._oldest_pending
        if oldest is None:
            return 0.0
        return max(0.0, (self._clock() - oldest).total_seconds())

    def set_firing(self, counts_by_severity: Mapping[str, int]) -> None:
        """Alerts firing now per severity; a severity not given is set to 0 (all resolved)."""
        unknown = sorted(set(counts_by_severity) - set(SEVERITIES))
        if unknown:
            msg = f"unknown severity(ies) {unknown}; known: {SEVERITIES}"
            raise ValueError(msg)
        for severity in SEVERITIES:
            self.alerts_firing.labels(severity=severity).set(counts_by_severity.get(severity, 0))

    # -- headline rates --------------------------------------------------------------------

    @property
    def rate_label_values(self) -> frozenset[str]:
        """Values of the rate dimension admitted so far (at most `max_label_values`)."""
        return frozenset(self._admitted)

    def set_rates(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace the headline rates with those of `rows`, summed per rate-dimension value.

        `rows` are warehouse aggregate rows (segment_window_agg: counter columns and dimension
        columns), typically the last closed window or hour, all of one dimension set. Rows not
        grouped by the dimension (value `*`) are ignored; NULL counters count as 0. A rate
        whose denominator is 0 has no series. Raises ValueError, changing nothing, when a row
        lacks a counter column or the rows mix dimension sets (their sums would double count).
        """
        dim = self.rate_dimension
        totals: dict[str, dict[str, int]] = {}
        dimension_sets: set[str] = set()
        for row in rows:
            value = row.get(dim)
            if value == ALL_DIMENSIONS_VALUE:
                continue
            missing = [c for c in (dim, *self._counter_columns) if c not in row]
            if missing:
                msg = f"aggregate row lacks column(s) {missing} needed for the headline rates"
                raise ValueError(msg)
            if row.get("dimension_set") is not None:
                dimension_sets.add(str(row["dimension_set"]))
            key = UNKNOWN_VALUE if value is None else str(value)
            sums = totals.setdefault(key, dict.fromkeys(self._counter_columns, 0))
            for c in self._counter_columns:
                sums[c] += int(row[c] or 0)
        if len(dimension_sets) > 1:
            msg = (
                f"rows mix dimension sets {sorted(dimension_sets)}; give set_rates the rows "
                "of one dimension set"
            )
            raise ValueError(msg)

        with self._lock:
            self._admit(totals)
            folded: dict[str, dict[str, int]] = {}
            for value, sums in totals.items():
                label = value if value in self._admitted else OTHER_VALUE
                target = folded.setdefault(label, dict.fromkeys(self._counter_columns, 0))
                for c, n in sums.items():
                    target[c] += n
            samples = []
            for label, sums in sorted(folded.items()):
                for r in self._rates:
                    v = rate_value(r.id, sums)
                    if v.value is not None:
                        samples.append(_RateSample(r.id, label, v.value, v.lower, v.upper))
            self._rates_collector.snapshot = tuple(samples)

    def _admit(self, totals: Mapping[str, Mapping[str, int]]) -> None:
        # The warehouse's cardinality control (pipelines.cardinality.admit): most records
        # first, ties by value; once admitted a value stays, so its series never moves to
        # `other`.
        # Only `other` is reserved: a label's `unknown` is a series of its own and counts.
        counts = {value: sums["events_seen"] for value, sums in totals.items()}
        limit = {"": self.max_label_values}
        allowed, _ = admit({"": self._admitted}, {"": counts}, limit, frozenset({OTHER_VALUE}))
        self._admitted = set(allowed[""])


@dataclass
class MetricsServer:
    """The running `/metrics` endpoint; `close()` stops it (also as a context manager)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(port: int, registry: CollectorRegistry, *, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve `registry` on http://`addr`:`port`/metrics from a daemon thread (0: any port).

    Raises InfraError naming the setting to change when the port cannot be bound.
    """
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        msg = (
            f"cannot serve metrics on {addr}:{port} ({exc}); "
            "choose another port with SAFEWATCH_ALERTING__METRICS_PORT"
        )
        raise InfraError(msg) from exc
    return MetricsServer(server, thread)
