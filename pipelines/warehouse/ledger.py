"""The batch ledger's reads: watermarks, the windows a watermark has closed, and the batches
and offsets already committed.

Every committed batch leaves one batch_ledger row with the watermark it reached
(`watermark_after`) and its offset ranges in ingested_offsets. The watermarks read here are
the one definition of them: one query's (`query_watermark`), the highest any query reached
(`latest_watermark`) and the lowest of the queries' latest (`oldest_watermark`). A window is
*closed* when it ends at or before the watermark (window_end <= watermark): its counts are
final (`closed_windows`).

Each function runs its statements on the connection it is given; the caller owns the
transaction, and the retries (WarehouseSink). Times come back as aware UTC datetimes
(`as_utc`), on SQLite as on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from pipelines.warehouse.batch_result import OffsetRange, OffsetsAlreadyIngestedError
from pipelines.warehouse.tables import Tables, as_utc

# --- watermarks and closed windows -----------------------------------------------------


def query_watermark(conn: Connection, tables: Tables, query_id: str) -> datetime | None:
    """The watermark the query's last batch left (None: no batch of it with one yet)."""
    ledger = tables.ledger
    return as_utc(
        conn.execute(
            select(func.max(ledger.c.watermark_after)).where(ledger.c.query_id == query_id)
        ).scalar()
    )


def latest_watermark(conn: Connection, tables: Tables) -> datetime | None:
    """The highest watermark a committed batch reached (None: no batch yet)."""
    return as_utc(conn.execute(select(func.max(tables.ledger.c.watermark_after))).scalar())


def oldest_watermark(conn: Connection, tables: Tables) -> datetime | None:
    """The lowest of the latest watermarks of the streaming queries in the ledger."""
    t = tables.ledger
    latest = (
        select(t.c.query_id, func.max(t.c.watermark_after).label("wm"))
        .group_by(t.c.query_id)
        .subquery()
    )
    return as_utc(conn.execute(select(func.min(latest.c.wm))).scalar())


def closed_windows(
    conn: Connection,
    tables: Tables,
    dimension_set: str,
    *,
    watermark: datetime,
    after: datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[datetime]:
    """The stored windows of `dimension_set` that `watermark` has closed (window_end <=
    watermark), ascending (UTC); with `after`, only those ending after it (those a
    watermark move from `after` to `watermark` closed); with `since` and `until`, only
    those starting in [since, until).
    """
    t = tables.agg
    stmt = select(t.c.window_start).where(
        and_(t.c.dimension_set == dimension_set, t.c.window_end <= watermark)
    )
    if after is not None:
        stmt = stmt.where(t.c.window_end > after)
    if since is not None:
        stmt = stmt.where(t.c.window_start >= since)
    if until is not None:
        stmt = stmt.where(t.c.window_start < until)
    found = {as_utc(w) for w in conn.scalars(stmt.distinct())}
    return sorted(w for w in found if w is not None)


# --- committed batches and offsets -----------------------------------------------------


def ledger_row(conn: Connection, tables: Tables, query_id: str, batch_id: int) -> Any:
    """The batch's ledger row (aggregate_rows_written, derived_at), or None."""
    ledger = tables.ledger
    return conn.execute(
        select(ledger.c.aggregate_rows_written, ledger.c.derived_at).where(
            and_(ledger.c.query_id == query_id, ledger.c.batch_id == batch_id)
        )
    ).first()


def underived_batches(
    conn: Connection, tables: Tables, query_id: str
) -> list[tuple[int, datetime | None, datetime | None]]:
    """(batch id, watermark before, after) of the query's committed batches not yet
    derived, in batch order.
    """
    ledger = tables.ledger
    stmt = (
        select(ledger.c.batch_id, ledger.c.watermark_before, ledger.c.watermark_after)
        .where(ledger.c.query_id == query_id, ledger.c.derived_at.is_(None))
        .order_by(ledger.c.batch_id)
    )
    return [(int(b), as_utc(before), as_utc(after)) for b, before, after in conn.execute(stmt)]


def recent_batches(
    conn: Connection, tables: Tables, query_id: str, not_before: datetime | None
) -> list[int]:
    """Committed batches of the query that may hold events at or after `not_before`."""
    ledger = tables.ledger
    stmt = select(ledger.c.batch_id).where(ledger.c.query_id == query_id)
    if not_before is not None:
        stmt = stmt.where(ledger.c.max_event_time >= not_before)
    stmt = stmt.where(ledger.c.max_event_time.is_not(None))
    return sorted(conn.scalars(stmt))


def stale_batches(
    conn: Connection,
    tables: Tables,
    query_id: str,
    watermark: datetime,
    since: datetime | None = None,
) -> list[int]:
    """Committed batches whose newest event is behind `watermark` (and, with `since`, not
    behind that earlier watermark: those became stale before and were handled then).
    """
    ledger = tables.ledger
    stmt = select(ledger.c.batch_id).where(
        and_(ledger.c.query_id == query_id, ledger.c.max_event_time < watermark)
    )
    if since is not None:
        stmt = stmt.where(ledger.c.max_event_time >= since)
    return sorted(conn.scalars(stmt))


def check_offsets(conn: Connection, tables: Tables, offsets: Sequence[OffsetRange]) -> None:
    """Raise OffsetsAlreadyIngestedError when another batch already counted any of `offsets`."""
    t = tables.offsets
    for o in offsets:
        clash = conn.execute(
            select(t.c.query_id, t.c.batch_id, t.c.start_offset, t.c.end_offset).where(
                and_(
                    t.c.topic == o.topic,
                    t.c.kafka_partition == o.partition,
                    t.c.start_offset <= o.end,
                    t.c.end_offset >= o.start,
                )
            )
        ).first()
        if clash is not None:
            msg = (
                f"offsets {o.start}..{o.end} of {o.topic}[{o.partition}] were already counted "
                f"by query {clash.query_id} batch {clash.batch_id}: the checkpoint was reset "
                "or another job reads the same topic into this warehouse. Restore the "
                "checkpoint (setting stream.checkpoint_dir) or point the job at an empty "
                "warehouse; nothing was written."
            )
            raise OffsetsAlreadyIngestedError(msg)
