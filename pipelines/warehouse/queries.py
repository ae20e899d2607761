"""Read queries over the warehouse used by the CLI and the tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from pipelines.warehouse.tables import Tables, as_utc


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
    from pipelines.settings import SEGMENT_DIMENSIONS

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


def significant_changes(
    engine: Engine, *, dimension_set: str, max_q: float, limit: int
) -> list[dict[str, Any]]:
    """Rate tests with q-value <= max_q, most significant first (then latest window)."""
    t = Tables(engine).rate_tests
    stmt = (
        select(t)
        .where(t.c.dimension_set == dimension_set, t.c.q_value <= max_q)
        .order_by(t.c.q_value, t.c.window_start.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    for r in rows:
        r["window_start"] = as_utc(r["window_start"])
    return rows


def drift_windows(engine: Engine, *, dimension_set: str) -> list[datetime]:
    """Windows of the dimension set that hold aggregates, oldest first."""
    t = Tables(engine).agg
    with engine.connect() as conn:
        found = conn.scalars(
            select(t.c.window_start).where(t.c.dimension_set == dimension_set).distinct()
        )
        return sorted(w for w in (as_utc(v) for v in found) if w is not None)
