"""What a micro-batch hands the warehouse sink, and how its sums are added to stored rows.

`BatchResult` is one batch as the sink commits it: its ledger figures, its Kafka offset
ranges (`OffsetRange`) and its partial counts per window × segment, keyed by `SEGMENT_KEY`.
`ReplacedWindows` is what a backfill's replacement of a period did. `ledger_duration_ms`
and `added_sums` are the two values of a stored row that are not copied as they come: the
duration bounded to its column, and the per-part counter sums added to the stored ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipelines.contract.reasons import PARSE_ERRORS
from pipelines.errors import SafewatchError
from pipelines.metrics.buckets import (
    CounterBuckets,
    add_counter_buckets,
    encode_counter_buckets,
    read_counter_buckets,
)
from pipelines.metrics.catalog import counter_ids
from pipelines.segments import SEGMENT_DIMENSIONS

SEGMENT_KEY = ("window_start", "dimension_set", *SEGMENT_DIMENSIONS)


def counted_columns() -> tuple[str, ...]:
    """Columns of segment_window_agg that batches add to."""
    return counter_ids()


class OffsetsAlreadyIngestedError(SafewatchError):
    """The batch's Kafka offsets were already counted by another query (checkpoint reset)."""


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    start: int  # first offset in the batch
    end: int  # last offset in the batch (inclusive)
    rows: int


@dataclass(frozen=True)
class BatchResult:
    query_id: str
    batch_id: int
    topic: str
    started_at: datetime
    input_rows: int
    late_rows: int
    aggregated_rows: int
    watermark_before: datetime | None
    watermark_after: datetime | None
    offsets: Sequence[OffsetRange]
    # Each aggregate: window_start, window_end, dimension_set, all SEGMENT_DIMENSIONS, every
    # counter of COUNTED_COLUMNS and users_sketch (serialized HLL sketch bytes or None);
    # optionally bucket_sums (pipelines.metrics.buckets.CounterBuckets: counter id -> sums
    # per user bucket) and slice_sums (the same, per slice of the window), added to the
    # stored sums.
    aggregates: Sequence[dict[str, Any]] = field(default_factory=list)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    duplicate_rows: int = 0
    dlq_rows: int = 0
    max_event_time: datetime | None = None
    quality_success: bool | None = None
    quality_rows: Sequence[dict[str, Any]] = field(default_factory=list)
    # Each histogram row: window_start, dimension_set, all SEGMENT_DIMENSIONS, distribution,
    # bin, count.
    histograms: Sequence[dict[str, Any]] = field(default_factory=list)
    # Dimension values this batch admitted (cardinality control): dimension, value, events.
    admissions: Sequence[tuple[str, str, int]] = field(default_factory=list)
    # Rejected and late records, without payload (pipelines.stream.dlq.rejected_event).
    rejected_events: Sequence[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def parse_errors(self) -> int:
        """Records that were not a readable event at all (kept for the ledger's column):
        also those whose check failed unexpectedly (unprocessable), which keep no event.
        """
        return sum(self.rejected_by_reason.get(r, 0) for r in PARSE_ERRORS)


@dataclass(frozen=True)
class ReplacedWindows:
    """What `WarehouseSink.replace_windows` did (also logged in backfill_runs)."""

    run_id: int
    rows_deleted: int
    rows_written: int


# batch_ledger.duration_ms is an INTEGER (PostgreSQL: 32 bits, ~24.8 days of milliseconds).
_MAX_DURATION_MS = 2**31 - 1


def ledger_duration_ms(elapsed: timedelta) -> int:
    """A batch's duration for batch_ledger.duration_ms, within the column's range: a batch
    whose start time is weeks old (a result built from a replay, a wrong clock) or in the
    future is recorded at the bound, not a failed commit.
    """
    return max(0, min(_MAX_DURATION_MS, int(elapsed.total_seconds() * 1000)))


def added_sums(
    stored_row: bool, stored: bytes | None, added: CounterBuckets | None
) -> bytes | None:
    """The stored form of per-part counter sums (bucket_sums, slice_sums) after a batch
    adds `added` to a row (`stored_row`: the row exists, holding `stored`). Sums add up
    like the counters; a row stored or added without them (counted before they were kept),
    or whose sums do not have the same parts (a changed setting), keeps none (NULL): its
    sums are unknown, and its readers fall back (docs/warehouse.md).
    """
    stored_sums = read_counter_buckets(stored)
    if added is None or (stored_row and stored_sums is None):
        return None
    try:
        return encode_counter_buckets(add_counter_buckets(stored_sums, added))
    except ValueError:
        return None
