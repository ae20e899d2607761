"""Incidents of the week (pure): firing episodes of the stored alert transitions, their times
to resolve and acknowledge against the severity's target, and their runbook links.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pipelines.report.model import Incident, Incidents, IsoWeek, utc_time
from pipelines.segments import parse_segment, segment_label


def runbook_link(rule: str, base_url: str) -> str:
    """The link to a rule's runbook, `<rule>.md` in the folder `base_url` points to (a URL,
    with or without its final '/'); `runbooks/<rule>.md`, relative, when it is empty.
    """
    folder = base_url.rstrip("/") if base_url else "runbooks"
    return f"{folder}/{quote(rule)}.md"


def build_incidents(
    rows: Iterable[Mapping[str, Any]],
    week: IsoWeek,
    *,
    now: datetime,
    mttr_targets: Mapping[str, float],
    runbook_base_url: str = "",
    shown: Callable[[str], bool] | None = None,
) -> Incidents:
    """Firing episodes of `alert_history` rows that overlap the week (pure).

    With `shown`, only the rows whose stored segment it accepts count; the result says
    whether it left an incident out.

    Per rule x segment, in window order: a `firing` row opens an episode and the next
    `resolved` row closes it. An `acknowledged` row belongs to the latest episode whose firing
    row was recorded before it; the first one counts. An episode overlaps the week when it
    fired before the week's end and was not resolved before its start. Rows of other statuses
    (pending, inactive) are ignored.
    """
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        by_key.setdefault((row["rule"], row["segment"]), []).append(row)
    incidents: list[Incident] = []
    left_out = False
    for (rule, segment), history in sorted(by_key.items()):
        keep = shown is None or shown(segment)
        history.sort(key=lambda r: (utc_time(r["window_start"]), utc_time(r["recorded_at"])))
        episodes: list[dict[str, Any]] = []
        open_episode: dict[str, Any] | None = None
        for row in history:
            if row["to_status"] == "firing" and open_episode is None:
                open_episode = {"firing": row, "resolved": None, "ack": None}
                episodes.append(open_episode)
            elif row["to_status"] == "resolved" and open_episode is not None:
                open_episode["resolved"] = row
                open_episode = None
        acks = sorted(
            (r for r in history if r["to_status"] == "acknowledged"),
            key=lambda r: utc_time(r["recorded_at"]),
        )
        for ack in acks:
            at = utc_time(ack["recorded_at"])
            owners = [e for e in episodes if utc_time(e["firing"]["recorded_at"]) <= at]
            if owners and owners[-1]["ack"] is None:
                owners[-1]["ack"] = ack
        for e in episodes:
            incident = _incident(rule, segment, e, now, mttr_targets, runbook_base_url, week)
            overlaps = incident.fired_at < week.end and (
                incident.resolved_at is None or incident.resolved_at >= week.start
            )
            if overlaps and keep:
                incidents.append(incident)
            left_out = left_out or (overlaps and not keep)
    incidents.sort(key=lambda i: (i.severity, i.fired_at, i.rule, i.segment))
    severities: dict[str, int] = {}
    for i in incidents:
        severities[i.severity] = severities.get(i.severity, 0) + 1
    resolved = [i.mttr_seconds for i in incidents if i.mttr_seconds is not None]
    return Incidents(
        incidents=tuple(incidents),
        by_severity=tuple(sorted(severities.items())),
        median_mttr_seconds=statistics.median(resolved) if resolved else None,
        sev1=severities.get("sev1", 0),
        still_firing=sum(1 for i in incidents if i.resolved_at is None),
        mttr_targets=tuple(sorted(mttr_targets.items())),
        suppressed=left_out,
    )


def _incident(
    rule: str,
    segment: str,
    episode: Mapping[str, Any],
    now: datetime,
    mttr_targets: Mapping[str, float],
    runbook_base_url: str,
    week: IsoWeek,
) -> Incident:
    firing, resolved, ack = episode["firing"], episode["resolved"], episode["ack"]
    fired_at = utc_time(firing["window_start"])
    resolved_at = None if resolved is None else utc_time(resolved["window_start"])
    acked_at = None if ack is None else utc_time(ack["recorded_at"])
    mttr = None if resolved_at is None else (resolved_at - fired_at).total_seconds()
    mtta = None
    if acked_at is not None:
        mtta = (acked_at - utc_time(firing["recorded_at"])).total_seconds()
    target = mttr_targets.get(firing["severity"])
    within: bool | None = None
    if target is not None:
        if mttr is not None:
            within = mttr <= target * 3600
        elif (now - fired_at).total_seconds() > target * 3600:
            within = False
    return Incident(
        rule=rule,
        severity=str(firing["severity"]),
        metric=str(firing["metric"]),
        segment=segment_label(parse_segment(segment)),
        summary=str(firing["summary"]),
        fired_at=fired_at,
        resolved_at=resolved_at,
        acknowledged_at=acked_at,
        mttr_seconds=mttr,
        mtta_seconds=mtta,
        target_hours=target,
        within_target=within,
        fired_before_week=fired_at < week.start,
        runbook=runbook_link(rule, runbook_base_url),
    )
