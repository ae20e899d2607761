"""The weekly report's words (pure): names of the KPIs, status words, and every sentence the
HTML and the Markdown share, so that both say the same thing. Numbers are written by
`pipelines.report.numbers`; the layout is in the templates (`pipelines/report/templates/`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pipelines.metrics.catalog import RateValue, rate
from pipelines.report import numbers
from pipelines.report.model import (
    AT_RISK,
    MET,
    MISSED,
    NO_DATA,
    NO_TARGET,
    SIGNIFICANCE,
    UNCONFIRMED,
    Incident,
    Kpi,
    VersionComparison,
    WeekChange,
    WeeklyReport,
)


def kpi_name(rate_id: str) -> str:
    """Plain-language name of a catalog rate, e.g. 'Harmful output rate'."""
    return rate(rate_id).name


def kpi_explanation(rate_id: str) -> str:
    """What a catalog rate counts, in a few words."""
    return rate(rate_id).explanation


STATUS_LABELS = {
    MET: "Met",
    MISSED: "Missed",
    AT_RISK: "At risk",
    UNCONFIRMED: "Unconfirmed",
    NO_DATA: "No data",
    NO_TARGET: "Tracked",
}
# What each count of a rate's denominator is, for sentences about volume.
FOOTNOTES = (
    "95 % interval (Wilson): the range that holds the true rate with 95 % confidence given "
    "how many events were counted; Wilson's method stays reliable for rare events and small "
    "counts.",
    f"Significant: a two-proportion test gives p < {SIGNIFICANCE:g}, i.e. a difference this "
    "large would be unlikely if nothing had changed; 'pp' means percentage points.",
    "q-value: the p-value adjusted (Benjamini-Hochberg) for making many comparisons at once, "
    "so that few of the changes called significant are flukes.",
)


# ---------------------------------------------------------------- formatting
def counts_text(v: RateValue) -> str:
    return f"{v.numerator:,} of {v.denominator:,}"


def target_text(k: Kpi) -> str:
    return numbers.target(k.target, higher_is_worse=k.higher_is_worse)


def unit(rate_id: str) -> str:
    """What the rate's denominator counts, in words: 'events', 'jailbreak attempts'."""
    return rate(rate_id).unit


def status_reason(k: Kpi) -> str:
    """The few words beside an unconfirmed status: 'none seen; confirms < 0.058 % only'."""
    if k.status != UNCONFIRMED:
        return ""
    if k.higher_is_worse:
        return f"none seen; confirms < {numbers.upper_end(k.current.upper)} only"
    return f"no shortfall seen; confirms > {numbers.lower_end(k.current.lower)} only"


def volume_note(k: Kpi) -> str:
    """What this week's volume can and cannot confirm about the target, and the volume that
    can: '' unless the KPI is unconfirmed or at risk in a week too small for its target even
    with nothing bad seen.
    """
    if k.status not in (UNCONFIRMED, AT_RISK) or not k.too_few_to_confirm:
        return ""
    if k.target is None or k.volume_to_confirm is None:
        return ""
    n, needed, what = k.current.denominator, k.volume_to_confirm, unit(k.rate_id)
    target = numbers.target(k.target, higher_is_worse=k.higher_is_worse)
    ratio = numbers.times(needed / n)
    if k.status == UNCONFIRMED and k.higher_is_worse:
        seen = (
            f"none seen in {n:,} {what}; that volume can "
            f"confirm < {numbers.upper_end(k.current.upper)}, not {target}"
        )
    elif k.status == UNCONFIRMED:
        seen = (
            f"{n:,} of {n:,}; that volume can confirm > {numbers.lower_end(k.current.lower)}, "
            f"not {target}"
        )
    else:
        seen = f"{n:,} {what} this week"
    return (
        f"{k.name}: {seen}. Confirming {target} takes at least {needed:,} {what} in a week "
        f"with {'none' if k.higher_is_worse else 'no shortfall'} seen ({ratio} times this "
        "week's)."
    )


def p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}" if p < 0.01 else f"p={p:.2f}"


def change_text(change: WeekChange, *, higher_is_worse: bool, has_previous: bool) -> str:
    """'+0.05 pp, worse: significant (p=0.003)' or '−0.01 pp: not significant (p=0.41)'."""
    if not has_previous:
        return "no data last week"
    if change.difference is None or change.p_value is None:
        return numbers.NONE
    text = numbers.points(change.difference)
    if change.significant:
        worse = (change.difference > 0) == higher_is_worse
        return f"{text}, {'worse' if worse else 'better'}: significant ({p_text(change.p_value)})"
    return f"{text}: not significant ({p_text(change.p_value)})"


def duration(seconds: float | None) -> str:
    """'15 min', '2 h 05 min', '3 d 4 h'."""
    if seconds is None:
        return "–"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def when(moment: datetime | None) -> str:
    return "–" if moment is None else f"{moment:%a %d %b %H:%M} UTC"


def day(moment: datetime) -> str:
    return f"{moment:%a %d %b %Y}"


# ---------------------------------------------------------------- shared wording
@dataclass(frozen=True)
class KpiRow:
    kpi: Kpi
    value: str
    counts: str
    target: str
    status: str
    previous: str
    change: str


def kpi_row(k: Kpi, has_previous: bool) -> KpiRow:
    return KpiRow(
        kpi=k,
        value=numbers.rate(k.current),
        counts=counts_text(k.current) if k.current.denominator else "",
        target=target_text(k),
        status=STATUS_LABELS[k.status],
        previous=numbers.percent(k.previous.value) if k.previous.denominator else "no data",
        change=change_text(
            k.change,
            higher_is_worse=k.higher_is_worse,
            has_previous=has_previous and k.previous.denominator > 0,
        )
        if k.current.denominator
        else "–",
    )


def headline(report: WeeklyReport) -> tuple[str, str]:
    """(status class, word) for the whole week."""
    counts = report.status_counts()
    if not report.has_data:
        return "none", "No data"
    late = any(i.within_target is False for i in report.incidents.incidents)
    if counts[MISSED] or report.incidents.sev1 or late:
        return "bad", "Action needed"
    if counts[AT_RISK] or report.incidents.still_firing:
        return "warn", "Watch"
    return "ok", "On track"


def summary_sentence(report: WeeklyReport) -> str:
    if not report.has_data:
        return (
            f"No events in this week ({report.week}): nothing was measured, so no KPI can be "
            "assessed."
        )
    counts = report.status_counts()
    targeted = [k for k in report.kpis if k.status != NO_TARGET]
    parts = [f"{counts[MET]} of {numbers.count(len(targeted), 'safety KPI')} met their target"]
    missed = [k.name for k in targeted if k.status == MISSED]
    risk = [k.name for k in targeted if k.status == AT_RISK]
    unconfirmed = [k.name for k in targeted if k.status == UNCONFIRMED]
    if missed:
        parts.append(f"missed: {', '.join(missed)}")
    if risk:
        parts.append(f"at risk (interval straddles the target): {', '.join(risk)}")
    if unconfirmed:
        parts.append(
            "unconfirmed (nothing bad seen, too few events to confirm the target): "
            + ", ".join(unconfirmed)
        )
    inc = report.incidents
    n = len(inc.incidents)
    if n == 0:
        parts.append("no alert fired")
    else:
        text = f"{numbers.count(n, 'incident')} ({inc.sev1} sev1)"
        if inc.still_firing:
            text += f", {inc.still_firing} still firing"
        if inc.median_mttr_seconds is not None:
            text += f", median time to resolve {duration(inc.median_mttr_seconds)}"
        parts.append(text)
    return "; ".join(parts) + "."


KPI_LEAD = (
    'Each KPI is counted over all traffic of the week. "Met" means the whole 95 % interval '
    'is on the right side of the target, "missed" that it is all on the wrong side, "at '
    'risk" that it straddles the target, "unconfirmed" that it straddles the target although '
    "nothing bad was seen: the week had too few events to confirm a target that strict."
)


def kpi_note(report: WeeklyReport) -> str:
    if not report.has_data:
        return "No events in this week, so every KPI is without data."
    if report.previous_events == 0:
        return "No data for the previous week, so no week-over-week change."
    return f"Last week is {report.previous_week}."


def risk_note(report: WeeklyReport) -> str:
    """How many segments had traffic, and which of them the table leaves out and why; a
    sentence about a count of zero is not written.
    """
    r = report.risk
    parts = [f"{numbers.count(r.segments, 'segment')} had traffic this week."]
    if r.suppressed:
        verb = "is" if r.suppressed == 1 else "are"
        parts.append(
            f"{numbers.count(r.suppressed, 'segment')} with fewer than {r.min_distinct_users} "
            f"distinct users {verb} not shown individually, to protect privacy."
        )
    if r.complementary:
        verb = "is" if r.complementary == 1 else "are"
        parts.append(
            f"{numbers.count(r.complementary, 'larger segment')} {verb} held back too, so "
            "that the hidden ones cannot be worked out from the totals."
        )
    if r.low_volume:
        verb = "was" if r.low_volume == 1 else "were"
        parts.append(
            f"{numbers.count(r.low_volume, 'segment')} had fewer than "
            f"{numbers.count(r.min_events, 'event')} and {verb} not ranked."
        )
    return " ".join(parts)


def incident_aggregate(report: WeeklyReport) -> str:
    inc = report.incidents
    by = ", ".join(f"{sev} × {n}" for sev, n in inc.by_severity)
    median = duration(inc.median_mttr_seconds) if inc.median_mttr_seconds is not None else "–"
    targets = ", ".join(f"{sev} {h:g} h" for sev, h in inc.mttr_targets)
    return (
        f"{numbers.count(len(inc.incidents), 'incident')} ({by}); sev1: {inc.sev1}; still firing: "
        f"{inc.still_firing}; median time to resolve: {median} (targets: {targets})."
        + incidents_held_back(report)
    )


def incidents_held_back(report: WeeklyReport) -> str:
    """Says that incidents were left out, never how many (their count would tell)."""
    if not report.incidents.suppressed:
        return ""
    return (
        f" Incidents of segments with fewer than {report.risk.min_distinct_users} distinct "
        "users this week are left out of this section, to protect privacy."
    )


def within(i: Incident) -> tuple[str, str]:
    if i.target_hours is None:
        return "none", "no target"
    limit = f"{i.target_hours:g} h"
    if i.within_target is True:
        return "ok", f"yes (< {limit})"
    if i.within_target is False:
        return "bad", f"no (> {limit})"
    return "warn", f"open (< {limit} so far)"


def history_note(report: WeeklyReport) -> str | None:
    start = report.changes.history_start
    if start is not None and start >= report.start:
        return (
            f"The warehouse's data starts within this week ({when(start)}), so every version "
            "seen counts as first seen this week and has no earlier version to compare with."
        )
    return None


def comparison_title(c: VersionComparison) -> str:
    where = f" on {c.surface}" if c.surface else ""
    return f"{c.dimension.replace('_', ' ')} {c.value}{where}"


VERSIONS_IN_FULL = 4  # new versions shown with their tables; the rest in one summary table


def ranked_comparisons(
    comparisons: Sequence[VersionComparison],
) -> tuple[list[VersionComparison], list[VersionComparison]]:
    """The new versions most worth reading first, and the rest (pure).

    Ranked by: a significant rate change, then the largest outcome PSI, then the number of
    windows with a shift; ties keep the collected order.
    """

    def key(c: VersionComparison) -> tuple[bool, float, int]:
        significant = any(r.q_value is not None and r.q_value < SIGNIFICANCE for r in c.rates)
        psi = max((f.max_psi for f in c.drift), default=0.0)
        return (significant, psi, sum(f.windows_flagged for f in c.drift))

    ranked = sorted(comparisons, key=key, reverse=True)
    return ranked[:VERSIONS_IN_FULL], ranked[VERSIONS_IN_FULL:]


def rest_row(c: VersionComparison) -> list[str]:
    psi = max((f.max_psi for f in c.drift), default=None)
    return [
        comparison_title(c),
        "yes" if any(r.q_value is not None and r.q_value < SIGNIFICANCE for r in c.rates) else "no",
        f"{len(c.drift)}",
        f"{psi:.2f}" if psi is not None else "–",
    ]


def comparison_note(c: VersionComparison, k: int) -> str:
    if c.suppressed:
        return f"Fewer than {k} distinct users on one side: not shown, to protect privacy."
    if not c.previous_values:
        return "No earlier version on this surface to compare with."
    return f"Compared with {', '.join(c.previous_values)} on the same surface, over the week."


def q_text(q: float | None, p: float | None) -> str:
    if q is None or p is None:
        return "too few events"
    verdict = "significant" if q < SIGNIFICANCE else "not significant"
    return f"{verdict} (q={q:.2g})" if q >= 0.001 else f"{verdict} (q<0.001)"


def difference(a: RateValue, b: RateValue) -> str:
    if a.value is None or b.value is None:
        return numbers.NONE
    return numbers.points(a.value - b.value)


def chart_alt(name: str, bucket: str) -> str:
    return f"{name} per {bucket} over the week, with its 95 % interval and the target"


def status_tally(report: WeeklyReport, order: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """(status, KPIs with it) in `order` (default: met, missed, at risk, unconfirmed, no
    data); unconfirmed only when some KPI is.
    """
    counts = report.status_counts()
    return [(s, counts[s]) for s in (order or counts) if s != UNCONFIRMED or counts[s]]


def events_line(report: WeeklyReport) -> str:
    if not report.has_data:
        return "No events in this week"
    return f"{report.events:,} events aggregated ({report.events_seen:,} records seen)"


def shown_categories(report: WeeklyReport) -> list[Kpi]:
    """The policy categories with an output flagged this week or the last."""
    return [k for k in report.categories if k.current.numerator or k.previous.numerator]


def pipeline_only(report: WeeklyReport) -> list[Kpi]:
    """The data-quality KPIs not already in the KPI table (whose notes are said there)."""
    shown = {k.rate_id for k in report.kpis}
    q = report.data_quality
    return [k for k in (q.telemetry, q.redaction) if k.rate_id not in shown]


def quality_items(report: WeeklyReport) -> list[tuple[str, str, int]]:
    """(key, label, count) of each line of the data-quality table."""
    q = report.data_quality
    return [
        ("batches", "Micro-batches processed", q.batches),
        ("input_rows", "Records read from Kafka", q.input_rows),
        ("aggregated_rows", "Aggregated into the KPIs", q.aggregated_rows),
        ("rejected_rows", "Rejected (broken contract or personal data)", q.rejected_rows),
        ("late_rows", "Too late to count", q.late_rows),
        ("duplicate_rows", "Duplicates dropped", q.duplicate_rows),
        ("dlq_rows", "Sent to the dead-letter topic", q.dlq_rows),
        (
            "quality_failed_batches",
            "Batches failing the data-quality suite",
            q.quality_failed_batches,
        ),
    ]


def rejected_reasons(report: WeeklyReport) -> str:
    """'schema_violation 12, pii_detected 3' or 'none'."""
    reasons = report.data_quality.rejected_by_reason
    return ", ".join(f"{reason} {n:,}" for reason, n in reasons) if reasons else "none"


def rules_line(report: WeeklyReport) -> str:
    v = report.versions
    fired = ", ".join(v.rules_fired) or "none"
    return (
        f"Alert rules evaluated: {v.rules_evaluated}; rules with an incident this week: "
        f"{fired}; alert state changes this week: {v.transitions}; incidents: "
        f"{len(report.incidents.incidents)}."
    )


def category_name(k: Kpi) -> str:
    """A policy category's KPI without the prefix its table's title says: 'violence'."""
    return k.name.removeprefix("Harmful output: ")


def dimension_name(dimension: str) -> str:
    return dimension.replace("_", " ")


def dimensions_header(dimensions: Sequence[str]) -> str:
    """'product surface / model version / locale'."""
    return " / ".join(dimension_name(d) for d in dimensions)


def resolved_text(i: Incident) -> str:
    return when(i.resolved_at) if i.resolved_at else "still firing"


def acknowledged_text(i: Incident) -> str:
    return duration(i.mtta_seconds) if i.mtta_seconds is not None else "not acknowledged"
