"""The alerting package's SQL: what the engine, acknowledgements, backtests and the outbox read
from the warehouse and write to it.

Each function runs its statements on the connection it is given; the caller owns the
transaction (the engine writes in the batch's derivation, `deliver` in one transaction per
outcome). Rows go in and come out as column mappings: turning them into states, transitions
and payloads is the callers' logic. The engine's writes are idempotent on natural keys, so
a derivation run again after a crash writes nothing twice: a state is upserted on (rule,
segment), a transition is inserted once per (rule, segment, window, status) and a notice
once per (channel, dedup key). Text keys of unbounded length are matched through
`text_key` (an md5 on PostgreSQL), as the unique indexes hold them. SQLite and PostgreSQL
only (`upsert_for`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Table, and_, func, select, update
from sqlalchemy.engine import Connection, Row, RowMapping

from pipelines.warehouse.tables import Tables, as_utc, text_key
from pipelines.warehouse.upsert import upsert_for

# --- what the rules read ---------------------------------------------------------------


def window_rows(
    conn: Connection,
    table: Table,
    windows: Sequence[datetime],
    dimension_set: str,
    *,
    column: str = "",
    kept: Sequence[str] | None = None,
) -> dict[datetime, list[dict[str, Any]]]:
    """The rows of `table` (aggregates, rate tests or drift) in `windows` (UTC starts) for
    `dimension_set`, by window, in one query; with `kept`, only the rows whose `column` is
    one of them (none: no query).
    """
    found: dict[datetime, list[dict[str, Any]]] = {w: [] for w in windows}
    if kept is not None and not kept:
        return found
    where = and_(table.c.window_start.in_(windows), table.c.dimension_set == dimension_set)
    if kept is not None:
        where = and_(where, table.c[column].in_(kept))
    result = conn.execute(select(table).where(where))
    # Thousands of rows per window: zip with the keys once fetched, where a dict of each
    # RowMapping builds its key view again per row.
    keys = list(result.keys())
    for row in result.fetchall():
        record = dict(zip(keys, row, strict=True))
        found[as_utc(record["window_start"])].append(record)  # type: ignore[index]
    return found


def open_windows(
    conn: Connection, tables: Tables, dimension_set: str, watermark: datetime
) -> list[datetime]:
    """The stored windows of `dimension_set` that end after `watermark`, ascending (UTC)."""
    t = tables.agg
    starts = conn.scalars(
        select(t.c.window_start)
        .where(t.c.dimension_set == dimension_set, t.c.window_end > watermark)
        .distinct()
    )
    return sorted({w for w in (as_utc(v) for v in starts) if w is not None})


# --- states and transitions ------------------------------------------------------------


def alert_states(conn: Connection, tables: Tables) -> Sequence[RowMapping]:
    """Every row of alert_state, of every rule (also of rules that were removed)."""
    return conn.execute(select(tables.alert_state)).mappings().all()


def upsert_states(conn: Connection, tables: Tables, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace alert_state rows on (rule, segment); every row has the same columns."""
    if not rows:
        return
    t = tables.alert_state
    stmt = upsert_for(conn)(t)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.rule, text_key(conn, t.c.segment)],
        set_={c: stmt.excluded[c] for c in rows[0] if c not in ("rule", "segment")},
    )
    conn.execute(stmt, rows)


def insert_transitions(conn: Connection, tables: Tables, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert alert_history rows; one already stored for its (rule, segment, window_start,
    to_status) is left as it is.
    """
    if not rows:
        return
    h = tables.alert_history
    stmt = upsert_for(conn)(h).on_conflict_do_nothing(
        index_elements=[h.c.rule, text_key(conn, h.c.segment), h.c.window_start, h.c.to_status]
    )
    conn.execute(stmt, rows)


def firing_states(conn: Connection, tables: Tables, rule: str | None) -> Sequence[RowMapping]:
    """The alert_state rows that are firing, of `rule` (None: of every rule)."""
    state = tables.alert_state
    query = select(state).where(state.c.status == "firing")
    if rule is not None:
        query = query.where(state.c.rule == rule)
    return conn.execute(query).mappings().all()


def firing_transition(
    conn: Connection, tables: Tables, rule: str, segment: str, window_start: datetime
) -> RowMapping | None:
    """The alert_history row of the `rule` and stored `segment` firing in `window_start`."""
    history = tables.alert_history
    return (
        conn.execute(
            select(history).where(
                and_(
                    history.c.rule == rule,
                    history.c.segment == segment,
                    history.c.to_status == "firing",
                    history.c.window_start == window_start,
                )
            )
        )
        .mappings()
        .first()
    )


def is_acknowledged(
    conn: Connection, tables: Tables, rule: str, segment: str, window_start: datetime
) -> bool:
    """Whether the firing of `rule` and stored `segment` in `window_start` has an
    `acknowledged` row.
    """
    history = tables.alert_history
    found = conn.execute(
        select(history.c.id).where(
            and_(
                history.c.rule == rule,
                history.c.segment == segment,
                history.c.to_status == "acknowledged",
                history.c.window_start == window_start,
            )
        )
    ).first()
    return found is not None


def add_transition(conn: Connection, tables: Tables, row: Mapping[str, Any]) -> None:
    """Insert one alert_history row (a plain insert: the caller checked it is new)."""
    conn.execute(tables.alert_history.insert().values(**row))


# --- the notification outbox -----------------------------------------------------------


def enqueue(conn: Connection, tables: Tables, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert notification_outbox rows; one already queued for its (channel, dedup_key)
    is left as it is (whether sent or not).
    """
    if not rows:
        return
    o = tables.outbox
    stmt = upsert_for(conn)(o).on_conflict_do_nothing(
        index_elements=[o.c.channel, text_key(conn, o.c.dedup_key)]
    )
    conn.execute(stmt, rows)


class DueNotice(NamedTuple):
    """An unsent notification_outbox row whose next attempt is due."""

    id: int
    payload: str  # the notice as JSON
    dedup_key: str
    attempts: int  # failed attempts so far


def due_notices(
    conn: Connection, tables: Tables, channel: str, now: datetime, limit: int
) -> list[DueNotice]:
    """At most `limit` unsent rows of `channel` whose next attempt is due at `now`, oldest
    first.
    """
    t = tables.outbox
    rows = conn.execute(
        select(t.c.id, t.c.payload, t.c.dedup_key, t.c.attempts)
        .where(and_(t.c.channel == channel, t.c.sent_at.is_(None), t.c.next_attempt_at <= now))
        .order_by(t.c.id)
        .limit(limit)
    ).all()
    return [DueNotice(*row) for row in rows]


def retry_later(
    conn: Connection,
    tables: Tables,
    retries: Sequence[tuple[int, int, datetime]],
    error: str,
) -> None:
    """Record a failed attempt of each (id, attempts so far, next attempt) in `retries`:
    attempts + 1, the time of the next one and `error` (its first 2,000 characters).
    """
    t = tables.outbox
    for row_id, attempts, next_attempt_at in retries:
        conn.execute(
            update(t)
            .where(t.c.id == row_id)
            .values(attempts=attempts + 1, next_attempt_at=next_attempt_at, last_error=error[:2000])
        )


def mark_sent(conn: Connection, tables: Tables, ids: Sequence[int], now: datetime) -> None:
    """Mark the rows `ids` sent at `now`, counting the attempt and clearing the last error."""
    t = tables.outbox
    conn.execute(
        update(t)
        .where(t.c.id.in_(ids))
        .values(sent_at=now, attempts=t.c.attempts + 1, last_error=None)
    )


def pending_notices(conn: Connection, tables: Tables) -> tuple[int, datetime | None]:
    """How many rows are unsent, of every channel, and when the oldest of them was queued."""
    t = tables.outbox
    pending, oldest = conn.execute(
        select(func.count(), func.min(t.c.created_at)).where(t.c.sent_at.is_(None))
    ).one()
    return int(pending), as_utc(oldest)


# --- what people read: `safewatch alerts status`, the demo's summary -------------------


def active_states(conn: Connection, tables: Tables) -> Sequence[RowMapping]:
    """The alert states that are firing or pending (not inactive)."""
    t = tables.alert_state
    return conn.execute(select(t).where(t.c.status != "inactive")).mappings().all()


def unsent_notices(conn: Connection, tables: Tables) -> Sequence[Row[Any, Any, Any]]:
    """(channel, attempts, last_error) of every notice not delivered yet."""
    t = tables.outbox
    return conn.execute(
        select(t.c.channel, t.c.attempts, t.c.last_error).where(t.c.sent_at.is_(None))
    ).all()


def transitions(conn: Connection, tables: Tables) -> Sequence[RowMapping]:
    """Every recorded alert transition, oldest window first."""
    t = tables.alert_history
    return conn.execute(select(t).order_by(t.c.window_start)).mappings().all()


def notices(conn: Connection, tables: Tables) -> Sequence[Row[Any, Any, Any]]:
    """(channel, dedup_key, sent_at) of every notice in the outbox, sent or not."""
    t = tables.outbox
    return conn.execute(select(t.c.channel, t.c.dedup_key, t.c.sent_at)).all()
