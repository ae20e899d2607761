"""Counting a DataFrame of raw Kafka records: the one definition of what an event counts
as, shared by the streaming batches and the backfill.

`Aggregator.classified` checks, screens, classifies and aggregates the records (contract
checks, the PII screen, late and duplicate verdicts, the counters and histograms per window x
segment, the quality sample) in one pass per partition on the executors
(`pipelines.stream.classify`); `Aggregator.fold` applies cardinality control; and
`Aggregator.recompute` is the backfill's use of both. Nothing here writes anywhere: the
batch's commit is `pipelines.stream.batch`, the backfill's `jobs/backfill.py`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame

from pipelines.cardinality import Admission, admit, fold, value_counts
from pipelines.contract.reasons import DUPLICATE, rejected_by_reason
from pipelines.contract.records import Limits
from pipelines.durations import parse_duration
from pipelines.metrics.buckets import add_counter_buckets
from pipelines.metrics.catalog import counter_ids
from pipelines.metrics.sketches import merge_sketches
from pipelines.privacy.detectors import AllowList, screen_pattern
from pipelines.segments import OTHER_VALUE, RESERVED_VALUES
from pipelines.settings import Settings
from pipelines.stream.classify import check_and_count, collected, counted_ids, counts_of
from pipelines.stream.counting import Counting, ValueLimits
from pipelines.stream.dedup import repeated
from pipelines.stream.reports import Stages
from pipelines.stream.sampling import Sampling
from pipelines.warehouse.batch_result import SEGMENT_KEY


@dataclass(frozen=True)
class Classified:
    """Raw records classified and aggregated (Aggregator.classified)."""

    checked: DataFrame  # check_and_count's rows, cached while the context is open
    ids: pa.Table  # event_id and event_time of the aggregated records
    text_dropped: int  # aggregated records whose free text held personal data (dropped)
    # (partition, offset) of the duplicates whose text held personal data: not counted, so
    # no copy of theirs goes to the DLQ.
    dropped_repeats: list[tuple[int, int]]
    stats: list[dict[str, Any]]  # per topic, partition and status (merge.Counts.stats)
    aggregates: list[dict[str, Any]]  # per window x segment, before cardinality folding
    histograms: list[dict[str, Any]]  # per window x segment x distribution x bin
    by_status: Counter[str]  # records per status (aggregated, duplicate, late or a reason)
    sample: Any = None  # pyarrow array of sampled parsed events, or None
    # Cardinality control on the executors: the values each dimension keeps after this
    # batch and its new admissions (None: the driver decides from the aggregates).
    admission: tuple[dict[str, frozenset[str]], list[Admission]] | None = None


@dataclass(frozen=True)
class Recomputed:
    """A period's aggregates recomputed from retained records (Aggregator.recompute)."""

    aggregates: list[dict[str, Any]]  # as BatchResult.aggregates, windows of the period only
    histograms: list[dict[str, Any]]
    admissions: list[tuple[str, str, int]]
    input_rows: int  # records read
    aggregated_events: int  # valid events counted in the period
    outside_events: int  # valid events of windows outside the period (not written)
    duplicate_rows: int
    rejected_by_reason: dict[str, int]  # of all records read
    folded_rows: int


class Aggregator:
    """Counts raw Kafka records by the settings' contract, privacy and stream sections."""

    def __init__(self, settings: Settings) -> None:
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
        self.limits = Limits(
            contract.max_message_bytes,
            parse_duration(contract.max_future),
            parse_duration(contract.max_age),
        )

    def recompute(
        self,
        df: DataFrame,
        *,
        since: datetime,
        until: datetime,
        admitted: Mapping[str, Iterable[str]],
    ) -> tuple[Recomputed, dict[str, float]]:
        """The aggregates of the windows in [since, until) from `df` alone (the backfill).

        Same classification as a streaming batch, but with no watermark and no event ids
        from earlier batches: every valid event of the period counts once, late or not.
        Nothing is written: not the DLQ (the stream already sent rejects there), not the
        deduplication state, not the warehouse. Cardinality folding uses the stored
        admissions (`admitted`), so the backfill folds values the same way as the stream.
        """
        stages = Stages()
        with self.classified(df, stages, watermark=None, seen=None) as c:
            rows, hist_rows = c.aggregates, c.histograms

        def inside(row: dict[str, Any]) -> bool:
            start = row["window_start"]
            return bool(since <= start < until)

        kept = [r for r in rows if inside(r)]
        rows_out, hist_out, admissions, folded = self.fold(
            kept, [h for h in hist_rows if inside(h)], admitted
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
        stages: Stages,
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
        limits = self.limits
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

    def fold(
        self,
        rows: list[dict[str, Any]],
        hist_rows: list[dict[str, Any]],
        admitted: Mapping[str, Iterable[str]],
        admission: tuple[dict[str, frozenset[str]], list[Admission]] | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any], int]:
        """Cardinality control: admit new values up to each dimension's limit, after the
        values `admitted` so far (unless the executors did, `admission`), fold the rest; and
        the number of rows with a value counted as `other`.
        """
        dims = self.settings.stream.dimensions
        allowed, admissions = admission or admit(
            admitted,
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
