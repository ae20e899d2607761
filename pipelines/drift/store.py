"""The warehouse side of drift: sums of stored windows in, drift and rate-test rows out.

A segment's histograms are held as one vector of `HISTOGRAM_BINS` counts, every
distribution's bins side by side in DISTRIBUTIONS order (distribution d from column
`OFFSETS[d.id]` on), and its counters as one vector over `RATE_COUNTERS`: the drift of all
segments of a window is then computed on two matrices.

A window holds ~300 stored bins per segment, and making a Python row of each costs more than
the database's work. So the histograms of a window x segment come as one row whose text
lists its bins as "offset:bin:count" triples, parsed by numpy; and the rows of a window are
written with one DBAPI executemany per table, without a dict per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    literal_column,
    select,
)
from sqlalchemy.engine import Connection

from pipelines.errors import SafewatchError
from pipelines.metrics.buckets import BUCKETS, read_counter_buckets
from pipelines.metrics.catalog import RATES
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.segments import ALL_DIMENSIONS_VALUE, SEGMENT_DIMENSIONS, SegmentValues
from pipelines.warehouse.bulk import execute_many
from pipelines.warehouse.tables import Tables, as_utc

Counts = npt.NDArray[np.int64]
Where = Callable[[Table], ColumnElement[bool]]  # the rows of a table to read

RATE_COUNTERS = tuple(dict.fromkeys(c for r in RATES for c in (r.numerator, r.denominator)))
OFFSETS = {d.id: sum(e.bins for e in DISTRIBUTIONS[:i]) for i, d in enumerate(DISTRIBUTIONS)}
HISTOGRAM_BINS = sum(d.bins for d in DISTRIBUTIONS)


def _bins_at() -> Counts:
    """The number of bins of the distribution that starts at each offset (0 elsewhere)."""
    out = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    for d in DISTRIBUTIONS:
        out[OFFSETS[d.id]] = d.bins
    return out


_BINS_AT = _bins_at()


class WindowSums:
    """Histogram and counter vectors per segment, of one window or summed over several.

    The sums of one window read from the warehouse also hold, per segment, the stored
    bucket sums of its rows (`buckets`: their blobs, decoded only for the windows tested,
    by `bucket_matrix`), or None when some of its rows were counted before bucket sums
    were kept. `add` does not carry them: a baseline is taken as binomial
    (pipelines.drift.compute).
    """

    __slots__ = ("buckets", "counts", "hist")

    def __init__(self) -> None:
        self.hist: dict[SegmentValues, Counts] = {}
        self.counts: dict[SegmentValues, Counts] = {}
        self.buckets: dict[SegmentValues, list[bytes] | None] = {}

    def add(self, other: WindowSums, sign: int = 1) -> None:
        """Add (sign 1) or subtract (sign -1) `other`'s histograms and counters, segment by
        segment.
        """
        for mine, theirs in ((self.hist, other.hist), (self.counts, other.counts)):
            for seg, values in theirs.items():
                held = mine.get(seg)
                # New arrays, never views of `other`'s: a running sum outlives what it adds.
                mine[seg] = sign * values if held is None else held + sign * values


@dataclass(frozen=True)
class Span:
    """Every stored window of a dimension set with window_start in [lo, hi), one by one."""

    dimension_set: str
    lo: datetime
    hi: datetime
    windows: Mapping[datetime, WindowSums]

    def covers(self, dimension_set: str, lo: datetime, hi: datetime) -> bool:
        return dimension_set == self.dimension_set and self.lo <= lo and hi <= self.hi

    def within(self, lo: datetime, hi: datetime) -> Iterator[WindowSums]:
        return (s for w, s in self.windows.items() if lo <= w < hi)

    def since(self, lo: datetime) -> Span:
        """The same span without its windows before `lo`."""
        lo = max(lo, self.lo)
        return Span(
            self.dimension_set, lo, self.hi, {w: s for w, s in self.windows.items() if w >= lo}
        )


def read_span(
    conn: Connection, tables: Tables, dimensions: Sequence[str], lo: datetime, hi: datetime
) -> Span:
    """The stored windows with window_start in [lo, hi), in two queries."""
    dimension_set = ",".join(dimensions)
    return Span(
        dimension_set,
        lo,
        hi,
        _read_windows(conn, tables, dimensions, _range(dimension_set, lo, hi)) if lo < hi else {},
    )


def read_windows(
    conn: Connection, tables: Tables, dimensions: Sequence[str], windows: Sequence[datetime]
) -> dict[datetime, WindowSums]:
    """The stored windows among `windows` (window starts), in two queries."""
    dimension_set = ",".join(dimensions)

    def where(table: Table) -> ColumnElement[bool]:
        c = table.c
        return and_(c.dimension_set == dimension_set, c.window_start.in_(windows))

    return _read_windows(conn, tables, dimensions, where)


def read_total(
    conn: Connection, tables: Tables, dimensions: Sequence[str], lo: datetime, hi: datetime
) -> WindowSums:
    """The sums over every stored window with window_start in [lo, hi), summed in SQL."""
    where = _range(",".join(dimensions), lo, hi)
    h, a = tables.hist, tables.agg
    h_dims = [h.c[d] for d in dimensions]
    bins = (
        select(
            *h_dims,
            _offset(h.c.distribution).label("offset"),
            h.c.bin,
            cast(func.sum(h.c["count"]), BigInteger).label("count"),
        )
        .where(where(h))
        .group_by(*h_dims, h.c.distribution, h.c.bin)
        .subquery()
    )
    b_dims = [bins.c[d] for d in dimensions]
    hist_rows = conn.execute(
        select(*b_dims, _string_agg(conn, _triple(bins.c.offset, bins.c.bin, bins.c["count"])))
        .group_by(*b_dims)
    ).all()  # fmt: skip
    a_dims = [a.c[d] for d in dimensions]
    count_rows = conn.execute(
        select(*a_dims, *[func.sum(a.c[c]) for c in RATE_COUNTERS])
        .where(where(a))
        .group_by(*a_dims)
    ).all()
    n = len(dimensions)
    out = WindowSums()
    for row, hist in zip(hist_rows, _histograms([row[n] for row in hist_rows]), strict=True):
        out.hist[_segment(dimensions, row[:n])] = hist
    for row in count_rows:
        out.counts[_segment(dimensions, row[:n])] = _counters(row[n:])
    return out


def _range(dimension_set: str, lo: datetime, hi: datetime) -> Where:
    def where(table: Table) -> ColumnElement[bool]:
        c = table.c
        return and_(c.dimension_set == dimension_set, c.window_start >= lo, c.window_start < hi)

    return where


def _read_windows(
    conn: Connection, tables: Tables, dimensions: Sequence[str], where: Where
) -> dict[datetime, WindowSums]:
    """The sums of each stored window that `where(table)` selects, window by window.

    Rows are grouped by the dimensions of the set only: in the rows of a dimension set, every
    other dimension holds ALL_DIMENSIONS_VALUE (docs/warehouse.md).
    """
    h, a = tables.hist, tables.agg
    h_dims = [h.c[d] for d in dimensions]
    hist_rows = conn.execute(
        select(
            h.c.window_start,
            *h_dims,
            _string_agg(conn, _triple(_offset(h.c.distribution), h.c.bin, h.c["count"])),
        )
        .where(where(h))
        .group_by(h.c.window_start, *h_dims)
    ).all()
    count_rows = conn.execute(
        select(
            a.c.window_start,
            *[a.c[d] for d in dimensions],
            *[a.c[c] for c in RATE_COUNTERS],
            a.c.bucket_sums,
        ).where(where(a))
    ).all()
    n = 1 + len(dimensions)
    out: dict[datetime, WindowSums] = {}
    for row, hist in zip(hist_rows, _histograms([row[n] for row in hist_rows]), strict=True):
        sums = out.setdefault(_utc(row[0]), WindowSums())
        sums.hist[_segment(dimensions, row[1:n])] = hist
    for row in count_rows:
        sums = out.setdefault(_utc(row[0]), WindowSums())
        seg = _segment(dimensions, row[1:n])
        held = sums.counts.get(seg)
        values = _counters(row[n:-1])
        sums.counts[seg] = values if held is None else held + values
        blob = row[-1]
        before = sums.buckets.get(seg, []) if held is not None else []
        sums.buckets[seg] = None if before is None or blob is None else [*before, blob]
    return out


def bucket_matrix(blobs: Sequence[bytes] | None) -> Counts | None:
    """The summed bucket sums of a segment's rows as a (len(RATE_COUNTERS), BUCKETS)
    matrix (zeros for counters not kept per bucket); None when unknown.
    """
    if blobs is None:
        return None
    out = np.zeros((len(RATE_COUNTERS), BUCKETS), dtype=np.int64)
    for blob in blobs:
        decoded = read_counter_buckets(blob)
        if decoded is None:
            return None
        for counter, values in decoded.items():
            i = _RATE_COUNTER_INDEX.get(counter)
            if i is not None and len(values) == BUCKETS:
                out[i] += values
    return out


_RATE_COUNTER_INDEX = {c: i for i, c in enumerate(RATE_COUNTERS)}


def _utc(w: datetime) -> datetime:
    utc = as_utc(w)
    assert utc is not None  # window_start is NOT NULL
    return utc


def _segment(dimensions: Sequence[str], values: Sequence[str]) -> SegmentValues:
    grouped = dict(zip(dimensions, values, strict=True))
    return tuple(grouped.get(d, ALL_DIMENSIONS_VALUE) for d in SEGMENT_DIMENSIONS)


def _counters(values: Sequence[Any]) -> Counts:
    # int(): PostgreSQL sums BIGINT as NUMERIC (Decimal).
    return np.array([int(v or 0) for v in values], dtype=np.int64)


def _offset(distribution: Any) -> Any:
    """The distribution's offset; NULL for a retired id, so that its bins drop out."""
    return case({d: literal_column(str(o)) for d, o in OFFSETS.items()}, value=distribution)


def _triple(offset: Any, bin_: Any, count: Any) -> Any:
    return cast(offset, String) + ":" + cast(bin_, String) + ":" + cast(count, String)


def _string_agg(conn: Connection, text: Any) -> Any:
    """The dialect's comma-separated string aggregate (SQLite and PostgreSQL)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return func.string_agg(text, literal_column("','"))
    if dialect == "sqlite":
        return func.group_concat(text, literal_column("','"))
    msg = f"warehouse dialect {dialect!r} is not supported (use SQLite or PostgreSQL)"
    raise SafewatchError(msg)


def _histograms(texts: Sequence[str | None]) -> Counts:
    """One vector of bins per "offset:bin:count,..." text (None: no bins), summed per bin.

    A bin outside its distribution's bins is ignored.
    """
    dense = np.zeros((len(texts), HISTOGRAM_BINS), dtype=np.int64)
    present = [(i, t) for i, t in enumerate(texts) if t]
    if not present:
        return dense
    joined = ",".join(t for _, t in present).replace(":", ",")
    offset, bin_, count = np.array(joined.split(","), dtype=np.int64).reshape(-1, 3).T
    row = np.repeat([i for i, _ in present], [t.count(",") + 1 for _, t in present])
    keep = (offset >= 0) & (offset < HISTOGRAM_BINS)
    keep[keep] &= (bin_[keep] >= 0) & (bin_[keep] < _BINS_AT[offset[keep]])
    np.add.at(dense, (row[keep], offset[keep] + bin_[keep]), count[keep])
    return dense


def replace_rows(
    conn: Connection,
    table: Table,
    dimension_set: str,
    windows: Sequence[datetime],
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Delete the rows of `windows` x `dimension_set`, then insert `rows` (of `columns`)."""
    if not windows:
        return
    conn.execute(
        delete(table).where(
            and_(table.c.dimension_set == dimension_set, table.c.window_start.in_(windows))
        )
    )
    execute_many(conn, table.insert(), table, columns, rows)
