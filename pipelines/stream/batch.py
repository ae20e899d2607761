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

Steps 2-3 are `pipelines.stream.aggregate.Aggregator`, shared with the backfill, so both
count by the same definitions; the steps of 7 are composed by the job
(`pipelines.stream.derive.ClosedWindowSteps`), the quality suite is
`pipelines.quality.sample`, and what a batch reports is `pipelines.stream.reports`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame

from pipelines import watermark
from pipelines.contract.reasons import AGGREGATED, DUPLICATE, LATE, UNPARSED, rejected_by_reason
from pipelines.crashpoints import crash_point
from pipelines.durations import parse_duration
from pipelines.quality.sample import SampleValidation, quality_rows
from pipelines.redact import redact_text
from pipelines.settings import Settings
from pipelines.stream.aggregate import Aggregator
from pipelines.stream.classify import dead_letters
from pipelines.stream.dedup import DedupState
from pipelines.stream.derive import ClosedWindowSteps
from pipelines.stream.dlq import dlq_records, write_dlq
from pipelines.stream.dlq import rejected_events as rejected_events_of
from pipelines.stream.heap import paused, settle
from pipelines.stream.merge import latest_event_time
from pipelines.stream.reports import BatchReport, Derived, Stages, StopRequested
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.sink import WarehouseSink


class BatchProcessor:
    """Callable for `DataStreamWriter.foreachBatch`; `bind_query` must follow `start()`.

    Idempotent per (query id, batch id): a batch id found in the ledger is skipped, so Spark's
    re-execution of the last batch after a crash changes nothing.

    After a batch commits, its closed windows are derived (the `steps` the job composes:
    drift statistics, alert rules; none by default; then delivery of the outbox) in a
    second transaction.
    With `overlap` that runs on a background thread while Spark checks and counts the next
    batch, which waits for it only before its own commit; call `close()` once the query has
    stopped. A batch a crash left underived is derived before the first batch of the
    restarted job.
    """

    def __init__(
        self,
        sink: WarehouseSink,
        settings: Settings,
        *,
        log: Callable[[str], None] = print,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_batch: Callable[[BatchReport], None] | None = None,
        steps: ClosedWindowSteps | None = None,
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
        self.steps = steps or ClosedWindowSteps(
            sink.tables, ",".join(settings.stream.dimensions), ()
        )
        self.notify = notify
        self.on_failure = on_failure
        self.settings = settings
        self.aggregator = Aggregator(settings)
        self.quality = SampleValidation(settings.quality)
        self.watermark_delay = parse_duration(settings.stream.watermark)
        self.log = log
        self.clock = clock
        self.on_batch = on_batch
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
        stages = Stages()
        recent = self.sink.recent_batches(query_id, watermark_before)
        quality = self.settings.quality
        sample_rows = quality.max_rows if quality.enabled else 0
        admitted = self.sink.admitted_values()
        with self.aggregator.classified(
            df,
            stages,
            watermark=watermark_before,
            seen=lambda ids: dedup.seen(recent, ids),
            sample_rows=sample_rows,
            admitted=admitted,
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
        watermark_after = watermark.advance(watermark_before, max_event_time, self.watermark_delay)
        rejected = rejected_by_reason(by_status)
        rows, hist_rows, admissions, folded = self.aggregator.fold(
            c.aggregates, c.histograms, admitted, c.admission
        )
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
        derives = sample is not None or self.steps.needed(
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
        stages = Stages()
        outcome = None
        if sample is not None:
            with stages("quality"):
                outcome = self.quality.validate(*sample)
        started = time.perf_counter()
        found: dict[str, list[Any]] = {}
        tries = 0

        def derive(conn: Any) -> None:
            nonlocal found, tries
            tries += 1
            if tries > 1:
                # Tried again after a transient warehouse failure: the earlier transaction
                # rolled back, and what it found or cached goes with it.
                found = {}
                self.steps.forget()
            found = self.steps.run(
                conn,
                before=before,
                after=after,
                now=self.clock,
                query_id=query_id,
                batch_id=batch_id,
                stage=stages,
            )

        if derives:
            quality = None if outcome is None else (outcome.success, quality_rows(outcome))
            try:
                self.sink.derive(query_id, batch_id, derive, now=self.clock(), quality=quality)
            except BaseException:
                # What the steps cached may hold this transaction's rows, which rolled back.
                self.steps.forget()
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
        transitions = found.get("alerts", [])
        derived = Derived(
            batch_id=batch_id,
            watermark=after,
            drift_windows=len(found.get("drift", [])),
            alert_transitions=len(transitions),
            alert_changes=dict(Counter(t.to_status for t in transitions)),
            quality_success=None if outcome is None else outcome.success,
            seconds=time.perf_counter() - started,
            stages=stages.seconds,
        )
        if self.overlap and (found.get("windows") or transitions or outcome is not None):
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


def _nothing_to_derive(conn: Any) -> None:
    """The derivation of a batch that closed no window, with no rule to fire early."""


def _offset_ranges(stats: list[Any]) -> list[OffsetRange]:
    ranges: dict[tuple[str, int], list[int]] = {}
    for s in stats:
        key = (s["topic"], s["partition"])
        lo, hi, n = ranges.get(key, [s["start_offset"], s["end_offset"], 0])
        ranges[key] = [min(lo, s["start_offset"]), max(hi, s["end_offset"]), n + s["rows"]]
    return [OffsetRange(t, p, lo, hi, n) for (t, p), (lo, hi, n) in sorted(ranges.items())]
