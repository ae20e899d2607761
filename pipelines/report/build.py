"""The weekly report built from what was read (pure): `plan` decides what the report shows
and what it still needs read (`DetailRequest`); `weekly_report` turns the week's data and
those details into the `WeeklyReport`.

Every figure is a ratio of summed counters of `segment_window_agg` for the configured
dimension set, with its 95 % interval (cluster-robust where the per-user-bucket sums are
kept, Wilson's otherwise). Per-segment and per-version figures are over the shown segments
only (`pipelines.report.suppression`); totals, KPIs, trends and data quality over all
traffic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pipelines.metrics.catalog import POLICY_CATEGORIES, RateValue, rate_value
from pipelines.report.changes import (
    VersionSide,
    build_changes,
    union_requests,
    version_sides,
    versions_seen,
)
from pipelines.report.incidents import build_incidents
from pipelines.report.kpis import build_kpi, kpi_ids
from pipelines.report.model import (
    CHART_RATES,
    PAIRED_RATE,
    DataQuality,
    FailingExpectation,
    Kpi,
    RiskSegment,
    RiskSegments,
    Versions,
    VersionSeen,
    WeeklyReport,
)
from pipelines.report.suppression import (
    Selection,
    alert_segment_shown,
    merged_users,
    select_segments,
)
from pipelines.report.trends import bucket_trends
from pipelines.report.week_data import (
    DetailRequest,
    Details,
    WeekData,
    WeekSegment,
    sum_buckets,
    sum_totals,
)
from pipelines.segments import parse_segment
from pipelines.settings import Settings


@dataclass(frozen=True)
class Plan:
    """What the report shows, decided from the week's data before the details are read."""

    selection: Selection
    top: tuple[tuple[RateValue, WeekSegment], ...]  # the risk table's segments, ranked
    seen: tuple[VersionSeen, ...]
    sides: tuple[VersionSide, ...]
    request: DetailRequest


def plan(data: WeekData, settings: Settings) -> Plan:
    """Which segments are shown, which rank as top risks, which versions are compared; and
    the details those need.
    """
    k = settings.privacy.min_distinct_users
    selection = select_segments(
        data.segments, data.small_rows, k, settings.privacy.users_sketch_lg_k
    )
    top = _top_risks(data.segments, selection, settings)
    shown_segments = [s for s in data.segments if s.values in selection.shown]
    seen = versions_seen(data, shown_segments)
    sides = version_sides(data, shown_segments, seen)
    top_where = None
    if top:
        top_where = tuple(
            (d, tuple(sorted({s.values[i] for _, s in top}))) for i, d in enumerate(data.dims)
        )
    request = DetailRequest(
        top=top_where,
        unions=union_requests(sides, k),
        drift=tuple(dict.fromkeys((v.dimension, v.value) for v in seen if v.is_new)),
    )
    return Plan(selection, top, seen, sides, request)


def weekly_report(
    data: WeekData,
    plan: Plan,
    details: Details,
    settings: Settings,
    *,
    now: datetime,
    runbook_base_url: str,
) -> WeeklyReport:
    """The report of `data.week` as of `now`; incidents link to runbooks under
    `runbook_base_url`.
    """
    report = settings.report
    week, dims, selection = data.week, data.dims, plan.selection
    k = settings.privacy.min_distinct_users
    totals = sum_totals(s.totals for s in data.segments)
    buckets = sum_buckets(s.buckets for s in data.segments)
    previous = data.previous_totals
    previous_buckets = sum_buckets(data.previous_buckets.values())
    kpis = tuple(
        build_kpi(r, totals, previous, report.targets.get(r), buckets, previous_buckets)
        for r in kpi_ids(report.targets)
    )
    categories = tuple(
        build_kpi(r, totals, previous, report.targets.get(r), buckets, previous_buckets)
        for r in (f"violation_rate_{c}" for c in POLICY_CATEGORIES)
    )
    trends = bucket_trends(
        data.windows, CHART_RATES, report.targets, users=data.window_users, min_users=k
    )

    def alert_shown(segment: str) -> bool:
        return alert_segment_shown(parse_segment(segment), dims, selection.visible)

    incidents = build_incidents(
        data.alert_rows,
        week,
        now=now,
        mttr_targets=report.mttr_targets,
        runbook_base_url=runbook_base_url,
        shown=alert_shown,
    )
    changes = build_changes(
        data,
        plan.seen,
        plan.sides,
        selection.shown,
        details,
        k=k,
        lg_k=settings.privacy.users_sketch_lg_k,
        min_trials=settings.drift.min_events,
    )
    quality = _data_quality(
        data,
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
        seen=plan.seen,
        rules_evaluated=data.rules_evaluated,
        rules_fired=tuple(sorted({i.rule for i in incidents.incidents})),
        transitions=sum(1 for seg in data.transitions if alert_shown(seg)),
    )
    return WeeklyReport(
        week=str(week),
        previous_week=str(week.previous()),
        start=week.start,
        end=week.end,
        generated_at=now,
        dimensions=dims,
        events=totals["events"],
        events_seen=totals["events_seen"],
        previous_events=previous["events"],
        kpis=kpis,
        categories=categories,
        trends=trends,
        risk=_risk_segments(data, plan, details, settings),
        incidents=incidents,
        changes=changes,
        data_quality=quality,
        versions=versions,
    )


def _top_risks(
    segments: Sequence[WeekSegment], selection: Selection, settings: Settings
) -> tuple[tuple[RateValue, WeekSegment], ...]:
    """The shown segments of `report.min_events` events or more, riskiest first: by the
    lower end of their harmful-output interval, then events, then values.
    """
    report = settings.report
    eligible = [
        s
        for s in segments
        if s.values in selection.visible
        and s.values != selection.extra
        and s.totals["events"] >= report.min_events
    ]
    scored = [(rate_value("violation_rate", s.totals, s.buckets), s) for s in eligible]
    scored.sort(key=lambda p: (-p[0].lower, -p[1].totals["events"], p[1].values))
    return tuple(scored[: report.top_segments])


def _risk_segments(
    data: WeekData, plan: Plan, details: Details, settings: Settings
) -> RiskSegments:
    """The riskiest shown segments, and how many were held back or not ranked."""
    report = settings.report
    target = report.targets.get("violation_rate")
    visible, extra = plan.selection.visible, plan.selection.extra
    users = merged_users(details.top_rows, settings.privacy.users_sketch_lg_k)
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
        for v, s in plan.top
    )
    active = [s for s in data.segments if s.totals["events_seen"] or s.totals["events"]]
    suppressed = sum(1 for s in active if s.values not in visible)
    low_volume = sum(
        1
        for s in active
        if s.values in visible and s.values != extra and s.totals["events"] < report.min_events
    )
    return RiskSegments(
        dimensions=data.dims,
        rows=rows,
        segments=len(active),
        suppressed=suppressed,
        low_volume=low_volume,
        min_events=report.min_events,
        min_distinct_users=settings.privacy.min_distinct_users,
        violation_target=target,
        complementary=int(extra is not None),
    )


def _data_quality(data: WeekData, telemetry: Kpi, redaction: Kpi) -> DataQuality:
    batches = data.ledger
    reasons: dict[str, int] = {}
    for b in batches:
        for reason, n in json.loads(b["rejected_by_reason"] or "{}").items():
            reasons[reason] = reasons.get(reason, 0) + int(n)

    def total(column: str) -> int:
        return sum(int(b[column] or 0) for b in batches)

    failing = [FailingExpectation(*row) for row in data.failing_expectations]
    failing.sort(key=lambda f: (-f.batches, f.expectation, f.column))
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
        failing_expectations=tuple(failing),
        telemetry=telemetry,
        redaction=redaction,
    )
