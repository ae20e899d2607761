"""The foreachBatch body: classify one micro-batch, aggregate it, commit it to the warehouse.

Per batch, in this order (a crash anywhere before step 6's commit leaves no trace in the
warehouse, and Spark re-runs the same batch id with the same offsets):
  1. skip the batch if its id is in the ledger (a replay);
  2. decode every record once, check the contract, its event time, the PII screen and the
     watermark (contract/records.py) and count per window x segment (stream/counting.py),
     in one Python pass per partition on the executors; partial sums merged here. The same
     pass draws the quality sample;
  3. find the duplicates on the driver, from the event ids the pass returned and those of
     recent batches (stream/dedup.py); in the rare batch that has some, count again
     knowing them. Every record is now aggregated, late, duplicate, or rejected
     with a reason;
  4. write rejected and late records, scrubbed, to the DLQ topic;
  5. fold values beyond a dimension's limit into `other` (cardinality control);
  6. write this batch's event ids for deduplication, then commit aggregates, histograms,
     admitted values, ledger row, offsets and the rejected-record index in one
     transaction; prune dedup files behind the watermark;
  7. derive, in a second transaction that marks the ledger row derived: the Great
     Expectations suite on the batch's quality sample, the drift statistics, rate tests
     and alert rules of the windows the new watermark closed, and the early alert rules on
     the windows still open; then deliver the alert outbox. In the job this runs in the
     background while Spark checks and counts the next batch, whose commit waits for it.
     A batch a crash left underived (committed, so Spark will not re-run it) is derived
     first thing when the job restarts, without its quality results: its sample was in
     memory only (`quality_success` stays null, "not run").

Steps 2-3 (`BatchProcessor.classified`) are shared with the backfill
(`BatchProcessor.recompute`), so both count by the same definitions.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from pipelines.alerting.engine import AlertEngine
from pipelines.contract.reasons import AGGREGATED, DUPLICATE, LATE, UNPARSED, rejected_by_reason
from pipelines.contract.records import Limits
from pipelines.crashpoints import crash_point
from pipelines.drift.compute import BaselineCache
from pipelines.durations import parse_duration
from pipelines.metrics.buckets import add_counter_buckets
from pipelines.metrics.catalog import counter_ids
from pipelines.metrics.sketches import merge_sketches
from pipelines.privacy.detectors import AllowList, screen_pattern
from pipelines.redact import redact_text
from pipelines.segments import OTHER_VALUE, RESERVED_VALUES
from pipelines.settings import Settings
from pipelines.stream.cardinality import Admission, admit, fold, value_counts
from pipelines.stream.classify import (
    check_and_count,
    collected,
    counted_ids,
    counts_of,
    dead_letters,
)
from pipelines.stream.counting import (
    Counting,
    Sampling,
    ValueLimits,
    latest_event_time,
)
from pipelines.stream.dedup import DedupState, repeated
from pipelines.stream.derive import DerivedWindows, derive_windows
from pipelines.stream.dlq import dlq_records, write_dlq
from pipelines.stream.dlq import rejected_events as rejected_events_of
from pipelines.stream.heap import paused, settle
from pipelines.warehouse.sink import SEGMENT_KEY, BatchResult, OffsetRange, WarehouseSink

# The order the statuses of alert transitions are listed in.
_TO_STATUS = ("pending", "firing", "resolved", "inactive")


def transitions_text(count: int, changes: Mapping[str, int]) -> str:
    """'10 alert transition(s) (4 to pending, 4 to firing, 2 resolved)': what became of the
    alerts, so that the count reads against the alerts shown and the notices sent (a
    transition to pending is recorded, never sent).
    """
    words = {"resolved": "{n} resolved", "inactive": "{n} back to inactive"}
    parts = [
        words.get(status, "{n} to " + status).format(n=n)
        for status in sorted(changes, key=lambda s: (_TO_STATUS + (s,)).index(s))
        if (n := changes[status])
    ]
    return f"{count} alert transition(s)" + (f" ({', '.join(parts)})" if parts else "")


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised at the start of a batch once the job is asked to stop: the batch is left,
    uncommitted, to the next run (Spark replays it from its offset log).
    """

    def __init__(self, batch_id: int) -> None:
        super().__init__(f"stopping: batch {batch_id} is left to the next run")
        self.batch_id = batch_id


@dataclass(frozen=True)
class BatchReport:
    batch_id: int
    skipped: bool
    input_rows: int = 0
    aggregated_rows: int = 0
    late_rows: int = 0
    duplicate_rows: int = 0
    # Of the aggregated records: free text held personal data, counted with it dropped.
    text_dropped_rows: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    aggregate_rows_written: int = 0
    quality_success: bool | None = None
    seconds: float = 0.0
    watermark: datetime | None = None
    folded_rows: int = 0  # aggregate rows whose segment had a value counted as `other`
    # Closed windows that got drift statistics, and alert transitions; None when they are
    # derived in the background (`Derived`, logged on its own line once done).
    drift_windows: int | None = 0
    alert_transitions: int | None = 0
    alert_changes: Mapping[str, int] = field(default_factory=dict)  # to_status -> transitions
    # Seconds per stage; "wait" is the time spent waiting for the previous batch's
    # closed-window steps, which ran meanwhile.
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected_by_reason.values())

    def describe(self) -> str:
        if self.skipped:
            return f"batch {self.batch_id}: already in the ledger, skipped (replay)"
        wm = self.watermark.strftime("%Y-%m-%d %H:%M:%S") if self.watermark else "none"
        rejects = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected_by_reason.items()))
        quality = {None: "not run", True: "passed", False: "FAILED"}[self.quality_success]
        dropped = (
            f" ({self.text_dropped_rows} with personal data in their text, which was dropped)"
            if self.text_dropped_rows
            else ""
        )
        derived = (
            ""
            if self.drift_windows is None
            else f"quality {quality}; drift for {self.drift_windows} closed window(s); "
            f"{transitions_text(self.alert_transitions or 0, self.alert_changes)}; "
        )
        return (
            f"batch {self.batch_id}: {self.input_rows} records -> {self.aggregated_rows} "
            f"aggregated{dropped}, {self.rejected_rows} rejected"
            f"{f' ({rejects})' if rejects else ''}, "
            f"{self.late_rows} late, {self.duplicate_rows} duplicates; "
            f"{self.aggregate_rows_written} aggregate rows upserted"
            f"{f' ({self.folded_rows} folded into other)' if self.folded_rows else ''}; "
            f"{derived}{self.seconds:.1f} s; watermark {wm}"
        )


@dataclass(frozen=True)
class Derived:
    """The steps a committed batch's new watermark triggers: drift statistics and alert
    rules of the windows it closed, then delivery of the outbox (`BatchProcessor`).
    """

    batch_id: int
    watermark: datetime | None
    drift_windows: int = 0
    alert_transitions: int = 0
    alert_changes: Mapping[str, int] = field(default_factory=dict)  # to_status -> transitions
    quality_success: bool | None = None  # None: not run (no parsed event, or disabled)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        quality = {None: "not run", True: "passed", False: "FAILED"}[self.quality_success]
        return (
            f"batch {self.batch_id}: quality {quality}; drift for {self.drift_windows} closed "
            f"window(s); {transitions_text(self.alert_transitions, self.alert_changes)}; "
            f"{self.seconds:.1f} s"
        )


class _Stages:
    """Wall-clock seconds per stage of a batch, for the log and the benchmark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: list[tuple[str, float]] = []  # a stage may run inside another (drift)

    def start(self, name: str) -> None:
        self._open.append((name, time.perf_counter()))

    def stop(self) -> None:
        if self._open:
            name, t0 = self._open.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop()


@dataclass(frozen=True)
class Classified:
    """Raw records classified and aggregated (BatchProcessor.classified)."""

    checked: DataFrame  # check_and_count's rows, cached while the context is open
    ids: pa.Table  # event_id and event_time of the aggregated records
    text_dropped: int  # aggregated records whose free text held personal data (dropped)
    # (partition, offset) of the duplicates whose text held personal data: not counted, so
    # no copy of theirs goes to the DLQ.
    dropped_repeats: list[tuple[int, int]]
    stats: list[dict[str, Any]]  # per topic, partition and status (counting.Counts.stats)
    aggregates: list[dict[str, Any]]  # per window x segment, before cardinality folding
    histograms: list[dict[str, Any]]  # per window x segment x distribution x bin
    by_status: Counter[str]  # records per status (aggregated, duplicate, late or a reason)
    sample: Any = None  # pyarrow array of sampled parsed events, or None
    # Cardinality control on the executors: the values each dimension keeps after this
    # batch and its new admissions (None: the driver decides from the aggregates).
    admission: tuple[dict[str, frozenset[str]], list[Admission]] | None = None


@dataclass(frozen=True)
class Recomputed:
    """A period's aggregates recomputed from retained records (BatchProcessor.recompute)."""

    aggregates: list[dict[str, Any]]  # as BatchResult.aggregates, windows of the period only
    histograms: list[dict[str, Any]]
    admissions: list[tuple[str, str, int]]
    input_rows: int  # records read
    aggregated_events: int  # valid events counted in the period
    outside_events: int  # valid events of windows outside the period (not written)
    duplicate_rows: int
    rejected_by_reason: dict[str, int]  # of all records read
    folded_rows: int


class BatchProcessor:
    """Callable for `DataStreamWriter.foreachBatch`; `bind_query` must follow `start()`.

    Idempotent per (query id, batch id): a batch id found in the ledger is skipped, so Spark's
    re-execution of the last batch after a crash changes nothing.

    After a batch commits, its closed windows are derived (drift statistics, alert rules,
    then delivery of the outbox) in a second transaction. With `overlap` that runs on a
    background thread while Spark checks and counts the next batch, which waits for it only
    before its own commit; call `close()` once the query has stopped. A batch a crash left
    underived is derived before the first batch of the restarted job.
    """

    def __init__(
        self,
        sink: WarehouseSink,
        settings: Settings,
        *,
        log: Callable[[str], None] = print,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_batch: Callable[[BatchReport], None] | None = None,
        alerts: AlertEngine | None = None,
        notify: Callable[[], None] | None = None,
        on_failure: Callable[[float], None] | None = None,
        on_derived: Callable[[Derived], None] | None = None,
        overlap: bool = False,
    ) -> None:
        self.sink = sink
        self.on_derived = on_derived
        self.overlap = overlap
        self._pending: Future[Derived] | None = None
        self._deriving: ThreadPoolExecutor | None = None
        self._caught_up: set[str] = set()
        self.alerts = alerts
        self.notify = notify
        self.on_failure = on_failure
        self.settings = settings
        stream, contract, privacy = settings.stream, settings.contract, settings.privacy
        self.counting = Counting(
            window_s=int(parse_duration(stream.window).total_seconds()),
            slice_s=int(parse_duration(stream.early_slice).total_seconds()),
            dimensions=tuple(stream.dimensions),
            users_lg_k=privacy.users_sketch_lg_k,
            screen=screen_pattern(),
            # Public contacts (helplines, support addresses) that are not personal data.
            allow=AllowList(privacy.pii_allowed_values, privacy.pii_allowed_patterns)
            if privacy.pii_allowed_values or privacy.pii_allowed_patterns
            else None,
        )
        self.watermark_delay: timedelta = parse_duration(stream.watermark)
        self.max_future = parse_duration(contract.max_future)
        self.max_age = parse_duration(contract.max_age)
        self.log = log
        self.clock = clock
        self.on_batch = on_batch
        self._validator: Future[Any] | None = None
        self._baseline = BaselineCache()
        self._query_id: str | None = None
        self._bound = threading.Event()
        # What the last failed batch raised: Spark reports it wrapped in its own exception,
        # with the Python traceback in the message (`RunningJob` reports this one instead).
        self.failure: BaseException | None = None
        # Set to stop the query at the start of the next batch, before it reads anything:
        # that batch raises StopRequested and is left, uncommitted, to the next run.
        self.stop_before_next = threading.Event()

    def bind_query(self, query_id: str) -> None:
        self._query_id = query_id
        self._bound.set()

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        if not self._bound.wait(timeout=120) or self._query_id is None:
            msg = "BatchProcessor.bind_query was not called after the query started"
            raise RuntimeError(msg)
        started = time.perf_counter()
        try:
            if self.stop_before_next.is_set():
                raise StopRequested(batch_id)
            with paused():
                report = self.process(df, batch_id, self._query_id)
        except BaseException as exc:
            self.failure = exc
            if self.on_failure:
                self.on_failure(time.perf_counter() - started)
            raise
        # After the first batch the driver's set-up is done (the quality suite built, the
        # warehouse and Spark's Python side imported): out of later collections.
        settle()
        if self.on_batch:
            self.on_batch(report)

    def drain(self) -> Derived | None:
        """Wait for the closed-window steps running in the background; raise what they raised."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    def close(self) -> Derived | None:
        """Wait for the last batch's closed-window steps and stop the background thread."""
        try:
            return self.drain()
        finally:
            if self._deriving is not None:
                self._deriving.shutdown()
                self._deriving = None

    def process(self, df: DataFrame, batch_id: int, query_id: str) -> BatchReport:
        """Classify, aggregate and commit `df` as batch `batch_id` of `query_id`."""
        self._catch_up(query_id)
        if self.sink.is_committed(query_id, batch_id):
            skipped = BatchReport(batch_id=batch_id, skipped=True)
            self.log(skipped.describe())
            return skipped
        started = self.clock()
        spark = df.sparkSession
        watermark_before = self.sink.watermark(query_id)
        dedup = DedupState(spark, self.settings.contract.dedup_state_dir, query_id)
        stages = _Stages()
        recent = self.sink.recent_batches(query_id, watermark_before)
        quality = self.settings.quality
        sample_rows = quality.max_rows if quality.enabled else 0
        with self.classified(
            df,
            stages,
            watermark=watermark_before,
            seen=lambda ids: dedup.seen(recent, ids),
            sample_rows=sample_rows,
            admitted=self.sink.admitted_values(),
        ) as c:
            stats, by_status = c.stats, c.by_status
            dlq_rows = sum(v for k, v in by_status.items() if k not in (AGGREGATED, DUPLICATE))
            text_dropped = c.text_dropped
            dlq_rows += text_dropped
            rejected_events: list[dict[str, Any]] = []
            if dlq_rows:
                stages.start("dlq")
                letters = dead_letters(c.checked, c.dropped_repeats)
                records = dlq_records(
                    letters, query_id=query_id, batch_id=batch_id,
                    max_record_bytes=self.settings.kafka.dlq_max_record_bytes,
                ).persist()  # fmt: skip
                try:
                    write_dlq(records, self.settings.kafka)
                    rejected_events = rejected_events_of(records)
                finally:
                    records.unpersist()
                stages.stop()
                crash_point("dlq-written", batch_id)
            parsed_rows = sum(v for k, v in by_status.items() if k not in UNPARSED)
            # Validated after the commit, with the closed windows (`_derive`).
            sample = (c.sample, parsed_rows) if quality.enabled and parsed_rows else None
            with stages("dedup"):
                dedup.write(c.ids, batch_id)

        max_event_time = latest_event_time(stats)
        watermark_after = watermark_before
        if max_event_time is not None:
            candidate = max_event_time - self.watermark_delay
            if watermark_after is None or candidate > watermark_after:
                watermark_after = candidate
        rejected = rejected_by_reason(by_status)
        rows, hist_rows, admissions, folded = self._fold(c.aggregates, c.histograms, c.admission)
        result = BatchResult(
            query_id=query_id,
            batch_id=batch_id,
            topic=",".join(sorted({s["topic"] for s in stats})),
            started_at=started,
            input_rows=sum(by_status.values()),
            late_rows=by_status[LATE],
            aggregated_rows=by_status[AGGREGATED],
            watermark_before=watermark_before,
            watermark_after=watermark_after,
            offsets=_offset_ranges(stats),
            aggregates=rows,
            rejected_by_reason=rejected,
            duplicate_rows=by_status[DUPLICATE],
            dlq_rows=dlq_rows,
            max_event_time=max_event_time,
            histograms=hist_rows,
            admissions=[(a.dimension, a.value, a.events) for a in admissions],
            rejected_events=rejected_events,
        )
        derives = sample is not None or self._derives(
            watermark_before, watermark_after, by_status[AGGREGATED]
        )
        if self._pending is not None:
            with stages("wait"):  # for the previous batch's closed-window steps
                self.drain()
        with stages("commit"):
            # A batch with nothing to derive is derived at once: nothing to wait for.
            written = self.sink.commit(
                result, now=self.clock(), derive=None if derives else _nothing_to_derive
            )
        crash_point("committed", batch_id)
        derived: Derived | None = None
        if not self.overlap:
            derived = self._derive(
                query_id, batch_id, watermark_before, watermark_after, derives, sample
            )
            for name, seconds in derived.stages.items():
                stages.seconds[name] = stages.seconds.get(name, 0.0) + seconds
        if watermark_after is not None:
            dedup.prune(self.sink.stale_batches(query_id, watermark_after, since=watermark_before))
        report = BatchReport(
            batch_id=batch_id,
            skipped=False,
            input_rows=result.input_rows,
            aggregated_rows=result.aggregated_rows,
            late_rows=result.late_rows,
            duplicate_rows=result.duplicate_rows,
            text_dropped_rows=text_dropped,
            rejected_by_reason=rejected,
            aggregate_rows_written=written,
            quality_success=derived.quality_success if derived else None,
            seconds=(self.clock() - started).total_seconds(),
            watermark=watermark_after,
            folded_rows=folded,
            drift_windows=derived.drift_windows if derived else None,
            alert_transitions=derived.alert_transitions if derived else None,
            alert_changes=derived.alert_changes if derived else {},
            stages=stages.seconds,
        )
        self.log(report.describe())
        if self.overlap:  # logged before the derivation's own line
            if self._deriving is None:
                self._deriving = ThreadPoolExecutor(1, thread_name_prefix="safewatch-derive")
            self._pending = self._deriving.submit(
                self._derive,
                query_id,
                batch_id,
                watermark_before,
                watermark_after,
                derives,
                sample,
            )
        return report

    def _derives(self, before: datetime | None, after: datetime | None, aggregated: int) -> bool:
        """Whether a batch that moved the watermark from `before` to `after` and aggregated
        `aggregated` events has anything to derive: windows it closed, or open windows that
        rules may fire early on.
        """
        if after is None:
            return False
        if aggregated and self.alerts is not None and self.alerts.early_rules:
            return True
        if before is not None and after <= before:
            return False
        return self.settings.drift.enabled or self.alerts is not None

    def _derive(
        self,
        query_id: str,
        batch_id: int,
        before: datetime | None,
        after: datetime | None,
        derives: bool,
        sample: tuple[Any, int] | None = None,
    ) -> Derived:
        """The quality suite on the batch's `sample` (the sampled parsed events and how many
        the batch parsed), drift statistics and alert rules for the windows the batch's
        watermark closed (one transaction, marking the batch derived), then delivery of the
        outbox.
        """
        crash_point("before-derive", batch_id)
        stages = _Stages()
        outcome = None
        if sample is not None:
            with stages("quality"):
                outcome = self._validate(*sample)
        started = time.perf_counter()
        found = DerivedWindows()
        tries = 0

        def derive(conn: Any) -> None:
            nonlocal tries
            tries += 1
            if tries > 1:
                # Tried again after a transient warehouse failure: the earlier transaction
                # rolled back, and what it found or cached goes with it.
                found.windows.clear()
                found.transitions.clear()
                self._baseline.clear()
            derive_windows(
                conn,
                self.sink.tables,
                self.settings,
                before=before,
                after=after,
                alerts=self.alerts,
                now=self.clock,
                query_id=query_id,
                batch_id=batch_id,
                baseline=self._baseline,
                stage=stages,
                out=found,
            )

        if derives:
            quality = None if outcome is None else (outcome.success, _quality_rows(outcome))
            try:
                self.sink.derive(query_id, batch_id, derive, now=self.clock(), quality=quality)
            except BaseException:
                # The baseline sums may hold this transaction's rows, which rolled back.
                self._baseline.clear()
                raise
        if self.notify is not None:
            with stages("notify"):
                try:
                    self.notify()
                except Exception as exc:  # noqa: BLE001 - delivery never fails a batch
                    # The batch is committed; its notices wait in the outbox for the next
                    # try (the delivery loop's, or the next batch's).
                    self.log(
                        "alerts: delivery failed, notices kept in the outbox: "
                        f"{type(exc).__name__}: {redact_text(str(exc))}"
                    )
        derived = Derived(
            batch_id=batch_id,
            watermark=after,
            drift_windows=len(found.windows) if self.settings.drift.enabled else 0,
            alert_transitions=len(found.transitions),
            alert_changes=dict(Counter(t.to_status for t in found.transitions)),
            quality_success=None if outcome is None else outcome.success,
            seconds=time.perf_counter() - started,
            stages=stages.seconds,
        )
        if self.overlap and (found.windows or found.transitions or outcome is not None):
            self.log(derived.describe())
        if self.on_derived is not None:
            self.on_derived(derived)
        return derived

    def _catch_up(self, query_id: str) -> None:
        """Derive the query's batches a crash left committed but not derived (once per run)."""
        if query_id in self._caught_up:
            return
        self.drain()
        behind = self.sink.underived(query_id)
        if behind:
            self.log(
                f"deriving {len(behind)} committed batch(es) whose drift statistics and alert "
                "rules were not done when the job stopped"
            )
        for batch_id, before, after in behind:
            done = self._derive(query_id, batch_id, before, after, derives=True)
            if self.settings.quality.enabled:
                self.log(
                    f"batch {batch_id}: quality not run (its sample was lost when the job "
                    f"stopped); {done.drift_windows} closed window(s) derived"
                )
        self._caught_up.add(query_id)

    def recompute(
        self, df: DataFrame, *, since: datetime, until: datetime
    ) -> tuple[Recomputed, dict[str, float]]:
        """The aggregates of the windows in [since, until) from `df` alone (the backfill).

        Same classification as a streaming batch, but with no watermark and no event ids
        from earlier batches: every valid event of the period counts once, late or not.
        Nothing is written: not the DLQ (the stream already sent rejects there), not the
        deduplication state, not the warehouse. Cardinality folding uses the stored
        admissions, so the backfill folds values the same way as the stream.
        """
        stages = _Stages()
        with self.classified(df, stages, watermark=None, seen=None) as c:
            rows, hist_rows = c.aggregates, c.histograms

        def inside(row: dict[str, Any]) -> bool:
            start = row["window_start"]
            return bool(since <= start < until)

        kept = [r for r in rows if inside(r)]
        rows_out, hist_out, admissions, folded = self._fold(
            kept, [h for h in hist_rows if inside(h)]
        )
        return (
            Recomputed(
                aggregates=rows_out,
                histograms=hist_out,
                admissions=[(a.dimension, a.value, a.events) for a in admissions],
                input_rows=sum(c.by_status.values()),
                aggregated_events=sum(r["events"] for r in kept),
                outside_events=sum(r["events"] for r in rows) - sum(r["events"] for r in kept),
                duplicate_rows=c.by_status[DUPLICATE],
                rejected_by_reason=rejected_by_reason(c.by_status),
                folded_rows=folded,
            ),
            stages.seconds,
        )

    @contextmanager
    def classified(
        self,
        df: DataFrame,
        stages: _Stages,
        *,
        watermark: datetime | None,
        seen: Callable[[pa.Array], list[str]] | None,
        sample_rows: int = 0,
        admitted: Mapping[str, Iterable[str]] | None = None,
    ) -> Iterator[Classified]:
        """Check, screen, classify and aggregate raw Kafka records (the records stay cached).

        The one definition of what an event counts as, shared by the streaming batches and
        the backfill: contract checks, the PII screen, late and duplicate verdicts, then the
        counters and histograms per window x segment (before cardinality folding), and a
        deterministic sample of at most `sample_rows` parsed events for the quality suite.

        With the values `admitted` so far, cardinality control runs on the executors
        (counting.ValueLimits): the batch's new values are admitted (`Classified.admission`)
        and the rest counted as `other` before anything reaches the driver.
        """
        limits = Limits(self.settings.contract.max_message_bytes, self.max_future, self.max_age)
        sampling = Sampling(sample_rows, self.settings.quality.sample_seed)
        dims = self.settings.stream.dimensions
        value_limits = self.settings.stream.value_limits()
        counting = self.counting
        if admitted is not None:
            keep = {d: frozenset(admitted.get(d, ())) - RESERVED_VALUES for d in dims}
            room = {d: max(value_limits[d] - len(keep[d]), 0) for d in dims}
            counting = dataclasses.replace(
                counting, values=ValueLimits(tuple(keep.items()), tuple(room.items()))
            )

        def counted(
            duplicates: frozenset[tuple[int, int]], keep_records: bool, by: Counting = counting
        ) -> DataFrame:
            return check_and_count(
                df,
                limits=limits,
                watermark=watermark,
                counting=by,
                sampling=sampling,
                duplicates=duplicates,
                keep_records=keep_records,
            )

        # Each partition checks and counts its records in one Python pass, as if none were a
        # duplicate; the records stay cached for the DLQ.
        checked = counted(frozenset(), keep_records=True).persist()
        try:
            with stages("check+count"):
                partials, ids = collected(checked)
            with stages("duplicates"):
                # Ids that earlier batches within the watermark counted (`seen`), or that an
                # earlier record of this batch holds.
                earlier = seen(ids.column("event_id")) if seen is not None else []
                duplicates = repeated(ids, earlier)
            if duplicates:
                # Rare (a producer's retries, a replayed topic): count again, knowing them.
                with stages("recount"):
                    partials = counted(frozenset(duplicates), keep_records=False).toArrow()
            counts = counts_of(partials, counting, sampling)
            admission = None
            if admitted is not None and counts.new_values is not None:
                admission = admit(admitted, counts.new_values, value_limits)
                allowed = admission[0]
                if any(value in allowed[d] for d, value in counts.folded):
                    # A partition counted as `other` a value the batch admits (it came after
                    # the partition's room was used up): count again with the final limits.
                    final = dataclasses.replace(
                        counting,
                        values=ValueLimits(tuple((d, allowed[d]) for d in dims), final=True),
                    )
                    with stages("recount"):
                        partials = counted(frozenset(duplicates), False, final).toArrow()
                    counts = counts_of(partials, final, sampling)
            by_status = Counter[str]()
            for s in counts.stats:
                by_status[s["status"]] += s["rows"]
            dropped = ids.filter(ids.column("text_dropped"))
            repeats = set(duplicates)
            dropped_repeats = [
                xy for xy in zip(dropped.column("partition").to_pylist(),
                                 dropped.column("offset").to_pylist(), strict=True)
                if xy in repeats
            ]  # fmt: skip
            yield Classified(
                checked, counted_ids(ids, duplicates), len(dropped) - len(dropped_repeats),
                dropped_repeats, counts.stats, counts.aggregates, counts.histograms, by_status,
                counts.sample, admission,
            )  # fmt: skip
        finally:
            checked.unpersist()

    def _fold(
        self,
        rows: list[dict[str, Any]],
        hist_rows: list[dict[str, Any]],
        admission: tuple[dict[str, frozenset[str]], list[Admission]] | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any], int]:
        """Cardinality control: admit new values up to each dimension's limit (unless the
        executors did, `admission`), fold the rest; and the number of rows with a value
        counted as `other`.
        """
        dims = self.settings.stream.dimensions
        allowed, admissions = admission or admit(
            self.sink.admitted_values(),
            value_counts(rows, dims, "events_seen"),
            self.settings.stream.value_limits(),
        )
        if any(r[d] not in allowed[d] and r[d] not in RESERVED_VALUES for r in rows for d in dims):
            lg_k = self.settings.privacy.users_sketch_lg_k
            rows = fold(
                rows,
                allowed,
                SEGMENT_KEY,
                add=counter_ids(),
                merge={
                    "users_sketch": lambda sketches: merge_sketches(sketches, lg_k)[0],
                    "bucket_sums": lambda sums: add_counter_buckets(*sums),
                    "slice_sums": lambda sums: add_counter_buckets(*sums),
                },
            )
            hist_rows = fold(
                hist_rows, allowed, (*SEGMENT_KEY, "distribution", "bin"), add=["count"]
            )
        folded = sum(1 for r in rows if any(r[d] == OTHER_VALUE for d in dims))
        return rows, hist_rows, admissions, folded

    def prepare_quality(self) -> None:
        """Start building the quality suite in the background (it takes seconds): the
        streaming job calls this before its query starts, so the first batch need not wait.
        """
        if self.settings.quality.enabled and self._validator is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="safewatch-quality")
            self._validator = pool.submit(self._build_validator)
            pool.shutdown(wait=False)

    def _build_validator(self) -> Any:
        from pipelines.quality.runner import BatchValidator
        from pipelines.quality.suite import load_suite

        return BatchValidator(
            load_suite(),
            max_rows=self.settings.quality.max_rows,
            seed=self.settings.quality.sample_seed,
            max_text_chars=self.settings.quality.max_text_chars,
        )

    def _validate(self, sample: Any, total: int) -> Any:
        """Run the suite on the sampled parsed events (`total` of them in the batch)."""
        from pipelines.quality.suite import leaf_columns
        from schemas import event_schema

        if self._validator is None or self._validator.exception() is not None:
            # Not prepared, or the background build failed: build here (and raise here).
            self._validator = Future()
            self._validator.set_result(self._build_validator())
        validator = self._validator.result()
        if total == 0 or sample is None:
            return None
        columns: dict[str, Any] = {}
        for leaf in leaf_columns(event_schema("1")):
            values: Any = sample
            for part in leaf.path:
                values = pc.struct_field(values, part)
            if leaf.node.get("format") == "date-time":
                values = pa.array([_iso_millis(t) for t in values.to_pylist()], pa.string())
            columns[leaf.column] = values
        # Arrow, not pandas: the validator cuts long strings before converting.
        return validator.validate(pa.table(columns), total_rows=total)


def _nothing_to_derive(conn: Any) -> None:
    """The derivation of a batch that closed no window, with no rule to fire early."""


def _iso_millis(t: datetime | None) -> str | None:
    """A date-time as the event carries it, to the millisecond (as the suite reads it)."""
    if t is None:
        return None
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _quality_rows(quality: Any) -> list[dict[str, Any]]:
    if quality is None:
        return []
    rows = []
    for row in quality.to_rows():
        rows.append(
            {
                "expectation_type": row["expectation_type"],
                "column_name": row.get("column") or "",
                "success": bool(row["success"]),
                "element_count": int(row.get("element_count") or 0),
                "unexpected_count": int(row.get("unexpected_count") or 0),
                "unexpected_percent": float(row.get("unexpected_percent") or 0.0),
                "rows_total": quality.rows_total,
                "rows_validated": quality.rows_validated,
                "sampled": quality.sampled,
            }
        )
    return rows


def _offset_ranges(stats: list[Any]) -> list[OffsetRange]:
    ranges: dict[tuple[str, int], list[int]] = {}
    for s in stats:
        key = (s["topic"], s["partition"])
        lo, hi, n = ranges.get(key, [s["start_offset"], s["end_offset"], 0])
        ranges[key] = [min(lo, s["start_offset"]), max(hi, s["end_offset"]), n + s["rows"]]
    return [OffsetRange(t, p, lo, hi, n) for (t, p), (lo, hi, n) in sorted(ranges.items())]
