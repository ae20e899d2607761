"""The weekly report's warehouse reads: every SQL statement of the report, and nothing else.

`WeekStore.read_week` reads what the week's figures come from (`WeekData`);
`WeekStore.read_details` reads what the builders ask for once they know what is shown
(`DetailRequest`, see `pipelines.report.week_data`). Both run on the caller's connection,
so one report reads one connection's view of the warehouse. Queries are SQLAlchemy Core over
the reflected tables (SQLite and PostgreSQL); date bucketing, sketch merging and every
decision are left to the pure builders.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, distinct, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InvalidRequestError

from pipelines.errors import SafewatchError
from pipelines.metrics.buckets import add_counter_buckets, read_counter_buckets
from pipelines.metrics.catalog import counter_ids, rate
from pipelines.metrics.rate_tests import OK
from pipelines.report.model import (
    CHART_RATES,
    OUTCOME_DISTRIBUTION,
    SURFACE_DIMENSION,
    IsoWeek,
    tracked_dimensions,
    utc_time,
)
from pipelines.report.week_data import (
    DetailRequest,
    Details,
    SketchRow,
    WeekData,
    WeekSegment,
    Where,
    WindowSums,
)
from pipelines.warehouse.tables import Tables, as_utc


def report_tables(engine: Engine) -> Tables:
    """The warehouse's tables; SafewatchError saying what to run when it is not migrated."""
    try:
        return Tables(engine)
    except InvalidRequestError as exc:
        msg = (
            "the warehouse has no Safewatch tables (or an old schema): run "
            "`safewatch warehouse migrate` with the same warehouse.url first"
        )
        raise SafewatchError(msg) from exc


def newest_window(engine: Engine) -> datetime | None:
    """The start of the newest window in segment_window_agg; None when it is empty."""
    t = report_tables(engine).agg
    with engine.connect() as conn:
        return as_utc(conn.execute(select(func.max(t.c.window_start))).scalar())


class WeekStore:
    """The report's queries over one connection (SQLAlchemy Core, portable SQL)."""

    def __init__(self, conn: Connection, tables: Tables, dims: tuple[str, ...]) -> None:
        self.conn = conn
        self.t = tables
        self.dims = dims
        self.dimension_set = ",".join(dims)

    def read_week(self, week: IsoWeek, k: int) -> WeekData:
        """Everything the week's figures come from; `k` is privacy.min_distinct_users."""
        segments = self.segments(week)
        windows, window_users = self.window_sums(week)
        small = any(s.max_users < k for s in segments)
        return WeekData(
            week=week,
            dims=self.dims,
            segments=tuple(segments),
            previous_totals=self.totals(week.previous()),
            previous_buckets=self.bucket_sums(week.previous()),
            windows=tuple(windows),
            window_users=window_users,
            small_rows=tuple(self.small_rows(week, k)) if small else (),
            first_seen={d: self.first_seen(d) for d in tracked_dimensions(self.dims)},
            history_start=self.history_start(),
            alert_rows=tuple(self.alert_rows()),
            rules_evaluated=self.rules_evaluated(),
            transitions=tuple(self.transitions(week)),
            ledger=tuple(self.ledger(week)),
            failing_expectations=tuple(self.failing_expectations(week)),
        )

    def read_details(self, week: IsoWeek, request: DetailRequest) -> Details:
        """What the builders asked for once they knew what the report shows."""
        return Details(
            top_rows=() if request.top is None else tuple(self.sketch_rows(week, request.top)),
            unions={where: tuple(self.union_rows(week, where)) for where in request.unions},
            drift={
                (dimension, value): tuple(self.outcome_drift(week, dimension, [value]))
                for dimension, value in request.drift
            },
        )

    def _in_week(self, table: Any, week: IsoWeek) -> Any:
        return and_(
            table.c.dimension_set == self.dimension_set,
            table.c.window_start >= week.start,
            table.c.window_start < week.end,
        )

    def segments(self, week: IsoWeek) -> list[WeekSegment]:
        """Per segment of the dimension set: the week's counter sums, max distinct users."""
        agg = self.t.agg
        counters = counter_ids()
        stmt = (
            select(
                *[agg.c[d] for d in self.dims],
                *[func.sum(agg.c[c]) for c in counters],
                func.max(agg.c.distinct_users),
            )
            .where(self._in_week(agg, week))
            .group_by(*[agg.c[d] for d in self.dims])
        )
        n = len(self.dims)
        buckets = self.bucket_sums(week)
        out = []
        for row in self.conn.execute(stmt):
            values = tuple(str(v) for v in row[:n])
            totals = {c: int(row[n + i] or 0) for i, c in enumerate(counters)}
            out.append(WeekSegment(values, totals, int(row[-1] or 0), buckets.get(values)))
        out.sort(key=lambda s: s.values)
        return out

    def bucket_sums(self, week: IsoWeek) -> dict[tuple[str, ...], dict[str, Any] | None]:
        """Per segment: its week's counters per user bucket, summed over its windows (None
        when a window has none: counted before they were kept).
        """
        agg = self.t.agg
        stmt = select(*[agg.c[d] for d in self.dims], agg.c.bucket_sums).where(
            self._in_week(agg, week)
        )
        n = len(self.dims)
        out: dict[tuple[str, ...], dict[str, Any] | None] = {}
        for row in self.conn.execute(stmt):
            key = tuple(str(v) for v in row[:n])
            held = out.get(key, {})
            decoded = read_counter_buckets(row[n])
            out[key] = (
                None if held is None or decoded is None else add_counter_buckets(held, decoded)
            )
        return out

    def totals(self, week: IsoWeek) -> dict[str, int]:
        agg = self.t.agg
        counters = counter_ids()
        row = self.conn.execute(
            select(*[func.sum(agg.c[c]) for c in counters]).where(self._in_week(agg, week))
        ).one()
        return {c: int(row[i] or 0) for i, c in enumerate(counters)}

    def window_sums(self, week: IsoWeek) -> tuple[list[WindowSums], dict[datetime, int]]:
        """Per window: counter sums over every segment; and its largest row's distinct users."""
        agg = self.t.agg
        needed = sorted({c for r in CHART_RATES for c in (rate(r).numerator, rate(r).denominator)})
        stmt = (
            select(
                agg.c.window_start,
                func.max(agg.c.window_end),
                func.max(agg.c.distinct_users),
                *[func.sum(agg.c[c]) for c in needed],
            )
            .where(self._in_week(agg, week))
            .group_by(agg.c.window_start)
        )
        out = []
        users = {}
        for row in self.conn.execute(stmt):
            counts = {c: int(row[3 + i] or 0) for i, c in enumerate(needed)}
            start = utc_time(row[0])
            out.append((start, utc_time(row[1]), counts))
            users[start] = int(row[2] or 0)
        return out, users

    def sketch_rows(
        self, week: IsoWeek, where: Where, *, small_only: int | None = None
    ) -> list[SketchRow]:
        """The week's rows matching `where`, with their sketches; with `small_only`, only
        rows with fewer distinct users than that.
        """
        agg = self.t.agg
        stmt = select(
            *[agg.c[d] for d in self.dims], agg.c.users_sketch, agg.c.distinct_users
        ).where(self._in_week(agg, week))
        for d, values in where:
            stmt = stmt.where(agg.c[d].in_(list(values)))
        if small_only is not None:
            stmt = stmt.where(agg.c.distinct_users < small_only)
        n = len(self.dims)
        return [
            (tuple(str(v) for v in row[:n]), row[n], int(row[n + 1] or 0))
            for row in self.conn.execute(stmt)
        ]

    def small_rows(self, week: IsoWeek, k: int) -> list[SketchRow]:
        """Every row of the week with fewer than k distinct users (small sketches only)."""
        return self.sketch_rows(week, (), small_only=k)

    def union_rows(self, week: IsoWeek, where: Where) -> list[tuple[bytes | None, int]]:
        """(sketch, distinct users) of every row of the week matching `where`."""
        agg = self.t.agg
        stmt = select(agg.c.users_sketch, agg.c.distinct_users).where(self._in_week(agg, week))
        for d, values in where:
            stmt = stmt.where(agg.c[d].in_(list(values)))
        return [(sketch, int(users or 0)) for sketch, users in self.conn.execute(stmt)]

    def first_seen(self, dimension: str) -> dict[tuple[str, str], datetime]:
        """(surface or '*', value) -> the first window it appeared in, over all data."""
        agg = self.t.agg
        col = agg.c[dimension]
        surface = agg.c[SURFACE_DIMENSION] if SURFACE_DIMENSION in self.dims else None
        group = [surface, col] if surface is not None else [col]
        stmt = (
            select(*group, func.min(agg.c.window_start))
            .where(agg.c.dimension_set == self.dimension_set)
            .group_by(*group)
        )
        out = {}
        for row in self.conn.execute(stmt):
            if surface is not None:
                out[str(row[0]), str(row[1])] = utc_time(row[2])
            else:
                out["*", str(row[0])] = utc_time(row[1])
        return out

    def history_start(self) -> datetime | None:
        agg = self.t.agg
        return as_utc(
            self.conn.execute(
                select(func.min(agg.c.window_start)).where(
                    agg.c.dimension_set == self.dimension_set
                )
            ).scalar()
        )

    def outcome_drift(
        self, week: IsoWeek, dimension: str, values: Sequence[str]
    ) -> list[dict[str, Any]]:
        drift = self.t.drift
        stmt = select(
            *[drift.c[d] for d in self.dims],
            drift.c.window_start,
            drift.c.psi,
            drift.c.baseline,
        ).where(
            self._in_week(drift, week),
            drift.c.distribution == OUTCOME_DISTRIBUTION,
            drift.c.status == OK,
            drift.c[dimension].in_(list(values)),
        )
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def alert_rows(self) -> list[dict[str, Any]]:
        """Every firing, resolved and acknowledged transition (the table holds transitions
        only, so this stays small); the week is chosen per episode by `build_incidents`.
        """
        h = self.t.alert_history
        stmt = select(
            h.c.id,
            h.c.rule,
            h.c.segment,
            h.c.window_start,
            h.c.to_status,
            h.c.severity,
            h.c.metric,
            h.c.summary,
            h.c.recorded_at,
        ).where(h.c.to_status.in_(["firing", "resolved", "acknowledged"]))
        return [dict(r) for r in self.conn.execute(stmt.order_by(h.c.id)).mappings()]

    def rules_evaluated(self) -> int:
        s = self.t.alert_state
        return int(self.conn.execute(select(func.count(distinct(s.c.rule)))).scalar() or 0)

    def transitions(self, week: IsoWeek) -> list[str]:
        """The stored segment of every alert transition of the week's windows."""
        h = self.t.alert_history
        stmt = select(h.c.segment).where(
            h.c.window_start >= week.start, h.c.window_start < week.end
        )
        return [str(segment) for segment in self.conn.scalars(stmt)]

    def ledger(self, week: IsoWeek) -> list[dict[str, Any]]:
        led = self.t.ledger
        stmt = select(
            led.c.input_rows,
            led.c.aggregated_rows,
            led.c.rejected_rows,
            led.c.rejected_by_reason,
            led.c.late_rows,
            led.c.duplicate_rows,
            led.c.dlq_rows,
            led.c.quality_success,
        ).where(led.c.committed_at >= week.start, led.c.committed_at < week.end)
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def failing_expectations(self, week: IsoWeek) -> list[tuple[str, str, int, int]]:
        """(expectation, column, failed batches, unexpected values) of the week's batches."""
        q, led = self.t.quality, self.t.ledger
        stmt = (
            select(
                q.c.expectation_type,
                q.c.column_name,
                func.count(),
                func.sum(q.c.unexpected_count),
            )
            .select_from(
                q.join(led, and_(q.c.query_id == led.c.query_id, q.c.batch_id == led.c.batch_id))
            )
            .where(
                led.c.committed_at >= week.start,
                led.c.committed_at < week.end,
                q.c.success.is_(False),
            )
            .group_by(q.c.expectation_type, q.c.column_name)
        )
        return [(str(e), str(c), int(n), int(u or 0)) for e, c, n, u in self.conn.execute(stmt)]
