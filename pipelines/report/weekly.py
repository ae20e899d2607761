"""The weekly safety-posture report: KPIs against targets, trends, top risks, incidents.

`collect_weekly` does every warehouse read for one ISO week and returns a `WeeklyReport`
(`pipelines.report.model`: a frozen tree of plain values and the pure logic that builds
them: KPI status, week-over-week tests, trend buckets, incidents); the renderers in
`pipelines.report.render` turn it into HTML or Markdown without touching the database, and
`write_report` puts both files in place. Every figure is a ratio of summed counters of
`segment_window_agg` for the configured dimension set (`stream.dimensions`), with its 95 %
interval (cluster-robust where the per-user-bucket sums are kept, Wilson's otherwise);
week-over-week changes and new versions against the versions they follow use the pooled
two-proportion test of `pipelines.drift.stats`, each side's variance widened by its design
effect from those sums. Times are event times (window starts) except where a figure is
about the pipeline itself (batches: commit time; acknowledgements: recorded time).

Privacy: a segment whose merged weekly distinct users (HyperLogLog union) are below
`privacy.min_distinct_users` is never shown on its own, in any table, nor are the incidents
of an alert segment without such users; the report says how many segments were held back.
The totals count all traffic, so when the held-back segments together have fewer than k
users, the smallest shown segment is held back too (complementary suppression): totals minus
what is shown never give a group of fewer than k users. Queries are SQLAlchemy Core over
the reflected tables (SQLite and PostgreSQL); date bucketing is done in Python.

Runbook links point to `report.runbook_base_url` (`runbook_base`): by default this
repository's runbooks folder as a file:// URL, so that they open wherever the report is
written on the machine that wrote it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, distinct, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InvalidRequestError

from pipelines.alerting.engine import parse_segment
from pipelines.errors import SafewatchError
from pipelines.metrics.buckets import add_counter_buckets, read_counter_buckets
from pipelines.metrics.catalog import (
    POLICY_CATEGORIES,
    counter_ids,
    rate,
    rate_value,
)
from pipelines.metrics.rate_tests import OK, benjamini_hochberg, two_proportion_test
from pipelines.metrics.sketches import merge_sketches
from pipelines.report.model import (
    CHANGE_RATES,
    CHART_RATES,
    DRIFT_PSI,
    NOT_A_VALUE,
    OUTCOME_DISTRIBUTION,
    PAIRED_RATE,
    SURFACE_DIMENSION,
    VERSION_DIMENSIONS,
    Changes,
    DataQuality,
    DriftFlag,
    FailingExpectation,
    IsoWeek,
    Kpi,
    RateComparison,
    RiskSegment,
    RiskSegments,
    VersionComparison,
    Versions,
    VersionSeen,
    WeeklyReport,
    alert_segment_shown,
    bucket_trends,
    build_incidents,
    build_kpi,
    complementary_segment,
    kpi_ids,
    kpi_name,
    utc_time,
)
from pipelines.settings import Settings
from pipelines.warehouse.tables import Tables, as_utc

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"  # the repository's folder


@dataclass(frozen=True)
class _Segment:
    values: tuple[str, ...]
    totals: dict[str, int]
    max_users: int  # the largest window's distinct users: a lower bound of the week's
    # The week's counters per user bucket (cluster-robust intervals); None when some of its
    # windows were counted before they were kept.
    buckets: dict[str, Any] | None = None


def latest_week(engine: Engine) -> IsoWeek | None:
    """The ISO week of the newest window in segment_window_agg; None when it is empty."""
    t = _tables(engine).agg
    with engine.connect() as conn:
        newest = as_utc(conn.execute(select(func.max(t.c.window_start))).scalar())
    return None if newest is None else IsoWeek.containing(newest)


def collect_weekly(
    engine: Engine, settings: Settings, week: IsoWeek, *, now: datetime | None = None
) -> WeeklyReport:
    """Everything the weekly report shows for `week`, read from the warehouse.

    A week (or a warehouse) without data gives a report whose sections say so. Raises
    SafewatchError when the warehouse has not been migrated.
    """
    generated_at = now or datetime.now(UTC)
    tables = _tables(engine)
    dims = tuple(settings.stream.dimensions)
    dimension_set = ",".join(dims)
    report = settings.report
    k = settings.privacy.min_distinct_users
    lg_k = settings.privacy.users_sketch_lg_k
    prev = week.previous()
    with engine.connect() as conn:
        reader = _Reader(conn, tables, dims, dimension_set, lg_k)
        segments = reader.segments(week)
        totals = _sum_totals(s.totals for s in segments)
        buckets = _sum_buckets(s.buckets for s in segments)
        previous = reader.totals(prev)
        previous_buckets = _sum_buckets(reader.bucket_sums(prev).values())
        users = reader.users_of_small_segments(week, segments, k)
        visible = {s.values for s in segments if max(s.max_users, users.get(s.values, 0)) >= k}
        hidden = {s.values for s in segments} - visible
        extra = complementary_segment(
            reader.union_of_small(week, hidden, k) if hidden else 0,
            k,
            {s.values: s.totals["events"] for s in segments if s.values in visible},
        )
        shown = visible - {extra}
        # Every figure per segment or per version is over `shown` segments only; the totals
        # and KPIs count all traffic (their difference is never one small group).
        shown_segments = [s for s in segments if s.values in shown]
        kpis = tuple(
            build_kpi(r, totals, previous, report.targets.get(r), buckets, previous_buckets)
            for r in kpi_ids(report.targets)
        )
        categories = tuple(
            build_kpi(r, totals, previous, report.targets.get(r), buckets, previous_buckets)
            for r in (f"violation_rate_{c}" for c in POLICY_CATEGORIES)
        )
        window_sums, window_users = reader.window_sums(week)
        trends = bucket_trends(
            window_sums, CHART_RATES, report.targets, users=window_users, min_users=k
        )
        risk = _risk_segments(reader, week, segments, visible, extra, settings)

        def alert_shown(segment: str) -> bool:
            return alert_segment_shown(parse_segment(segment), dims, visible)

        incidents = build_incidents(
            reader.alert_rows(),
            week,
            now=generated_at,
            mttr_targets=report.mttr_targets,
            runbook_base_url=runbook_base(settings),
            shown=alert_shown,
        )
        seen = reader.versions(week, shown_segments)
        changes = _changes(reader, week, shown_segments, shown, seen, settings)
        quality = _data_quality(
            reader,
            week,
            build_kpi(
                "telemetry_completeness",
                totals,
                previous,
                report.targets.get("telemetry_completeness"),
            ),
            build_kpi(
                "redaction_failure_rate",
                totals,
                previous,
                report.targets.get("redaction_failure_rate"),
            ),
        )
        versions = Versions(
            seen=seen,
            rules_evaluated=reader.rules_evaluated(),
            rules_fired=tuple(sorted({i.rule for i in incidents.incidents})),
            transitions=sum(1 for seg in reader.transitions(week) if alert_shown(seg)),
        )
    return WeeklyReport(
        week=str(week),
        previous_week=str(prev),
        start=week.start,
        end=week.end,
        generated_at=generated_at,
        dimensions=dims,
        events=totals["events"],
        events_seen=totals["events_seen"],
        previous_events=previous["events"],
        kpis=kpis,
        categories=categories,
        trends=trends,
        risk=risk,
        incidents=incidents,
        changes=changes,
        data_quality=quality,
        versions=versions,
    )


def runbook_base(settings: Settings, runbooks: Path = RUNBOOKS) -> str:
    """The folder the report's runbook links point to, as a URL ending in '/'.

    `report.runbook_base_url` when set: a URL as it is, a local folder (relative to the
    working directory) as its file:// URL. Else `alerting.runbook_base_url` followed by
    `runbooks/`, the alerts' own links, when that is set; else `runbooks` (this repository's
    folder) as a file:// URL.
    """
    configured = settings.report.runbook_base_url.strip()
    if not configured and settings.alerting.runbook_base_url:
        configured = settings.alerting.runbook_base_url.rstrip("/") + "/runbooks/"
    if not configured:
        return runbooks.as_uri() + "/"
    if "://" not in configured:
        return Path(configured).resolve().as_uri() + "/"
    return configured.rstrip("/") + "/"


def _tables(engine: Engine) -> Tables:
    try:
        return Tables(engine)
    except InvalidRequestError as exc:
        msg = (
            "the warehouse has no Safewatch tables (or an old schema): run "
            "`safewatch warehouse migrate` with the same warehouse.url first"
        )
        raise SafewatchError(msg) from exc


def _sum_totals(rows: Iterable[Mapping[str, int]]) -> dict[str, int]:
    totals = dict.fromkeys(counter_ids(), 0)
    for row in rows:
        for c in totals:
            totals[c] += int(row[c])
    return totals


def _sum_buckets(parts: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The per-user-bucket sums of several rows or segments; None if any is unknown."""
    out: dict[str, Any] = {}
    for part in parts:
        if part is None:
            return None
        out = add_counter_buckets(out, part)
    return out


class _Reader:
    """The report's queries over one connection (SQLAlchemy Core, portable SQL)."""

    def __init__(
        self,
        conn: Connection,
        tables: Tables,
        dims: tuple[str, ...],
        dimension_set: str,
        lg_k: int,
    ) -> None:
        self.conn = conn
        self.t = tables
        self.dims = dims
        self.dimension_set = dimension_set
        self.lg_k = lg_k
        self._first_seen: dict[str, dict[tuple[str, str], datetime]] = {}

    def _in_week(self, table: Any, week: IsoWeek) -> Any:
        return and_(
            table.c.dimension_set == self.dimension_set,
            table.c.window_start >= week.start,
            table.c.window_start < week.end,
        )

    def segments(self, week: IsoWeek) -> list[_Segment]:
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
            out.append(_Segment(values, totals, int(row[-1] or 0), buckets.get(values)))
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

    def window_sums(
        self, week: IsoWeek
    ) -> tuple[list[tuple[datetime, datetime, dict[str, int]]], dict[datetime, int]]:
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

    def merged_users(
        self, week: IsoWeek, where: Mapping[str, Sequence[str]], *, small_only: int | None = None
    ) -> dict[tuple[str, ...], int]:
        """Segment -> distinct users of the week (HLL union of its windows' sketches), for
        the rows matching `where` (dimension -> allowed values); with `small_only`, only rows
        with fewer distinct users than that are read (enough to decide suppression).
        The estimate is never below the largest single window's count.
        """
        agg = self.t.agg
        stmt = select(
            *[agg.c[d] for d in self.dims], agg.c.users_sketch, agg.c.distinct_users
        ).where(self._in_week(agg, week))
        for d, values in where.items():
            stmt = stmt.where(agg.c[d].in_(list(values)))
        if small_only is not None:
            stmt = stmt.where(agg.c.distinct_users < small_only)
        sketches: dict[tuple[str, ...], list[bytes | None]] = {}
        floor: dict[tuple[str, ...], int] = {}
        n = len(self.dims)
        for row in self.conn.execute(stmt):
            key = tuple(str(v) for v in row[:n])
            sketches.setdefault(key, []).append(row[n])
            floor[key] = max(floor.get(key, 0), int(row[n + 1] or 0))
        return {
            key: max(floor[key], merge_sketches(found, self.lg_k)[1])
            for key, found in sketches.items()
        }

    def union_users(self, week: IsoWeek, where: Mapping[str, Sequence[str]]) -> int:
        """Distinct users of the union of every row matching `where` in the week."""
        agg = self.t.agg
        stmt = select(agg.c.users_sketch, agg.c.distinct_users).where(self._in_week(agg, week))
        for d, values in where.items():
            stmt = stmt.where(agg.c[d].in_(list(values)))
        sketches: list[bytes | None] = []
        floor = 0
        for sketch, users in self.conn.execute(stmt):
            sketches.append(sketch)
            floor = max(floor, int(users or 0))
        return max(floor, merge_sketches(sketches, self.lg_k)[1])

    def users_of_small_segments(
        self, week: IsoWeek, segments: Sequence[_Segment], k: int
    ) -> dict[tuple[str, ...], int]:
        """Weekly distinct users of the segments whose every window has fewer than k users.

        A segment with a window of k or more users has at least k in the week: no merge is
        needed to show it. Only the small windows' (small) sketches are read.
        """
        small = {s.values for s in segments if s.max_users < k}
        if not small:
            return {}
        # Larger segments can have small windows too; their partial unions are dropped.
        merged = self.merged_users(week, {}, small_only=k)
        return {key: n for key, n in merged.items() if key in small}

    def union_of_small(self, week: IsoWeek, keys: Iterable[tuple[str, ...]], k: int) -> int:
        """Distinct users of the union of segments `keys`, each of whose windows has fewer
        than k users (so only small windows' sketches are read).
        """
        wanted = set(keys)
        agg = self.t.agg
        stmt = select(
            *[agg.c[d] for d in self.dims], agg.c.users_sketch, agg.c.distinct_users
        ).where(self._in_week(agg, week), agg.c.distinct_users < k)
        n = len(self.dims)
        sketches: list[bytes | None] = []
        floor = 0
        for row in self.conn.execute(stmt):
            if tuple(str(v) for v in row[:n]) in wanted:
                sketches.append(row[n])
                floor = max(floor, int(row[n + 1] or 0))
        return max(floor, merge_sketches(sketches, self.lg_k)[1]) if sketches else 0

    def first_seen(self, dimension: str) -> dict[tuple[str, str], datetime]:
        """(surface or '*', value) -> the first window it appeared in, over all data."""
        if dimension in self._first_seen:
            return self._first_seen[dimension]
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
        self._first_seen[dimension] = out
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

    def versions(self, week: IsoWeek, segments: Sequence[_Segment]) -> tuple[VersionSeen, ...]:
        """Model/prompt/policy versions with traffic in the week, new ones first."""
        seen = []
        for d in self.tracked_dimensions():
            first = self.first_seen(d)
            overall: dict[str, datetime] = {}
            for (_, value), at in first.items():
                overall[value] = min(at, overall.get(value, at))
            i = self.dims.index(d)
            s = self.dims.index(SURFACE_DIMENSION) if SURFACE_DIMENSION in self.dims else None
            events: dict[str, int] = {}
            surfaces: dict[str, set[str]] = {}
            for seg in segments:
                value = seg.values[i]
                if value in NOT_A_VALUE or not seg.totals["events_seen"]:
                    continue
                events[value] = events.get(value, 0) + seg.totals["events"]
                if s is not None:
                    surfaces.setdefault(value, set()).add(seg.values[s])
            for value, n in events.items():
                at = overall[value]
                seen.append(
                    VersionSeen(
                        dimension=d,
                        value=value,
                        first_seen=at,
                        events=n,
                        surfaces=tuple(sorted(surfaces.get(value, ()))),
                        is_new=week.start <= at < week.end,
                    )
                )
        seen.sort(key=lambda v: (not v.is_new, VERSION_DIMENSIONS.index(v.dimension), v.value))
        return tuple(seen)

    def tracked_dimensions(self) -> tuple[str, ...]:
        return tuple(d for d in VERSION_DIMENSIONS if d in self.dims)

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

    def failing_expectations(self, week: IsoWeek) -> list[FailingExpectation]:
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
        found = [
            FailingExpectation(str(e), str(c), int(n), int(u or 0))
            for e, c, n, u in self.conn.execute(stmt)
        ]
        found.sort(key=lambda f: (-f.batches, f.expectation, f.column))
        return found


def _risk_segments(
    reader: _Reader,
    week: IsoWeek,
    segments: Sequence[_Segment],
    visible: set[tuple[str, ...]],
    extra: tuple[str, ...] | None,
    settings: Settings,
) -> RiskSegments:
    """The riskiest `visible` segments but `extra` (held back for the suppressed ones)."""
    report = settings.report
    target = report.targets.get("violation_rate")
    eligible = [
        s
        for s in segments
        if s.values in visible and s.values != extra and s.totals["events"] >= report.min_events
    ]
    scored = [(rate_value("violation_rate", s.totals, s.buckets), s) for s in eligible]
    scored.sort(key=lambda p: (-p[0].lower, -p[1].totals["events"], p[1].values))
    top = scored[: report.top_segments]
    users: dict[tuple[str, ...], int] = {}
    if top:
        where = {d: sorted({s.values[i] for _, s in top}) for i, d in enumerate(reader.dims)}
        users = reader.merged_users(week, where)
    rows = tuple(
        RiskSegment(
            segment=" / ".join(s.values),
            values=s.values,
            events=s.totals["events"],
            distinct_users=users.get(s.values, s.max_users),
            violation=v,
            refusal=rate_value(PAIRED_RATE, s.totals, s.buckets),
            above_target=target is not None and v.lower > target,
        )
        for v, s in top
    )
    active = [s for s in segments if s.totals["events_seen"] or s.totals["events"]]
    suppressed = sum(1 for s in active if s.values not in visible)
    low_volume = sum(
        1
        for s in active
        if s.values in visible and s.values != extra and s.totals["events"] < report.min_events
    )
    return RiskSegments(
        dimensions=reader.dims,
        rows=rows,
        segments=len(active),
        suppressed=suppressed,
        low_volume=low_volume,
        min_events=report.min_events,
        min_distinct_users=settings.privacy.min_distinct_users,
        violation_target=target,
        complementary=int(extra is not None),
    )


def _changes(
    reader: _Reader,
    week: IsoWeek,
    segments: Sequence[_Segment],
    visible: set[tuple[str, ...]],
    seen: Sequence[VersionSeen],
    settings: Settings,
) -> Changes:
    """New versions against the versions they follow on the same surface, over the week."""
    k = settings.privacy.min_distinct_users
    min_trials = settings.drift.min_events
    dims = reader.dims
    s_index = dims.index(SURFACE_DIMENSION) if SURFACE_DIMENSION in dims else None
    new = tuple(v for v in seen if v.is_new)
    pending: list[tuple[VersionSeen, str | None, tuple[str, ...], bool, list[Any]]] = []
    for version in new:
        d_index = dims.index(version.dimension)
        first = reader.first_seen(version.dimension)
        for surface in version.surfaces or (None,):
            on_surface = [s for s in segments if s_index is None or s.values[s_index] == surface]
            key_surface = surface if surface is not None else "*"
            mine = first.get((key_surface, version.value))
            previous_values = tuple(
                sorted(
                    value
                    for (surf, value), at in first.items()
                    if surf == key_surface
                    and value not in NOT_A_VALUE
                    and value != version.value
                    and mine is not None
                    and at < mine
                )
            )
            new_rows = [s for s in on_surface if s.values[d_index] == version.value]
            prev_rows = [s for s in on_surface if s.values[d_index] in previous_values]
            scope = {} if surface is None else {SURFACE_DIMENSION: [surface]}
            suppressed = not _enough_users(
                reader, week, new_rows, {**scope, version.dimension: [version.value]}, k
            ) or (
                bool(prev_rows)
                and not _enough_users(
                    reader, week, prev_rows, {**scope, version.dimension: previous_values}, k
                )
            )
            new_totals = _sum_totals(s.totals for s in new_rows)
            prev_totals = _sum_totals(s.totals for s in prev_rows)
            new_buckets = _sum_buckets(s.buckets for s in new_rows)
            prev_buckets = _sum_buckets(s.buckets for s in prev_rows)
            tests = []
            if previous_values and not suppressed:
                for rate_id in CHANGE_RATES:
                    a = rate_value(rate_id, new_totals, new_buckets)
                    b = rate_value(rate_id, prev_totals, prev_buckets)
                    # Each side's variance is widened by its design effect: one prolific
                    # user of either version does not make a difference significant.
                    test = two_proportion_test(
                        a.numerator, a.denominator, b.numerator, b.denominator,
                        min_trials=min_trials,
                        current_design_effect=a.design_effect,
                        baseline_design_effect=b.design_effect,
                    )  # fmt: skip
                    tests.append((rate_id, a, b, test.p_value))
            pending.append((version, surface, previous_values, suppressed, tests))
    q_values = iter(benjamini_hochberg([p for *_, tests in pending for *_, p in tests]))
    comparisons = []
    for version, surface, previous_values, suppressed, tests in pending:
        rates = tuple(
            RateComparison(
                rate_id=rate_id,
                name=kpi_name(rate_id),
                new=a,
                previous=b,
                higher_is_worse=rate(rate_id).higher_is_worse,
                p_value=p,
                q_value=next(q_values),
            )
            for rate_id, a, b, p in tests
        )
        flags, hidden = _drift_flags(reader, week, version, surface, visible, suppressed=suppressed)
        comparisons.append(
            VersionComparison(
                dimension=version.dimension,
                value=version.value,
                surface=surface,
                previous_values=previous_values,
                suppressed=suppressed,
                rates=rates,
                drift=flags,
                drift_suppressed=hidden,
            )
        )
    return Changes(
        tracked_dimensions=reader.tracked_dimensions(),
        new_versions=new,
        comparisons=tuple(comparisons),
        history_start=reader.history_start(),
        min_trials=min_trials,
    )


def _enough_users(
    reader: _Reader,
    week: IsoWeek,
    rows: Sequence[_Segment],
    where: Mapping[str, Sequence[str]],
    k: int,
) -> bool:
    if sum(s.totals["events"] for s in rows) < k:
        return False  # distinct users never exceed events
    if any(s.max_users >= k for s in rows):
        return True
    return reader.union_users(week, where) >= k


def _drift_flags(
    reader: _Reader,
    week: IsoWeek,
    version: VersionSeen,
    surface: str | None,
    visible: set[tuple[str, ...]],
    *,
    suppressed: bool,
) -> tuple[tuple[DriftFlag, ...], int]:
    """Segments of the version on the surface whose outcome mix shifted (PSI > DRIFT_PSI)."""
    per_segment: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in reader.outcome_drift(week, version.dimension, [version.value]):
        values = tuple(str(row[d]) for d in reader.dims)
        if surface is not None and row[SURFACE_DIMENSION] != surface:
            continue
        per_segment.setdefault(values, []).append(row)
    flags = []
    hidden = 0
    for values, rows in sorted(per_segment.items()):
        over = [r for r in rows if r["psi"] is not None and r["psi"] > DRIFT_PSI]
        if not over:
            continue
        if suppressed or values not in visible:
            hidden += 1
            continue
        worst = max(over, key=lambda r: (r["psi"], utc_time(r["window_start"])))
        flags.append(
            DriftFlag(
                segment=" / ".join(values),
                windows_tested=len(rows),
                windows_flagged=len(over),
                max_psi=float(worst["psi"]),
                max_psi_window=utc_time(worst["window_start"]),
                baseline=str(worst["baseline"]),
            )
        )
    flags.sort(key=lambda f: -f.max_psi)
    return tuple(flags), hidden


def _data_quality(reader: _Reader, week: IsoWeek, telemetry: Kpi, redaction: Kpi) -> DataQuality:
    batches = reader.ledger(week)
    reasons: dict[str, int] = {}
    for b in batches:
        for reason, n in json.loads(b["rejected_by_reason"] or "{}").items():
            reasons[reason] = reasons.get(reason, 0) + int(n)

    def total(column: str) -> int:
        return sum(int(b[column] or 0) for b in batches)

    return DataQuality(
        batches=len(batches),
        input_rows=total("input_rows"),
        aggregated_rows=total("aggregated_rows"),
        rejected_rows=total("rejected_rows"),
        rejected_by_reason=tuple(sorted(reasons.items(), key=lambda p: (-p[1], p[0]))),
        late_rows=total("late_rows"),
        duplicate_rows=total("duplicate_rows"),
        dlq_rows=total("dlq_rows"),
        quality_failed_batches=sum(1 for b in batches if b["quality_success"] is False),
        quality_not_run=sum(1 for b in batches if b["quality_success"] is None),
        failing_expectations=tuple(reader.failing_expectations(week)),
        telemetry=telemetry,
        redaction=redaction,
    )


# ---------------------------------------------------------------- writing
def report_basename(week: str) -> str:
    return f"safety-posture-{week}"


def write_report(report: WeeklyReport, out_dir: Path) -> tuple[Path, Path]:
    """Write `<out_dir>/safety-posture-<week>.html` and `.md`; return their paths.

    The Markdown references the charts as PNG files in `safety-posture-<week>-charts/` next
    to it (written too); the HTML embeds them and stands alone. Each file is written to a
    temporary name and renamed, so a reader never sees half a report.
    """
    from pipelines.report.charts import trend_chart
    from pipelines.report.render import render_html, render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    base = report_basename(report.week)
    chart_dir = out_dir / f"{base}-charts"
    chart_dir.mkdir(exist_ok=True)
    for trend in report.trends.charts:
        _write_atomic(chart_dir / f"{trend.rate_id}.png", trend_chart(trend))
    html_path = out_dir / f"{base}.html"
    md_path = out_dir / f"{base}.md"
    _write_atomic(html_path, render_html(report).encode("utf-8"))
    _write_atomic(md_path, render_markdown(report, chart_dir.name).encode("utf-8"))
    return html_path, md_path


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
