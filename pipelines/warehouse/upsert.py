"""Adding a batch's counts to the stored rows: INSERT … ON CONFLICT in the warehouse's dialect.

`upsert_for` gives the dialect's INSERT that supports ON CONFLICT (SQLite and PostgreSQL
only); `upsert_aggregates` and `upsert_histograms` add a batch's window × segment rows and
histogram bins to those stored (counters with +, distinct-user sketches merged). Each runs on
the connection it is given: the caller (WarehouseSink) owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pipelines.errors import SafewatchError
from pipelines.metrics.sketches import merge_sketches
from pipelines.warehouse.batch_result import SEGMENT_KEY, added_sums, counted_columns
from pipelines.warehouse.bulk import execute_many
from pipelines.warehouse.tables import Tables, as_utc

CHUNK = 200  # rows per INSERT statement; keeps SQLite under its bound-parameter limit


def upsert_for(conn: Connection) -> Any:
    """The dialect's INSERT that supports ON CONFLICT (SQLite and PostgreSQL)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    msg = f"warehouse dialect {dialect!r} is not supported (use SQLite or PostgreSQL)"
    raise SafewatchError(msg)


def upsert_aggregates(
    conn: Connection,
    tables: Tables,
    aggregates: Sequence[dict[str, Any]],
    *,
    batch_id: int,
    committed_at: datetime,
    users_lg_k: int,
) -> int:
    """Add `aggregates` (as BatchResult.aggregates) to segment_window_agg as batch
    `batch_id`; returns the number of rows touched.
    """
    if not aggregates:
        return 0
    t = tables.agg
    counters = counted_columns()
    key = list(SEGMENT_KEY)
    existing = _stored_sums(conn, tables, aggregates, key)
    rows = []
    for row in aggregates:
        # Distinct counts do not add up: merge the batch's sketch with the stored one
        # (one writer per warehouse table, inside this transaction).
        stored_sketch, stored_buckets, stored_slices = existing.get(
            tuple(row[k] for k in key), (None, None, None)
        )
        sketch, distinct = merge_sketches([stored_sketch, row.get("users_sketch")], users_lg_k)
        stored_row = tuple(row[k] for k in key) in existing
        rows.append(
            {
                **{k: row[k] for k in ("window_start", "window_end", *key[1:], *counters)},
                "users_sketch": sketch,
                "bucket_sums": added_sums(stored_row, stored_buckets, row.get("bucket_sums")),
                "slice_sums": added_sums(stored_row, stored_slices, row.get("slice_sums")),
                "distinct_users": distinct,
                "first_batch_id": batch_id,
                "last_batch_id": batch_id,
                "updated_at": committed_at,
            }
        )
    # One statement executed with many parameter sets: compiled once, batched by the driver.
    stmt = upsert_for(conn)(t)
    stmt = stmt.on_conflict_do_update(
        index_elements=key,
        set_={
            **{c: t.c[c] + stmt.excluded[c] for c in counters},
            "users_sketch": stmt.excluded.users_sketch,
            "bucket_sums": stmt.excluded.bucket_sums,
            "slice_sums": stmt.excluded.slice_sums,
            "distinct_users": stmt.excluded.distinct_users,
            "last_batch_id": stmt.excluded.last_batch_id,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    conn.execute(stmt, rows)
    return len(rows)


def upsert_histograms(
    conn: Connection, tables: Tables, histograms: Sequence[dict[str, Any]]
) -> None:
    """Add `histograms` (as BatchResult.histograms) to segment_window_hist's counts."""
    if not histograms:
        return
    t = tables.hist
    key = [*SEGMENT_KEY, "distribution", "bin"]
    stmt = upsert_for(conn)(t)
    stmt = stmt.on_conflict_do_update(
        index_elements=key, set_={"count": t.c["count"] + stmt.excluded["count"]}
    )
    columns = [*key, "count"]
    rows = list(map(itemgetter(*columns), histograms))  # ~60,000 rows: C, not a loop
    execute_many(conn, stmt, t, columns, rows)


def _stored_sums(
    conn: Connection, tables: Tables, aggregates: Sequence[dict[str, Any]], key: list[str]
) -> dict[tuple[Any, ...], tuple[bytes | None, bytes | None, bytes | None]]:
    """The stored users_sketch, bucket_sums and slice_sums of the rows the batch adds to."""
    t = tables.agg
    windows = sorted({row["window_start"] for row in aggregates})
    sets = sorted({row["dimension_set"] for row in aggregates})
    found: dict[tuple[Any, ...], tuple[bytes | None, bytes | None, bytes | None]] = {}
    for i in range(0, len(windows), CHUNK):
        stmt = select(
            *[t.c[k] for k in key], t.c.users_sketch, t.c.bucket_sums, t.c.slice_sums
        ).where(and_(t.c.window_start.in_(windows[i : i + CHUNK]), t.c.dimension_set.in_(sets)))
        for r in conn.execute(stmt).mappings():
            values = tuple(as_utc(r[k]) if k == "window_start" else r[k] for k in key)
            found[values] = (r["users_sketch"], r["bucket_sums"], r["slice_sums"])
    return found
