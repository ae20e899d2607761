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
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, delete, func, select
from sqlalchemy.engine import Connection

from pipelines.drift.stats import (
    INSUFFICIENT,
    DistributionDrift,
    benjamini_hochberg,
    compare_distributions,
    two_proportion_test,
)
from pipelines.metrics.catalog import RATES
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.settings import SEGMENT_DIMENSIONS, DriftSettings
from pipelines.stream.durations import parse_duration
from pipelines.warehouse.tables import Tables, as_utc

Segment = tuple[str, ...]  # values of SEGMENT_DIMENSIONS, in order
Histograms = dict[Segment, dict[str, npt.NDArray[np.int64]]]
Counts = dict[Segment, dict[str, int]]
_RATE_COUNTERS = tuple(dict.fromkeys(c for r in RATES for c in (r.numerator, r.denominator)))
_DIST_INDEX = {d.id: d for d in DISTRIBUTIONS}
_POINTS = {d.id: d.points() for d in DISTRIBUTIONS if d.ordered}


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

    def reference(self, segment: Segment, dimensions: Sequence[str]) -> Segment:
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


def evaluate_window(
    current_hist: Histograms,
    baseline_hist: Histograms,
    current_counts: Counts,
    baseline_counts: Counts,
    *,
    reference: Mapping[Segment, Segment],
    min_events: int,
    psi_epsilon: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drift rows and rate-test rows for every segment of `current_counts` (pure).

    Each row holds the segment's dimension values, `distribution` or `rate_id`, and the
    statistics; q-values are Benjamini-Hochberg per rate across the window's segments.
    """
    drift_rows: list[dict[str, Any]] = []
    for seg in sorted(current_counts):
        cur = current_hist.get(seg, {})
        base = baseline_hist.get(reference[seg], {})
        for d in DISTRIBUTIONS:
            c = cur.get(d.id)
            b = base.get(d.id)
            cn = int(c.sum()) if c is not None else 0
            bn = int(b.sum()) if b is not None else 0
            if c is None or b is None or cn < min_events or bn < min_events:
                # Most small segments end here: skip the statistics' input checks.
                result = DistributionDrift(INSUFFICIENT, cn, bn, *([None] * 8))
            else:
                result = compare_distributions(
                    c,
                    b,
                    ordered=d.ordered,
                    points=_POINTS.get(d.id),
                    min_count=min_events,
                    epsilon=psi_epsilon,
                )
            drift_rows.append({"segment": seg, "distribution": d.id, **vars(result)})

    test_rows: list[dict[str, Any]] = []
    for r in RATES:
        tests = []
        for seg in sorted(current_counts):
            cur_c = current_counts[seg]
            base_c = baseline_counts.get(reference[seg], {})
            tests.append(
                (
                    seg,
                    two_proportion_test(
                        cur_c.get(r.numerator, 0),
                        cur_c.get(r.denominator, 0),
                        base_c.get(r.numerator, 0),
                        base_c.get(r.denominator, 0),
                        min_trials=min_events,
                    ),
                )
            )
        q_values = benjamini_hochberg([t.p_value for _, t in tests])
        for (seg, t), q in zip(tests, q_values, strict=True):
            test_rows.append(
                {
                    "segment": seg,
                    "rate_id": r.id,
                    "status": t.status,
                    "current_numerator": t.current_successes,
                    "current_denominator": t.current_trials,
                    "baseline_numerator": t.baseline_successes,
                    "baseline_denominator": t.baseline_trials,
                    "difference": t.difference,
                    "z": t.z,
                    "p_value": t.p_value,
                    "q_value": q,
                }
            )
    return drift_rows, test_rows


class BaselineCache:
    """Running sums of histograms and counters over a range of closed windows, per segment.

    A trailing baseline moves by one window at a time, so the next baseline is the previous
    one plus the windows that entered the range and minus those that left it: the cost per
    window no longer depends on the lookback. Valid because every window in a baseline is
    closed (before the window being evaluated, itself closed), so its stored sums no longer
    change. `clear()` when a transaction that used the cache rolls back, or when something
    else rewrites closed windows (a backfill); a range that does not overlap the cached one
    is read in full.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.key: tuple[str, datetime, datetime] | None = None
        self.hist: Histograms = {}
        self.counts: Counts = {}

    def sums(
        self, conn: Connection, tables: Tables, dimension_set: str, lo: datetime, hi: datetime
    ) -> tuple[Histograms, Counts]:
        if self.key is not None:
            cached_set, cached_lo, cached_hi = self.key
            if cached_set == dimension_set and cached_lo <= lo < cached_hi <= hi:
                for a, b, sign in ((cached_hi, hi, 1), (cached_lo, lo, -1)):
                    if a < b:
                        _add(
                            self.hist, self.counts, *_read(conn, tables, dimension_set, a, b), sign
                        )
                self.key = (dimension_set, lo, hi)
                return self.hist, self.counts
        self.hist, self.counts = _read(conn, tables, dimension_set, lo, hi)
        self.key = (dimension_set, lo, hi)
        return self.hist, self.counts


def _read(
    conn: Connection, tables: Tables, dimension_set: str, lo: datetime, hi: datetime
) -> tuple[Histograms, Counts]:
    return _histograms(conn, tables, dimension_set, lo, hi), _counts(
        conn, tables, dimension_set, lo, hi
    )


def _add(hist: Histograms, counts: Counts, h: Histograms, c: Counts, sign: int) -> None:
    for seg, dists in h.items():
        target = hist.setdefault(seg, {})
        for dist_id, arr in dists.items():
            if dist_id in target:
                target[dist_id] = target[dist_id] + sign * arr
            else:
                target[dist_id] = sign * arr
    for seg, values in c.items():
        acc = counts.setdefault(seg, {})
        for k, v in values.items():
            acc[k] = acc.get(k, 0) + sign * v


@dataclass(frozen=True)
class DriftRun:
    windows: int
    segments: int
    seconds: float


def closed_windows(
    conn: Connection, tables: Tables, dimension_set: str, after: datetime | None, until: datetime
) -> list[datetime]:
    """Windows of `dimension_set` that end in (after, until]: those a watermark move closed."""
    t = tables.agg
    stmt = select(t.c.window_start).where(
        and_(t.c.dimension_set == dimension_set, t.c.window_end <= until)
    )
    if after is not None:
        stmt = stmt.where(t.c.window_end > after)
    found = {as_utc(w) for w in conn.scalars(stmt.distinct())}
    return sorted(w for w in found if w is not None)


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
    baseline sums; pass windows in ascending order to benefit.
    """
    started = time.perf_counter()
    cache = cache if cache is not None else BaselineCache()
    baseline = Baseline.from_settings(settings)
    dimension_set = ",".join(dimensions)
    segments = 0
    for w in windows:
        lo, hi = baseline.period(w)
        current_counts = _counts(conn, tables, dimension_set, w, w + timedelta(microseconds=1))
        if not current_counts:
            continue
        reference = {s: baseline.reference(s, dimensions) for s in current_counts}
        baseline_hist, baseline_counts = cache.sums(conn, tables, dimension_set, lo, hi)
        drift_rows, test_rows = evaluate_window(
            _histograms(conn, tables, dimension_set, w, w + timedelta(microseconds=1)),
            baseline_hist,
            current_counts,
            baseline_counts,
            reference=reference,
            min_events=settings.min_events,
            psi_epsilon=settings.psi_epsilon,
        )
        _replace(conn, tables, w, dimension_set, drift_rows, test_rows, baseline.describe(), now)
        segments += len(current_counts)
    return DriftRun(len(windows), segments, time.perf_counter() - started)


def _histograms(
    conn: Connection, tables: Tables, dimension_set: str, lo: datetime, hi: datetime
) -> Histograms:
    t = tables.hist
    dims = [t.c[d] for d in SEGMENT_DIMENSIONS]
    stmt = (
        select(*dims, t.c.distribution, t.c.bin, func.sum(t.c["count"]))
        .where(
            and_(t.c.dimension_set == dimension_set, t.c.window_start >= lo, t.c.window_start < hi)
        )
        .group_by(*dims, t.c.distribution, t.c.bin)
    )
    out: Histograms = {}
    n = len(SEGMENT_DIMENSIONS)
    for row in conn.execute(stmt):
        d = _DIST_INDEX.get(row[n])
        if d is None:  # a retired distribution id
            continue
        seg = tuple(row[:n])
        hist = out.setdefault(seg, {})
        if d.id not in hist:
            hist[d.id] = np.zeros(d.bins, dtype=np.int64)
        if 0 <= row[n + 1] < d.bins:
            hist[d.id][row[n + 1]] += int(row[n + 2])
    return out


def _counts(
    conn: Connection, tables: Tables, dimension_set: str, lo: datetime, hi: datetime
) -> Counts:
    t = tables.agg
    dims = [t.c[d] for d in SEGMENT_DIMENSIONS]
    stmt = (
        select(*dims, *[func.sum(t.c[c]) for c in _RATE_COUNTERS])
        .where(
            and_(t.c.dimension_set == dimension_set, t.c.window_start >= lo, t.c.window_start < hi)
        )
        .group_by(*dims)
    )
    n = len(SEGMENT_DIMENSIONS)
    return {
        tuple(row[:n]): {c: int(v or 0) for c, v in zip(_RATE_COUNTERS, row[n:], strict=True)}
        for row in conn.execute(stmt)
    }


def _replace(
    conn: Connection,
    tables: Tables,
    window_start: datetime,
    dimension_set: str,
    drift_rows: list[dict[str, Any]],
    test_rows: list[dict[str, Any]],
    baseline: str,
    now: datetime,
) -> None:
    common = {"window_start": window_start, "dimension_set": dimension_set, "baseline": baseline}
    for table, rows in ((tables.drift, drift_rows), (tables.rate_tests, test_rows)):
        conn.execute(
            delete(table).where(
                and_(table.c.window_start == window_start, table.c.dimension_set == dimension_set)
            )
        )
        records = []
        for row in rows:
            seg = row.pop("segment")
            record = {**common, **dict(zip(SEGMENT_DIMENSIONS, seg, strict=True)), **row}
            record["computed_at"] = now
            records.append({k: v for k, v in record.items() if k in table.c})
        for i in range(0, len(records), 200):
            conn.execute(table.insert(), records[i : i + 200])


__all__ = [
    "INSUFFICIENT",
    "Baseline",
    "BaselineCache",
    "DriftRun",
    "closed_windows",
    "compute_drift",
]
