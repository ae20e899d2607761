"""The streaming aggregator: Kafka -> parse -> window x segment counts -> warehouse.

Thin wiring of pipelines/: Spark's Kafka source with back-pressure, one foreachBatch that
commits each micro-batch atomically and idempotently, a checkpoint for offsets.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery
from sqlalchemy import Engine

from pipelines.alerting.engine import AlertEngine
from pipelines.alerting.loader import load_rules
from pipelines.alerting.outbox import (
    AlertmanagerNotifier,
    DeliveryLoop,
    KafkaNotifier,
    Notifier,
    WebhookNotifier,
    deliver,
)
from pipelines.alerting.step import AlertStep
from pipelines.drift.step import DriftStep
from pipelines.durations import parse_duration, spark_interval
from pipelines.errors import ConfigError, SafewatchError
from pipelines.monitoring.exporter import JobMetrics, serve
from pipelines.monitoring.refresh import MetricsRefresher
from pipelines.settings import Settings
from pipelines.stream.batch import BatchProcessor
from pipelines.stream.derive import ClosedWindowSteps, WindowStep
from pipelines.stream.reports import BatchReport, Derived, StopRequested
from pipelines.stream.session import query_failure
from pipelines.warehouse.migrate import open_warehouse
from pipelines.warehouse.retry import RetryPolicy
from pipelines.warehouse.sink import WarehouseSink


@dataclass
class RunSummary:
    batches: list[BatchReport] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)  # closed-window steps, per batch
    interrupted: bool = False  # stopped by Ctrl-C (continuous mode), not by running dry

    @property
    def input_rows(self) -> int:
        return sum(b.input_rows for b in self.batches)

    @property
    def aggregated_rows(self) -> int:
        return sum(b.aggregated_rows for b in self.batches)


@dataclass
class RunningJob:
    """The started query and its batch processor, whose last batch's closed-window steps
    (drift, alert rules, notices) may still run when the query stops.
    """

    query: StreamingQuery
    processor: BatchProcessor
    delivery: DeliveryLoop | None = None  # the outbox's own schedule, stopped with the job
    checkpoint_dir: str = ""

    @property
    def stopping(self) -> bool:
        return self.processor.stop_before_next.is_set()

    def request_stop(self) -> None:
        """Stop once the batch under way (if any) is committed; safe from any thread."""
        self.processor.stop_before_next.set()

    def await_termination(self, poll_s: float = 0.5) -> None:
        """Wait for the query to stop, then for its last closed-window steps. After
        `request_stop`, the query stops when no trigger is active, or when the next batch
        starts (which raises StopRequested): the batch under way commits first.
        """
        try:
            while not self.query.awaitTermination(poll_s):
                if self.stopping and not self.query.status["isTriggerActive"]:
                    self.query.stop()
        except BaseException as exc:
            with suppress(Exception):  # the query's own error is the one to report
                self._close()
            failure = self.processor.failure
            if isinstance(failure, StopRequested) and not isinstance(exc, KeyboardInterrupt):
                return  # stopped as asked, before the next batch read anything
            if not isinstance(exc, KeyboardInterrupt) and isinstance(failure, SafewatchError):
                # A batch stopped on an error a person can act on: that error, not Spark's
                # wrapper of it (a page of Python and JVM traceback).
                raise failure from None
            if failure is None and isinstance(exc, StreamingQueryException):
                # Spark stopped the query itself (its checkpoint, its Kafka source): the
                # cause in one line. A batch's own unexpected error keeps its traceback.
                raise SafewatchError(query_failure(str(exc), self.checkpoint_dir)) from None
            raise
        self._close()

    def stop(self) -> None:
        """Stop the query (the checkpoint keeps its place) and finish the steps under way."""
        self.query.stop()
        self._close()

    def _close(self) -> None:
        try:
            self.processor.close()
        finally:
            if self.delivery is not None:
                self.delivery.stop()


def alerting(
    settings: Settings,
    engine: Engine,
    sink: WarehouseSink,
    log: Callable[[str], None],
    metrics: JobMetrics | None = None,
) -> tuple[AlertEngine | None, Callable[[], None] | None]:
    """The alert engine for the configured rules and a function that delivers the outbox."""
    if not settings.alerting.evaluate:
        return None, None
    paths = [Path(p) for p in settings.alerting.rules]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        msg = f"alert rule path(s) {missing} do not exist (setting alerting.rules)"
        raise ConfigError(msg)
    rules = load_rules(paths)
    a = settings.alerting
    alerts = AlertEngine(
        rules,
        sink.tables,
        settings.stream.dimensions,
        channels=a.channels,
        window=parse_duration(settings.stream.window),
        ttl_windows=a.ttl_windows,
        runbook_base_url=a.runbook_base_url,
    )
    notifiers = build_notifiers(settings)
    log(f"alerts: {len(rules)} rule(s) from {', '.join(a.rules)}; channels {', '.join(a.channels)}")
    # The job delivers after each batch and on its own schedule (DeliveryLoop): one at a time.
    lock = threading.Lock()

    def notify() -> None:
        with lock:
            _notify()

    def _notify() -> None:
        report = deliver(
            engine,
            notifiers,
            now=datetime.now(UTC),
            retry_initial=timedelta(seconds=a.retry_initial_s),
            retry_max=timedelta(seconds=a.retry_max_s),
            log=log,
            tables=sink.tables,
        )
        if report.sent:  # failures are logged by `deliver`, one line per channel
            channels = ", ".join(f"{n} to {c}" for c, n in sorted(report.sent_by_channel.items()))
            log(f"alerts: {report.sent} notice(s) delivered ({channels}), {report.pending} pending")
        if metrics is not None:
            metrics.set_notifications(
                report.pending, report.failed, report.sent_by_channel, report.oldest_pending_at
            )

    return alerts, notify


def window_steps(
    settings: Settings, sink: WarehouseSink, alerts: AlertEngine | None
) -> ClosedWindowSteps:
    """What a watermark move derives, in order: drift statistics and rate tests (when
    drift is enabled), then the alert rules (when they are evaluated).
    """
    steps: list[WindowStep] = []
    if settings.drift.enabled:
        steps.append(DriftStep(sink.tables, settings.drift, settings.stream.dimensions))
    if alerts is not None:
        steps.append(AlertStep(alerts))
    return ClosedWindowSteps(sink.tables, ",".join(settings.stream.dimensions), steps)


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    a = settings.alerting
    notifiers: dict[str, Notifier] = {}
    for channel in a.channels:
        if channel == "alertmanager":
            notifiers[channel] = AlertmanagerNotifier(
                a.alertmanager_url, timeout=a.request_timeout_s
            )
        elif channel == "kafka":
            notifiers[channel] = KafkaNotifier(settings.kafka, settings.kafka.topic_alerts)
        elif channel == "webhook":
            if a.notify_webhook_url is None:
                msg = "alerting.channels has webhook but alerting.notify_webhook_url is not set"
                raise ConfigError(msg)
            notifiers[channel] = WebhookNotifier(
                a.notify_webhook_url.get_secret_value(), timeout=a.request_timeout_s
            )
    return notifiers


def start_query(
    spark: SparkSession,
    settings: Settings,
    *,
    until_caught_up: bool,
    log: Callable[[str], None] = print,
    on_batch: Callable[[BatchReport], None] | None = None,
    on_derived: Callable[[Derived], None] | None = None,
    metrics: JobMetrics | None = None,
) -> RunningJob:
    """Start the aggregation query; with `until_caught_up` it stops once the topic is drained.

    With `metrics`, every batch updates the Prometheus metrics (pipeline health, headline
    rates of the newest closed window, firing alerts, outbox, consumer lag).
    """
    engine = open_warehouse(settings.warehouse, log=log)
    sink = WarehouseSink(
        engine,
        users_lg_k=settings.privacy.users_sketch_lg_k,
        retry=RetryPolicy.of(settings.warehouse),
        log=log,
    )
    sink.set_min_distinct_users(settings.privacy.min_distinct_users)
    sink.sync_distribution_bins()
    alerts, notify = alerting(settings, engine, sink, log, metrics)
    batch_callback, derived_callback = on_batch, on_derived
    on_failure = None
    if metrics is not None:
        severities = {r.name: r.severity for r in alerts.rules} if alerts else {}
        refresher = MetricsRefresher(metrics, engine, settings, severities)
        refresher.refresh_lag()
        on_failure = metrics.observe_failure

        def observed(report: BatchReport) -> None:
            metrics.observe_batch(report)
            refresher.refresh_lag()
            if on_batch is not None:
                on_batch(report)

        def derived(done: Derived) -> None:
            refresher.refresh(done.watermark)  # rates of the newest closed window, alerts
            if on_derived is not None:
                on_derived(done)

        batch_callback, derived_callback = observed, derived
    processor = BatchProcessor(
        sink,
        settings,
        log=log,
        on_batch=batch_callback,
        steps=window_steps(settings, sink, alerts),
        notify=notify,
        on_failure=on_failure,
        on_derived=derived_callback,
        # The closed windows' drift and alert rules run while Spark counts the next batch.
        overlap=True,
    )
    processor.quality.prepare()
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
    delivery = None
    if notify is not None:
        delivery = DeliveryLoop(notify, settings.alerting.deliver_interval_s, log=log).start()
    return RunningJob(query, processor, delivery, settings.stream.checkpoint_dir)


def run(
    spark: SparkSession,
    settings: Settings,
    *,
    until_caught_up: bool,
    log: Callable[[str], None] = print,
    metrics_port: int | None = None,
) -> RunSummary:
    """Run the query in the foreground until caught up (or until interrupted when continuous).

    With `metrics_port`, the job's Prometheus metrics are served on 127.0.0.1:<port>/metrics
    while it runs.
    """
    summary = RunSummary()
    metrics = server = None
    if metrics_port is not None:
        registry = CollectorRegistry()
        metrics = JobMetrics(registry)
        server = serve(metrics_port, registry)
        log(f"metrics: http://127.0.0.1:{server.port}/metrics")
    try:
        job = start_query(
            spark,
            settings,
            until_caught_up=until_caught_up,
            log=log,
            on_batch=summary.batches.append,
            on_derived=summary.derived.append,
            metrics=metrics,
        )
        with _ctrl_c_stops(job, log):
            try:
                job.await_termination()
            except KeyboardInterrupt:  # a second Ctrl-C: at once, the batch under way too
                log("stopping the streaming query now (the checkpoint keeps its place)")
                job.stop()
        summary.interrupted = job.stopping
    finally:
        if server is not None:
            server.close()
    return summary


@contextmanager
def _ctrl_c_stops(job: RunningJob, log: Callable[[str], None]) -> Iterator[None]:
    """While the job runs, a first Ctrl-C stops it after the batch under way (one line, no
    traceback: PySpark's own handler would interrupt a call into the JVM and print pages of
    py4j errors); a second one stops it at once. Outside the main thread, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(_signum: int, _frame: object) -> None:
        if job.stopping:
            raise KeyboardInterrupt
        job.request_stop()
        log("Ctrl-C: stopping after the batch under way (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
