"""Drift of every segment of a window against its baseline, from the stored histograms and
counters (never from events, so the cost does not grow with traffic).

`evaluate_window` is the pure part: histograms and counters in, warehouse rows out.
`compute_drift` is the adapter: it reads those sums from the warehouse on a connection
(inside the batch's transaction when the streaming job calls it) and replaces the window's
rows in segment_window_drift and segment_window_rate_tests, so a recomputation gives the
same rows and a replayed batch adds nothing.

The baseline of a window W is, per segment, the bin-wise sum of its histograms (and the sum
of its counters) over
- `trailing`: the windows in [W - lookback, W);
- `pinned`:   the windows in [pinned_from, pinned_to);
of the same segment, or of the segment with the `reference_segment` values in place of its
own (e.g. the previous model version). Benjamini-Hochberg q-values are computed per rate
across the segments tested in the window.

The rate tests are cluster-robust on the window's side: its variance is widened by the
rate's design effect from the window's per-user-bucket sums (pipelines.metrics.buckets), so
a rise one prolific user makes is not "significant". The baseline, thousands of windows of
many users, is taken as binomial (its sums move with the cache, which keeps no buckets).

What a closed window costs depends on its segments, not on the backlog or the lookback:
windows are read a dozen at a time (two queries), a trailing baseline moves by the windows
that enter and leave it (`BaselineCache`) and those are read with the windows evaluated,
all segments of a window are tested at once (one vectorised pass per group of
distributions with the same bins, one for the rates), and the rows are written with one
executemany per table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.engine import Connection

from pipelines.drift.stats import DistributionDrift, compare_distributions_rows
from pipelines.drift.store import (
    HISTOGRAM_BINS,
    OFFSETS,
    RATE_COUNTERS,
    Counts,
    Span,
    WindowSums,
    bucket_matrix,
    read_span,
    read_total,
    read_windows,
    replace_rows,
)
from pipelines.durations import parse_duration
from pipelines.metrics.buckets import design_effects
from pipelines.metrics.catalog import RATES, bucket_counter_ids
from pipelines.metrics.distributions import DISTRIBUTIONS, Distribution
from pipelines.metrics.rate_tests import (
    INSUFFICIENT,
    ProportionTest,
    benjamini_hochberg,
    two_proportion_tests,
)
from pipelines.segments import SEGMENT_DIMENSIONS, SegmentValues
from pipelines.settings import DriftSettings
from pipelines.warehouse.tables import Tables, as_utc

_NUMERATORS = [RATE_COUNTERS.index(r.numerator) for r in RATES]
_DENOMINATORS = [RATE_COUNTERS.index(r.denominator) for r in RATES]
# The rates whose counters are kept per user bucket: their tests are cluster-robust.
_BUCKETED_RATES = [
    j
    for j, r in enumerate(RATES)
    if r.numerator in bucket_counter_ids() and r.denominator in bucket_counter_ids()
]
_POINTS = {d.id: d.points() for d in DISTRIBUTIONS if d.ordered}
# Windows read (and their rows written) together: bounds memory when a backfill recomputes
# days of windows; a streaming batch closes fewer.
_WINDOWS_PER_READ = 12


@dataclass(frozen=True)
class Baseline:
    """Which stored windows and which segment a window x segment is compared with."""

    kind: str
    lookback: timedelta
    pinned_from: datetime | None = None
    pinned_to: datetime | None = None
    reference_segment: Mapping[str, str] | None = None

    @classmethod
    def from_settings(cls, drift: DriftSettings) -> Baseline:
        return cls(
            kind=drift.baseline,
            lookback=parse_duration(drift.lookback),
            pinned_from=drift.pinned_from,
            pinned_to=drift.pinned_to,
            reference_segment=dict(drift.reference_segment),
        )

    def period(self, window_start: datetime) -> tuple[datetime, datetime]:
        if self.kind == "pinned":
            assert self.pinned_from is not None and self.pinned_to is not None
            return self.pinned_from, self.pinned_to
        return window_start - self.lookback, window_start

    def reference(self, segment: SegmentValues, dimensions: Sequence[str]) -> SegmentValues:
        """The baseline's segment for `segment`; overrides apply to grouped dimensions only."""
        if not self.reference_segment:
            return segment
        values = dict(zip(SEGMENT_DIMENSIONS, segment, strict=True))
        for dim, value in self.reference_segment.items():
            if dim in dimensions:
                values[dim] = value
        return tuple(values[d] for d in SEGMENT_DIMENSIONS)

    def describe(self) -> str:
        if self.kind == "pinned":
            assert self.pinned_from is not None and self.pinned_to is not None
            text = f"pinned {self.pinned_from:%Y-%m-%dT%H:%MZ}..{self.pinned_to:%Y-%m-%dT%H:%MZ}"
        else:
            text = f"trailing {_duration_text(self.lookback)}"
        if self.reference_segment:
            text += " of " + ",".join(f"{k}={v}" for k, v in sorted(self.reference_segment.items()))
        return text


def _duration_text(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"


# Columns of the rows evaluate_window returns, in order: segment_window_drift and
# segment_window_rate_tests without the window, dimension set, baseline and computed_at.
DRIFT_COLUMNS = (
    *SEGMENT_DIMENSIONS,
    "distribution",
    *(f.name for f in fields(DistributionDrift)),
)
_TEST_COLUMN = {
    "current_successes": "current_numerator",
    "current_trials": "current_denominator",
    "baseline_successes": "baseline_numerator",
    "baseline_trials": "baseline_denominator",
}
RATE_TEST_COLUMNS = (
    *SEGMENT_DIMENSIONS,
    "rate_id",
    *(_TEST_COLUMN.get(f.name, f.name) for f in fields(ProportionTest)),
    "q_value",
)


def _layouts() -> list[tuple[list[Distribution], tuple[float, ...] | None]]:
    """Distributions grouped by their bins (number, order and points): one pass per group."""
    groups: dict[tuple[int, bool, tuple[float, ...] | None], list[Distribution]] = {}
    for d in DISTRIBUTIONS:
        groups.setdefault((d.bins, d.ordered, _POINTS.get(d.id)), []).append(d)
    return [(group, points) for (_, _, points), group in groups.items()]


_LAYOUTS = _layouts()


def evaluate_window(
    segments: Sequence[SegmentValues],
    current_hist: Counts,
    baseline_hist: Counts,
    current_counts: Counts,
    baseline_counts: Counts,
    *,
    min_events: int,
    psi_epsilon: float,
    current_buckets: Sequence[Counts | None] | None = None,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Drift rows and rate-test rows for every segment of a window (pure).

    Row i of each matrix belongs to `segments[i]`: its histograms (`HISTOGRAM_BINS` columns,
    distribution d from `OFFSETS[d.id]`) and its `RATE_COUNTERS`, in the window and in the
    segment's baseline. Returns tuples of `DRIFT_COLUMNS` (one per segment and distribution)
    and of `RATE_TEST_COLUMNS` (one per segment and rate); q-values are Benjamini-Hochberg
    per rate across the window's segments.
    """
    n = len(segments)
    drift_rows: list[tuple[Any, ...]] = []
    for group, points in _LAYOUTS:
        # The segments of each distribution of the group, one distribution after the other.
        columns = [slice(OFFSETS[d.id], OFFSETS[d.id] + d.bins) for d in group]
        results = compare_distributions_rows(
            np.concatenate([current_hist[:, c] for c in columns]),
            np.concatenate([baseline_hist[:, c] for c in columns]),
            ordered=group[0].ordered,
            points=points,
            min_count=min_events,
            epsilon=psi_epsilon,
        )
        for k, d in enumerate(group):
            drift_rows += [
                (*seg, d.id, *vars(r).values())
                for seg, r in zip(segments, results[k * n : (k + 1) * n], strict=True)
            ]

    # Every rate of every segment in one pass, one rate after the other.
    tests = two_proportion_tests(
        current_counts[:, _NUMERATORS].T.ravel(),
        current_counts[:, _DENOMINATORS].T.ravel(),
        baseline_counts[:, _NUMERATORS].T.ravel(),
        baseline_counts[:, _DENOMINATORS].T.ravel(),
        min_trials=min_events,
        current_design_effects=None
        if current_buckets is None
        else _design_effects(current_buckets).T.ravel(),
    )
    test_rows: list[tuple[Any, ...]] = []
    for i, rate in enumerate(RATES):
        rate_tests = tests[i * n : (i + 1) * n]
        q_values = benjamini_hochberg([t.p_value for t in rate_tests])
        test_rows += [
            (*seg, rate.id, *vars(t).values(), q)
            for seg, t, q in zip(segments, rate_tests, q_values, strict=True)
        ]
    return drift_rows, test_rows


class BaselineCache:
    """Running sums of histograms and counters over a range of closed windows, per segment.

    A trailing baseline moves by one window at a time, so the next baseline is the previous
    one plus the windows that entered the range and minus those that left it: the cost per
    window no longer depends on the lookback. Valid because every window in a baseline is
    closed (before the window being evaluated, itself closed), so its stored sums no longer
    change. The last windows evaluated are kept as well (`recent`): they are the next to
    enter a trailing baseline. `clear()` when a transaction that used the cache rolls back,
    or when something else rewrites closed windows (a backfill); a range that does not
    overlap the cached one is read in full.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.key: tuple[str, datetime, datetime] | None = None
        self.total = WindowSums()
        self.recent: Span | None = None

    def moving(
        self, dimension_set: str, lo: datetime, hi: datetime
    ) -> tuple[datetime, datetime] | None:
        """The cached range when [lo, hi) is reached from it by moving its ends forward;
        None when [lo, hi) is to be read in full.
        """
        if self.key is None:
            return None
        cached_set, cached_lo, cached_hi = self.key
        if cached_set == dimension_set and cached_lo <= lo < cached_hi <= hi:
            return cached_lo, cached_hi
        return None

    def sums(self, reader: _SpanReader, lo: datetime, hi: datetime) -> WindowSums:
        """The sums over [lo, hi) of `reader`'s dimension set, moved or read in full."""
        moving = self.moving(reader.dimension_set, lo, hi)
        if moving is None:
            self.total = WindowSums()
            for part in reader.parts(lo, hi):
                self.total.add(part)
        else:
            cached_lo, cached_hi = moving
            for a, b, sign in ((cached_hi, hi, 1), (cached_lo, lo, -1)):
                if a < b:
                    for part in reader.parts(a, b):
                        self.total.add(part, sign)
        self.key = (reader.dimension_set, lo, hi)
        return self.total


class _SpanReader:
    """Sums over ranges of windows: from a span already read when one covers the range,
    otherwise from the warehouse.
    """

    def __init__(
        self, conn: Connection, tables: Tables, dimensions: Sequence[str], spans: Sequence[Span]
    ) -> None:
        self.conn = conn
        self.tables = tables
        self.dimensions = tuple(dimensions)
        self.dimension_set = ",".join(dimensions)
        self.spans = spans

    def parts(self, lo: datetime, hi: datetime) -> Iterator[WindowSums]:
        for span in self.spans:
            if span.covers(self.dimension_set, lo, hi):
                return span.within(lo, hi)
        return iter([read_total(self.conn, self.tables, self.dimensions, lo, hi)])


@dataclass(frozen=True)
class DriftRun:
    windows: int
    segments: int
    seconds: float


def compute_drift(
    conn: Connection,
    tables: Tables,
    windows: Sequence[datetime],
    *,
    dimensions: Sequence[str],
    settings: DriftSettings,
    now: datetime,
    cache: BaselineCache | None = None,
) -> DriftRun:
    """(Re)compute drift and rate tests of every segment of each window in `windows`.

    With a `cache` (kept by the caller across calls), consecutive windows reuse the previous
    baseline sums and the windows read last. Windows are evaluated in ascending order,
    whatever their order in `windows`.
    """
    started = time.perf_counter()
    cache = cache if cache is not None else BaselineCache()
    baseline = Baseline.from_settings(settings)
    described = baseline.describe()
    dimension_set = ",".join(dimensions)
    segments: dict[datetime, int] = {}
    for chunk in _chunks(sorted({_utc(w) for w in windows}), baseline):
        current, reader = _read_chunk(conn, tables, dimensions, chunk, baseline, cache)
        drift_records: list[tuple[Any, ...]] = []
        test_records: list[tuple[Any, ...]] = []
        evaluated = []
        for w in chunk:
            sums = current.get(w)
            if sums is None or not sums.counts:
                continue
            base = cache.sums(reader, *baseline.period(w))
            segs = sorted(sums.counts)
            refs = [baseline.reference(s, dimensions) for s in segs]
            drift_rows, test_rows = evaluate_window(
                segs,
                _stack(sums.hist, segs, HISTOGRAM_BINS),
                _stack(base.hist, refs, HISTOGRAM_BINS),
                _stack(sums.counts, segs, len(RATE_COUNTERS)),
                _stack(base.counts, refs, len(RATE_COUNTERS)),
                min_events=settings.min_events,
                psi_epsilon=settings.psi_epsilon,
                current_buckets=[bucket_matrix(sums.buckets.get(s)) for s in segs],
            )
            key = (w, dimension_set, described)
            drift_records += [(*key, *row, now) for row in drift_rows]
            test_records += [(*key, *row, now) for row in test_rows]
            evaluated.append(w)
            segments[w] = len(segs)
        for table, columns, records in (
            (tables.drift, DRIFT_COLUMNS, drift_records),
            (tables.rate_tests, RATE_TEST_COLUMNS, test_records),
        ):
            replace_rows(
                conn,
                table,
                dimension_set,
                evaluated,
                ("window_start", "dimension_set", "baseline", *columns, "computed_at"),
                records,
            )
    total = sum(segments.get(_utc(w), 0) for w in windows)
    return DriftRun(len(windows), total, time.perf_counter() - started)


def _utc(w: datetime) -> datetime:
    utc = as_utc(w)
    assert utc is not None
    return utc


def _chunks(windows: Sequence[datetime], baseline: Baseline) -> Iterator[list[datetime]]:
    """Sorted `windows` in groups read together: at most _WINDOWS_PER_READ, and for a
    trailing baseline, each within the lookback of the one before, so that every window
    stored between them enters a baseline (and is worth reading with them).
    """
    chunk: list[datetime] = []
    for w in windows:
        if chunk and (
            len(chunk) == _WINDOWS_PER_READ
            or (baseline.kind == "trailing" and w - chunk[-1] >= baseline.lookback)
        ):
            yield chunk
            chunk = []
        chunk.append(w)
    if chunk:
        yield chunk


def _read_chunk(
    conn: Connection,
    tables: Tables,
    dimensions: Sequence[str],
    chunk: Sequence[datetime],
    baseline: Baseline,
    cache: BaselineCache,
) -> tuple[Mapping[datetime, WindowSums], _SpanReader]:
    """The sums of each window of `chunk`, and a reader for the moves of their baselines.

    A pinned baseline does not move: only the windows are read. A trailing one, window after
    window, adds the stored windows from the end of the cached range (from the first window
    when the first baseline is read in full) to the last window, and drops those from the
    start of the cached range (of the first baseline) to the start of the last baseline.
    Each of the two ranges is read in one pass, the first one with the windows of `chunk`
    and without the windows kept from the last call (`BaselineCache.recent`).
    """
    if baseline.kind != "trailing":
        return read_windows(conn, tables, dimensions, chunk), _SpanReader(
            conn, tables, dimensions, []
        )
    dimension_set = ",".join(dimensions)
    first, last = chunk[0], chunk[-1]
    first_lo, first_hi = baseline.period(first)
    moving = cache.moving(dimension_set, first_lo, first_hi)
    drops_from, adds_from = moving if moving is not None else (first_lo, first)
    end = last + timedelta(microseconds=1)
    recent = cache.recent
    if (
        recent is not None
        and recent.covers(dimension_set, adds_from, recent.hi)
        and adds_from <= recent.hi <= first
    ):
        later = read_span(conn, tables, dimensions, recent.hi, end)
        current = Span(
            dimension_set, adds_from, end, {**recent.since(adds_from).windows, **later.windows}
        )
    else:
        current = read_span(conn, tables, dimensions, adds_from, end)
    # Keep the windows that a trailing baseline has yet to add: from the last one on.
    cache.recent = current.since(last)
    dropped = read_span(conn, tables, dimensions, drops_from, baseline.period(last)[0])
    return current.windows, _SpanReader(conn, tables, dimensions, [current, dropped])


def _design_effects(buckets: Sequence[Counts | None]) -> npt.NDArray[np.float64]:
    """(segments, rates): each rate's design effect in the window from its per-user-bucket
    sums (pipelines.metrics.buckets.design_effects); 1 for a segment without bucket sums and
    for rates whose counters are not kept per bucket (the telemetry rates).
    """
    out = np.ones((len(buckets), len(RATES)))
    present = [(i, b) for i, b in enumerate(buckets) if b is not None]
    if not present:
        return out
    known = [i for i, _ in present]
    stacked = np.stack([b for _, b in present])  # (known, RATE_COUNTERS, B)
    for j in _BUCKETED_RATES:
        out[known, j] = design_effects(
            stacked[:, _NUMERATORS[j], :], stacked[:, _DENOMINATORS[j], :]
        )
    return out


def _stack(
    sums: Mapping[SegmentValues, Counts], segments: Sequence[SegmentValues], width: int
) -> Counts:
    """One row per segment (zeros for a segment without sums)."""
    out = np.zeros((len(segments), width), dtype=np.int64)
    for i, seg in enumerate(segments):
        values = sums.get(seg)
        if values is not None:
            out[i] = values
    return out


__all__ = [
    "DRIFT_COLUMNS",
    "INSUFFICIENT",
    "RATE_TEST_COLUMNS",
    "Baseline",
    "BaselineCache",
    "DriftRun",
    "compute_drift",
    "evaluate_window",
]
