"""Read queries over the warehouse used by the CLI and the tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

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
        for k in ("started_at", "committed_at", "watermark_before", "watermark_after"):
            r[k] = as_utc(r[k])
    return rows


def dimension_sets(engine: Engine) -> list[str]:
    t = Tables(engine).agg
    with engine.connect() as conn:
        return list(conn.scalars(select(t.c.dimension_set).distinct().order_by(t.c.dimension_set)))
