"""What the weekly report reads from the warehouse, as plain values: the output of
`pipelines.report.store` and the input of the pure builders (`pipelines.report.build`).

The report reads in two steps. `WeekData` is everything about the week that does not depend
on what is shown: counter sums per segment and per window, the previous week's totals, the
sketches of the small windows (which decide what is shown), versions, alerts, the ledger.
The builders then decide what is shown and say, in a `DetailRequest`, the few things they
need on top of it: the merged distinct users of the segments the risk table ranks, of the
new and previous versions' traffic when no single window settles it, and the outcome drift
of the new versions. `Details` holds those. Reading every sketch of the week instead would
move one sketch per window and segment; this reads the ones that decide something.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.metrics.buckets import add_counter_buckets
from pipelines.metrics.catalog import counter_ids
from pipelines.report.model import IsoWeek

# (dimension, allowed values) pairs: the rows whose values are among them for every pair.
Where = tuple[tuple[str, tuple[str, ...]], ...]
# One row of segment_window_agg: its segment's values, its users sketch, its distinct users.
SketchRow = tuple[tuple[str, ...], bytes | None, int]
# Per window: its start, its end and the counter sums over every segment.
WindowSums = tuple[datetime, datetime, dict[str, int]]


@dataclass(frozen=True)
class WeekSegment:
    """One segment of the dimension set over the week."""

    values: tuple[str, ...]
    totals: dict[str, int]
    max_users: int  # the largest window's distinct users: a lower bound of the week's
    # The week's counters per user bucket (cluster-robust intervals); None when some of its
    # windows were counted before they were kept.
    buckets: dict[str, Any] | None = None


@dataclass(frozen=True)
class WeekData:
    week: IsoWeek
    dims: tuple[str, ...]
    segments: tuple[WeekSegment, ...]  # sorted by values
    previous_totals: dict[str, int]  # the previous week's counter sums over every segment
    # The previous week's per-user-bucket sums per segment (None: unknown for that segment).
    previous_buckets: dict[tuple[str, ...], dict[str, Any] | None]
    windows: tuple[WindowSums, ...]  # the charted rates' counters only
    window_users: dict[datetime, int]  # window start -> its largest row's distinct users
    # The week's rows with fewer than k distinct users; read only when some segment has no
    # larger row (otherwise every segment has k users or more and none is needed).
    small_rows: tuple[SketchRow, ...]
    # Per tracked version dimension: (surface or '*', value) -> its first window, all data.
    first_seen: dict[str, dict[tuple[str, str], datetime]]
    history_start: datetime | None  # the dimension set's first window
    alert_rows: tuple[dict[str, Any], ...]  # firing, resolved and acknowledged transitions
    rules_evaluated: int
    transitions: tuple[str, ...]  # the stored segment of every transition of the week
    ledger: tuple[dict[str, Any], ...]  # batch_ledger rows committed in the week
    # (expectation, column, failed batches, unexpected values) of the week's batches
    failing_expectations: tuple[tuple[str, str, int, int], ...]


@dataclass(frozen=True)
class DetailRequest:
    top: Where | None  # the rows whose segments' merged users the risk table shows
    unions: tuple[Where, ...]  # row sets whose merged users decide a version comparison
    drift: tuple[tuple[str, str], ...]  # (dimension, value) of each new version


@dataclass(frozen=True)
class Details:
    top_rows: tuple[SketchRow, ...]
    unions: dict[Where, tuple[tuple[bytes | None, int], ...]]  # (sketch, distinct users)
    drift: dict[tuple[str, str], tuple[dict[str, Any], ...]]  # outcome drift rows, status ok


def sum_totals(rows: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Every counter summed over `rows` (segments' or weeks' totals)."""
    totals = dict.fromkeys(counter_ids(), 0)
    for row in rows:
        for c in totals:
            totals[c] += int(row[c])
    return totals


def sum_buckets(parts: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The per-user-bucket sums of several rows or segments; None if any is unknown."""
    out: dict[str, Any] = {}
    for part in parts:
        if part is None:
            return None
        out = add_counter_buckets(out, part)
    return out
