"""Read queries over the warehouse used by the CLI and the tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from pipelines.metrics.rate_tests import benjamini_hochberg
from pipelines.metrics.sketches import bounds, merge_sketches
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.warehouse.tables import Tables, as_utc

# The largest sketch a union keeps (DataSketches' maximum): the result has the precision of
# the least precise sketch merged, whatever `privacy.users_sketch_lg_k` was when each was
# made.
_UNION_LG_K = 21


def aggregate_rows(
    engine: Engine,
    *,
    dimension_set: str | None = None,
    since: datetime | None = None,
    where: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of segment_window_agg as dicts (UTC datetimes), ordered by window and segment."""
    t = Tables(engine).agg
    stmt = select(t)
    if dimension_set is not None:
        stmt = stmt.where(t.c.dimension_set == dimension_set)
    if since is not None:
        stmt = stmt.where(t.c.window_start >= since)
    for column, value in (where or {}).items():
        if column not in t.c:
            msg = f"unknown column {column!r} in filter"
            raise KeyError(msg)
        stmt = stmt.where(t.c[column] == value)
    stmt = stmt.order_by(*[c for c in t.primary_key.columns])
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    for r in rows:
        for k in ("window_start", "window_end", "updated_at"):
            r[k] = as_utc(r[k])
    return rows


@dataclass(frozen=True)
class DistinctUsers:
    """Distinct users over a period and segments, from the merged HyperLogLog sketches."""

    estimate: int
    lower: int  # about a 95 % interval of the sketch (2 standard errors)
    upper: int
    rows: int  # window x segment rows merged
    rows_without_sketch: int  # of those, rows stored without one (their users are missing)


def distinct_users(
    engine: Engine,
    *,
    start: datetime,
    end: datetime,
    dimension_set: str | None = None,
    where: dict[str, str] | None = None,
) -> DistinctUsers:
    """The distinct users of the events in the windows starting in [start, end), in the
    rows of `dimension_set` (every dimension set when None: a union counts a user once,
    however many rows hold them) whose segment columns equal `where` ({dimension: value}).

    Exact up to the sketch's error (relative standard error 2.3 % at the default
    `privacy.users_sketch_lg_k` = 11), where the roll-up views' `distinct_users_at_least`
    (the largest window's count) is only a lower bound: distinct counts do not add up,
    sketches merge. It reads `segment_window_agg` itself, so it needs a login that may (not
    the analyst role), and it does not hide small segments. Raises KeyError for a key of
    `where` that is not a segment dimension.
    """
    t = Tables(engine).agg
    stmt = select(t.c.users_sketch).where(t.c.window_start >= start, t.c.window_start < end)
    if dimension_set is not None:
        stmt = stmt.where(t.c.dimension_set == dimension_set)
    for dimension, value in (where or {}).items():
        if dimension not in SEGMENT_DIMENSIONS:
            msg = f"unknown segment dimension {dimension!r} in filter ({SEGMENT_DIMENSIONS})"
            raise KeyError(msg)
        stmt = stmt.where(t.c[dimension] == value)
    rows = missing = 0

    def sketches(result: Iterable[bytes | None]) -> Iterator[bytes | None]:
        nonlocal rows, missing
        for sketch in result:
            rows += 1
            missing += sketch is None
            yield sketch

    with engine.connect() as conn:
        streamed = conn.scalars(stmt.execution_options(yield_per=1000))
        merged, estimate = merge_sketches(sketches(streamed), _UNION_LG_K)
    lower, upper = bounds(merged)
    return DistinctUsers(estimate, min(lower, estimate), max(upper, estimate), rows, missing)


def ledger_rows(engine: Engine) -> list[dict[str, Any]]:
    t = Tables(engine).ledger
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(t).order_by(t.c.committed_at)).mappings()]
    for r in rows:
        for k in (
            "started_at",
            "committed_at",
            "watermark_before",
            "watermark_after",
            "derived_at",
            "max_event_time",
        ):
            r[k] = as_utc(r[k])
    return rows


def dimension_sets(engine: Engine) -> list[str]:
    t = Tables(engine).agg
    with engine.connect() as conn:
        return list(conn.scalars(select(t.c.dimension_set).distinct().order_by(t.c.dimension_set)))


def histogram_totals(
    engine: Engine, *, dimension_set: str, distribution: str
) -> dict[tuple[str, ...], dict[int, int]]:
    """Segment (values of every dimension) -> bin -> count, summed over all windows."""
    from pipelines.segments import SEGMENT_DIMENSIONS

    t = Tables(engine).hist
    dims = [t.c[d] for d in SEGMENT_DIMENSIONS]
    stmt = (
        select(*dims, t.c.bin, func.sum(t.c["count"]))
        .where(t.c.dimension_set == dimension_set, t.c.distribution == distribution)
        .group_by(*dims, t.c.bin)
    )
    out: dict[tuple[str, ...], dict[int, int]] = {}
    n = len(SEGMENT_DIMENSIONS)
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            out.setdefault(tuple(row[:n]), {})[int(row[n])] = int(row[n + 1])
    return out


@dataclass(frozen=True)
class SignificantChanges:
    """The listed rate tests and the number of tests their q-values were corrected over."""

    rows: list[dict[str, Any]]
    tests: int


def significant_changes(
    engine: Engine, *, dimension_set: str, max_q: float, limit: int
) -> SignificantChanges:
    """Rate tests of the dimension set with a listing-wide q-value <= max_q.

    The stored `q_value` is Benjamini-Hochberg across the segments of one window and one rate
    (what alert rules use); a listing that spans every window and rate needs the correction
    over all of them. So `benjamini_hochberg` is applied to the p-values of every rate test
    of the dimension set (all windows, rates and segments; a NULL p-value is not a test), and
    each row returned gains that `listing_q`, with its stored columns unchanged. Rows are
    ordered by `listing_q`, then latest window first (then p-value and key), at most `limit`.
    `tests` is the number of p-values the correction covered.

    Only the p-values are read for the correction; BH q-values are monotone in the p-value,
    so the listed rows are those under a p-value bound and at most `limit` full rows are read.
    """
    t = Tables(engine).rate_tests
    in_set = (t.c.dimension_set == dimension_set, t.c.p_value.is_not(None))
    with engine.connect() as conn:
        p_values = [float(p) for p in conn.scalars(select(t.c.p_value).where(*in_set))]
        tests = len(p_values)
        ps = np.asarray(p_values, dtype=np.float64)
        qs = np.asarray(benjamini_hochberg(p_values), dtype=np.float64)
        del p_values
        listed = np.sort(qs[qs <= max_q])
        if listed.size == 0 or limit <= 0:
            return SignificantChanges([], tests)
        # The q-value of the last row listed; rows with a smaller one are all listed, and
        # those with this one (p-values in [p_low, p_high]) by latest window, up to `limit`.
        q_cut = float(listed[min(limit, listed.size) - 1])
        below = qs < q_cut
        tied = qs == q_cut
        p_low, p_high = float(ps[tied].min()), float(ps[tied].max())
        q_of = {float(p): float(q) for p, q in zip(ps[below], qs[below], strict=True)}
        keys = [c for c in t.primary_key.columns if c.name not in ("window_start", "dimension_set")]
        order = (t.c.window_start.desc(), t.c.p_value, *keys)
        rows = [
            dict(r) for r in conn.execute(select(t).where(*in_set, t.c.p_value < p_low)).mappings()
        ]
        rows += [
            dict(r)
            for r in conn.execute(
                select(t)
                .where(*in_set, t.c.p_value >= p_low, t.c.p_value <= p_high)
                .order_by(*order)
                .limit(max(limit - len(rows), 0))
            ).mappings()
        ]
    for r in rows:
        r["window_start"] = as_utc(r["window_start"])
        r["listing_q"] = q_of.get(r["p_value"], q_cut)
    rows.sort(
        key=lambda r: (
            r["listing_q"],
            -r["window_start"].timestamp(),
            r["p_value"],
            *(r[c.name] for c in keys),
        )
    )
    return SignificantChanges(rows[:limit], tests)


def drift_windows(engine: Engine, *, dimension_set: str) -> list[datetime]:
    """Windows of the dimension set that hold aggregates, oldest first."""
    t = Tables(engine).agg
    with engine.connect() as conn:
        found = conn.scalars(
            select(t.c.window_start).where(t.c.dimension_set == dimension_set).distinct()
        )
        return sorted(w for w in (as_utc(v) for v in found) if w is not None)
