"""The weekly report as one self-contained HTML page, or as Markdown (pure: report in, text out).

HTML: inline CSS, the charts as `data:image/png;base64` images, no script, font file or
external URL (the only links are the runbooks, under `report.runbook_base_url`). At most
1000 px wide, narrower without a horizontal scrollbar, and printable on A4 (`@page`), with
no column cut off. Each section has an `id`
(summary, kpis, trends, risk-segments, incidents, drift, data-quality, versions) and the
rows carry `data-*` attributes with the unformatted numbers, so a test or a script can
compare the page with the warehouse.

Markdown: the same sections, numbers and wording. Charts are not embedded: with
`chart_dir_name`, each is referenced as `<chart_dir_name>/<rate_id>.png`, the files that
`pipelines.report.weekly.write_report` writes next to the Markdown; without it the
Markdown says the charts are in the HTML version.

Status is always a word as well as a colour (met / missed / at risk / unconfirmed / no
data). Every rate, interval and change is written by `pipelines.report.numbers`.
"""

from __future__ import annotations

import base64
import html
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pipelines.metrics.catalog import RateValue, rate
from pipelines.report import numbers
from pipelines.report.charts import trend_chart
from pipelines.report.model import (
    AT_RISK,
    DRIFT_PSI,
    MET,
    MISSED,
    NO_DATA,
    NO_TARGET,
    SIGNIFICANCE,
    UNCONFIRMED,
    Change,
    Incident,
    Kpi,
    VersionComparison,
    WeeklyReport,
    kpi_name,
)

STATUS_LABELS = {
    MET: "Met",
    MISSED: "Missed",
    AT_RISK: "At risk",
    UNCONFIRMED: "Unconfirmed",
    NO_DATA: "No data",
    NO_TARGET: "Tracked",
}
_STATUS_CLASS = {
    MET: "ok",
    MISSED: "bad",
    AT_RISK: "warn",
    UNCONFIRMED: "info",
    NO_DATA: "none",
    NO_TARGET: "none",
}
# What each count of a rate's denominator is, for sentences about volume.
_UNITS = {
    "events": "events",
    "events_seen": "records",
    "unflagged_events": "unflagged outputs",
    "injection_attempts": "injection attempts",
    "jailbreak_attempts": "jailbreak attempts",
    "tool_call_events": "tool-using requests",
    "blocked_or_refused": "blocks and refusals",
}

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
    return _UNITS.get(rate(rate_id).denominator, "counted")


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


def change_text(change: Change, *, higher_is_worse: bool, has_previous: bool) -> str:
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


def _attr(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---------------------------------------------------------------- shared wording
@dataclass(frozen=True)
class _KpiRow:
    kpi: Kpi
    value: str
    counts: str
    target: str
    status: str
    previous: str
    change: str


def _kpi_row(k: Kpi, has_previous: bool) -> _KpiRow:
    return _KpiRow(
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


def _kpi_note(report: WeeklyReport) -> str:
    if not report.has_data:
        return "No events in this week, so every KPI is without data."
    if report.previous_events == 0:
        return "No data for the previous week, so no week-over-week change."
    return f"Last week is {report.previous_week}."


def _risk_note(report: WeeklyReport) -> str:
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


def _incident_aggregate(report: WeeklyReport) -> str:
    inc = report.incidents
    by = ", ".join(f"{sev} × {n}" for sev, n in inc.by_severity)
    median = duration(inc.median_mttr_seconds) if inc.median_mttr_seconds is not None else "–"
    targets = ", ".join(f"{sev} {h:g} h" for sev, h in inc.mttr_targets)
    return (
        f"{numbers.count(len(inc.incidents), 'incident')} ({by}); sev1: {inc.sev1}; still firing: "
        f"{inc.still_firing}; median time to resolve: {median} (targets: {targets})."
        + _incidents_held_back(report)
    )


def _incidents_held_back(report: WeeklyReport) -> str:
    """Says that incidents were left out, never how many (their count would tell)."""
    if not report.incidents.suppressed:
        return ""
    return (
        f" Incidents of segments with fewer than {report.risk.min_distinct_users} distinct "
        "users this week are left out of this section, to protect privacy."
    )


def _within(i: Incident) -> tuple[str, str]:
    if i.target_hours is None:
        return "none", "no target"
    limit = f"{i.target_hours:g} h"
    if i.within_target is True:
        return "ok", f"yes (< {limit})"
    if i.within_target is False:
        return "bad", f"no (> {limit})"
    return "warn", f"open (< {limit} so far)"


def _history_note(report: WeeklyReport) -> str | None:
    start = report.changes.history_start
    if start is not None and start >= report.start:
        return (
            f"The warehouse's data starts within this week ({when(start)}), so every version "
            "seen counts as first seen this week and has no earlier version to compare with."
        )
    return None


def _comparison_title(c: VersionComparison) -> str:
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


def _rest_row(c: VersionComparison) -> list[str]:
    psi = max((f.max_psi for f in c.drift), default=None)
    return [
        _comparison_title(c),
        "yes" if any(r.q_value is not None and r.q_value < SIGNIFICANCE for r in c.rates) else "no",
        f"{len(c.drift)}",
        f"{psi:.2f}" if psi is not None else "–",
    ]


_REST_HEADERS = ["Version", "Significant rate change", "Segments with a shift", "Largest PSI"]


def _comparison_note(c: VersionComparison, k: int) -> str:
    if c.suppressed:
        return f"Fewer than {k} distinct users on one side: not shown, to protect privacy."
    if not c.previous_values:
        return "No earlier version on this surface to compare with."
    return f"Compared with {', '.join(c.previous_values)} on the same surface, over the week."


def _q_text(q: float | None, p: float | None) -> str:
    if q is None or p is None:
        return "too few events"
    verdict = "significant" if q < SIGNIFICANCE else "not significant"
    return f"{verdict} (q={q:.2g})" if q >= 0.001 else f"{verdict} (q<0.001)"


def _difference(a: RateValue, b: RateValue) -> str:
    if a.value is None or b.value is None:
        return numbers.NONE
    return numbers.points(a.value - b.value)


# ---------------------------------------------------------------- HTML
_CSS = """
* { box-sizing: border-box; }
body { font-family: "Helvetica Neue", Helvetica, Arial, sans-serif; color: #1d1d1f;
  max-width: 1000px; margin: 24px auto; padding: 0 20px; font-size: 14px; line-height: 1.45; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 6px; padding-bottom: 4px; border-bottom: 2px solid #e3e3e3; }
h3 { font-size: 15px; margin: 18px 0 4px; }
p.lead { margin: 2px 0 10px; color: #444; }
.meta { color: #555; font-size: 13px; }
table { width: 100%; border-collapse: collapse; margin: 6px 0 8px; font-size: 13px; }
th, td { text-align: left; padding: 5px 6px; border-bottom: 1px solid #e6e6e6;
  vertical-align: top; overflow-wrap: anywhere; }
th { background: #f5f6f7; font-weight: 600; overflow-wrap: normal; }
td.segment { min-width: 9em; }
td.nowrap, .nw { white-space: nowrap; }
td.num, th.num { text-align: right; }
.small { font-size: 12px; color: #555; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
  font-size: 12px; white-space: nowrap; border: 1px solid transparent; }
.ok { background: #e3f4e8; color: #14602d; border-color: #9fd4ae; }
.bad { background: #fde7e6; color: #8c1d18; border-color: #f0a9a4; }
.warn { background: #fff3d6; color: #7a4f00; border-color: #f1cf7a; }
.info { background: #e6eefa; color: #1f4f8a; border-color: #a9c3e8; }
.none { background: #eff0f1; color: #444; border-color: #d5d7d9; }
.headline { font-size: 16px; margin: 10px 0; }
.pills span { margin-right: 6px; }
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 10px 16px; }
figure { margin: 0; break-inside: avoid; }
figure img { display: block; width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
.empty { padding: 8px 10px; background: #f7f7f8; border-left: 3px solid #c9c9c9; }
footer { margin-top: 28px; font-size: 12px; color: #555; border-top: 1px solid #e3e3e3; }
a { color: #1f5fa8; overflow-wrap: anywhere; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 11px; }
  table { font-size: 10.5px; }
  th, td { padding: 3px 4px; }
  h2 { margin-top: 18px; break-after: avoid; }
  h3 { break-after: avoid; }
  thead { display: table-header-group; }
  tr, figure, .headline, p.lead { break-inside: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _badge(css: str, word: str) -> str:
    return f'<span class="badge {css}">{_e(word)}</span>'


def _status_badge(status: str) -> str:
    return _badge(_STATUS_CLASS[status], STATUS_LABELS[status])


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _rate_html(v: RateValue) -> str:
    """`numbers.rate`, breakable between the rate and its interval only: a narrow column
    puts the interval on a second line instead of pushing the table past the page.
    """
    if v.value is None:
        return _e(numbers.rate(v))
    return (
        f'<span class="nw">{_e(numbers.percent(v.value))}</span> '
        f'<span class="nw">({_e(numbers.interval(v.lower, v.upper))})</span>'
    )


def _status_html(k: Kpi) -> str:
    reason = status_reason(k)
    return _status_badge(k.status) + (
        f'<br><span class="small">{_e(reason)}</span>' if reason else ""
    )


def _volume_notes_html(kpis: Sequence[Kpi]) -> str:
    return "".join(
        f'<p class="small" data-volume-note="{_e(k.rate_id)}">{_e(volume_note(k))}</p>'
        for k in kpis
        if volume_note(k)
    )


def render_html(report: WeeklyReport) -> str:
    """The whole report as one HTML document (UTF-8 text)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Safety posture {_e(report.week)}</title>",
        f"<style>{_CSS}</style></head><body>",
        _html_summary(report),
        _html_kpis(report),
        _html_trends(report),
        _html_risk(report),
        _html_incidents(report),
        _html_drift(report),
        _html_quality(report),
        _html_versions(report),
        "<footer>",
        *[f"<p>{_e(n)}</p>" for n in FOOTNOTES],
        "</footer></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _html_summary(report: WeeklyReport) -> str:
    css, word = headline(report)
    counts = report.status_counts()
    pills = " ".join(
        f'<span data-count="{s}">{_status_badge(s)} {counts[s]}</span>'
        for s in (MET, AT_RISK, UNCONFIRMED, MISSED, NO_DATA)
        if s != UNCONFIRMED or counts[s]
    )
    events = (
        f"{report.events:,} events aggregated ({report.events_seen:,} records seen)"
        if report.has_data
        else "No events in this week"
    )
    return (
        '<section id="summary">'
        f"<h1>Safety posture, week {_e(report.week)}</h1>"
        f'<p class="meta">{_e(day(report.start))} to '
        f"{_e(day(report.end))} (UTC, end exclusive) · generated "
        f"{_e(when(report.generated_at))} · segments by {_e(' / '.join(report.dimensions))}</p>"
        f'<p class="headline">Overall: {_badge(css, word)} '
        f'<span class="pills">{pills}</span></p>'
        f'<p data-events="{report.events}">{_e(events)}.</p>'
        f'<p class="lead">{_e(summary_sentence(report))}</p>'
        "</section>"
    )


def _html_kpis(report: WeeklyReport) -> str:
    rows = []
    for k in report.kpis:
        r = _kpi_row(k, report.previous_events > 0)
        attrs = {
            "data-kpi": k.rate_id,
            "data-value": _attr(k.current.value),
            "data-lower": _attr(k.current.lower) if k.current.denominator else "",
            "data-upper": _attr(k.current.upper) if k.current.denominator else "",
            "data-numerator": _attr(k.current.numerator),
            "data-denominator": _attr(k.current.denominator),
            "data-status": k.status,
            "data-target": _attr(k.target),
            "data-volume-to-confirm": _attr(k.volume_to_confirm),
            "data-previous-numerator": _attr(k.previous.numerator),
            "data-previous-denominator": _attr(k.previous.denominator),
            "data-p-value": _attr(k.change.p_value),
        }
        attr_text = " ".join(f'{a}="{_e(v)}"' for a, v in attrs.items())
        rows.append(
            f"<tr {attr_text}><td><strong>{_e(k.name)}</strong>"
            f'<br><span class="small">{_e(k.explanation)}</span></td>'
            f'<td class="num">{_rate_html(k.current)}<br><span class="small">{_e(r.counts)}</span>'
            f'</td><td class="num"><span class="nw">{_e(r.target)}</span></td>'
            f"<td>{_status_html(k)}</td>"
            f'<td class="num">{_e(r.previous)}</td><td>{_e(r.change)}</td></tr>'
        )
    table = (
        "<table><thead><tr><th>KPI</th><th class=num>This week (95 % interval)</th>"
        "<th class=num>Target</th><th>Status</th><th class=num>Last week</th>"
        "<th>Change</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    return (
        '<section id="kpis"><h2>Safety KPIs against targets</h2>'
        f'<p class="lead">{_e(KPI_LEAD)}</p>'
        f"{table}{_volume_notes_html(report.kpis)}<p class=small>{_e(_kpi_note(report))}</p>"
        f"{_html_categories(report)}</section>"
    )


def _html_categories(report: WeeklyReport) -> str:
    shown = [k for k in report.categories if k.current.numerator or k.previous.numerator]
    if not report.has_data:
        return ""
    if not shown:
        return _empty("No output was flagged in any policy category this week.")
    rows = "".join(
        f'<tr data-category="{_e(k.rate_id)}" data-numerator="{k.current.numerator}" '
        f'data-denominator="{k.current.denominator}">'
        f"<td>{_e(k.name.removeprefix('Harmful output: '))}</td>"
        f'<td class="num">{_rate_html(k.current)}</td>'
        f'<td class="num">{k.current.numerator:,}</td>'
        f'<td class="num">{_e(_kpi_row(k, report.previous_events > 0).previous)}</td>'
        f"<td>{_e(_kpi_row(k, report.previous_events > 0).change)}</td></tr>"
        for k in shown
    )
    return (
        "<h3>Harmful output by policy category</h3>"
        "<table><thead><tr><th>Category</th><th class=num>This week (95 % interval)</th>"
        "<th class=num>Outputs flagged</th><th class=num>Last week</th><th>Change</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _chart_alt(name: str, bucket: str) -> str:
    return f"{name} per {bucket} over the week, with its 95 % interval and the target"


def _html_trends(report: WeeklyReport) -> str:
    t = report.trends
    figures = []
    for trend in t.charts:
        data = base64.b64encode(trend_chart(trend)).decode("ascii")
        alt = _chart_alt(trend.name, t.bucket)
        goal = numbers.target(trend.target, higher_is_worse=trend.higher_is_worse)
        target = f'; target <span class="nw">{_e(goal)}</span>'
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}" '
            f'data-chart="{_e(trend.rate_id)}">'
            f"<figcaption>{_e(trend.name)}: one point per {_e(t.bucket)}"
            f"{target if trend.target is not None else ''}.</figcaption></figure>"
        )
    body = f'<div class="charts">{"".join(figures)}</div>' if figures else ""
    if not report.has_data:
        body = _empty("No events in this week, so there is nothing to chart.")
    skipped = [
        f"{kpi_name(r)}: nothing to measure it on this week (no denominator)" for r in t.skipped
    ]
    note = (
        f"<p class=small>No chart for {_e('; '.join(skipped))}.</p>"
        if skipped and report.has_data
        else ""
    )
    return (
        '<section id="trends"><h2>Trends over the week</h2>'
        '<p class="lead">The line is the rate, the shaded band its 95 % interval (wide when '
        "few events were counted), the dashed red line the target.</p>"
        f"{body}{note}</section>"
    )


def _html_risk(report: WeeklyReport) -> str:
    r = report.risk
    rows = []
    for i, s in enumerate(r.rows, 1):
        flag = _badge("bad", "above target") if s.above_target else _badge("ok", "within")
        if r.violation_target is None:
            flag = _badge("none", "no target")
        rows.append(
            f'<tr data-segment="{_e(s.segment)}" data-events="{s.events}" '
            f'data-distinct-users="{s.distinct_users}" '
            f'data-violations="{s.violation.numerator}" '
            f'data-violation-value="{_attr(s.violation.value)}" '
            f'data-violation-lower="{_attr(s.violation.lower)}" '
            f'data-refusals="{s.refusal.numerator}" '
            f'data-refusal-value="{_attr(s.refusal.value)}">'
            f'<td class="num">{i}</td><td class="segment">{_e(s.segment)}</td>'
            f'<td class="num">{s.events:,}</td><td class="num">{s.distinct_users:,}</td>'
            f'<td class="num">{_rate_html(s.violation)}</td><td>{flag}</td>'
            f'<td class="num">{_rate_html(s.refusal)}</td></tr>'
        )
    header = " / ".join(d.replace("_", " ") for d in r.dimensions)
    if rows:
        body = (
            f"<table><thead><tr><th class=num>#</th><th>Segment ({_e(header)})</th>"
            "<th class=num>Events</th><th class=num>Users</th>"
            "<th class=num>Harmful output (95 % interval)</th><th>vs target</th>"
            "<th class=num>Refusal rate (95 % interval)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    else:
        body = _empty(
            f"No segment had at least {r.min_events:,} events and {r.min_distinct_users} "
            "distinct users this week, so none is ranked."
        )
    return (
        '<section id="risk-segments"><h2>Top risk segments</h2>'
        f'<p class="lead">The {len(r.rows) or "–"} segments whose harmful output rate is '
        "highest even at the low end of its 95 % interval, so that a handful of events cannot "
        "put a small segment on top by chance. The refusal rate is shown beside it: a "
        "segment can look safe by refusing too much.</p>"
        f"{body}<p class=small>{_e(_risk_note(report))}</p></section>"
    )


def _html_incidents(report: WeeklyReport) -> str:
    inc = report.incidents
    if not inc.incidents:
        body = _empty("No alerts fired this week." + _incidents_held_back(report))
    else:
        rows = []
        for i in inc.incidents:
            css, within = _within(i)
            resolved = when(i.resolved_at) if i.resolved_at else "still firing"
            acked = duration(i.mtta_seconds) if i.mtta_seconds is not None else "not acknowledged"
            earlier = " (fired before this week)" if i.fired_before_week else ""
            rows.append(
                f'<tr data-rule="{_e(i.rule)}" data-severity="{_e(i.severity)}" '
                f'data-segment="{_e(i.segment)}" data-mttr-seconds="{_attr(i.mttr_seconds)}" '
                f'data-mtta-seconds="{_attr(i.mtta_seconds)}">'
                f'<td><a href="{_e(i.runbook)}">{_e(i.rule)}</a>'
                f'<br><span class="small">{_e(i.summary)}</span></td>'
                f'<td class="nowrap">{_e(i.severity)}</td><td class="segment">{_e(i.segment)}</td>'
                f"<td>{_e(when(i.fired_at))}{_e(earlier)}<br>"
                f'<span class="small">resolved: {_e(resolved)}</span></td>'
                f'<td class="num">{_e(duration(i.mttr_seconds))}<br>{_badge(css, within)}</td>'
                f"<td>{_e(acked)}</td></tr>"
            )
        body = (
            f"<p>{_e(_incident_aggregate(report))}</p>"
            "<table><thead><tr><th>Alert (runbook)</th><th>Sev.</th><th>Segment</th>"
            "<th>Fired</th><th class=num>Time to resolve (target)</th>"
            "<th>Acknowledged after</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    return (
        '<section id="incidents"><h2>Incidents</h2>'
        '<p class="lead">Every alert that fired, or was still firing, during the week. Time '
        "to resolve runs from the window the alert fired in to the window it resolved in; "
        "time to acknowledge from the alert to the first acknowledgement.</p>"
        f"{body}</section>"
    )


def _html_drift(report: WeeklyReport) -> str:
    ch = report.changes
    k = report.risk.min_distinct_users
    parts = [
        '<section id="drift"><h2>Changes this week</h2>'
        '<p class="lead">Model, prompt and policy versions that appeared this week, compared '
        "with the versions they follow on the same product surface, and the segments where "
        f"what users get (answered, refused, blocked…) shifted (outcome PSI above {DRIFT_PSI:g})."
        "</p>"
    ]
    if not ch.tracked_dimensions:
        parts.append(
            _empty(
                "No version dimension (model_version, prompt_version, policy_version) is a "
                "segment dimension (setting stream.dimensions), so changes cannot be tracked."
            )
        )
    else:
        note = _history_note(report)
        if note:
            parts.append(f"<p class=small>{_e(note)}</p>")
        if not ch.comparisons:
            parts.append(_empty("No new model, prompt or policy version appeared this week."))
    shown, rest = ranked_comparisons(ch.comparisons)
    for c in shown:
        parts.append(
            f'<div data-version="{_e(c.dimension)}={_e(c.value)}" '
            f'data-surface="{_e(c.surface or "")}">'
            f"<h3>New {_e(_comparison_title(c))}</h3>"
            f"<p class=small>{_e(_comparison_note(c, k))}</p>"
        )
        if c.rates:
            rows = "".join(
                f'<tr data-rate="{_e(r.rate_id)}" data-p-value="{_attr(r.p_value)}" '
                f'data-q-value="{_attr(r.q_value)}">'
                f"<td>{_e(r.name)}</td><td class=num>{_rate_html(r.new)}</td>"
                f"<td class=num>{_rate_html(r.previous)}</td>"
                f"<td class=num>{_e(_difference(r.new, r.previous))}</td>"
                f"<td>{_e(_q_text(r.q_value, r.p_value))}</td></tr>"
                for r in c.rates
            )
            parts.append(
                "<table><thead><tr><th>Rate</th><th class=num>New version</th>"
                "<th class=num>Previous</th><th class=num>Difference</th><th>Significance</th>"
                f"</tr></thead><tbody>{rows}</tbody></table>"
            )
        if c.drift:
            rows = "".join(
                f'<tr data-drift-segment="{_e(f.segment)}" data-max-psi="{_attr(f.max_psi)}">'
                f"<td>{_e(f.segment)}</td>"
                f"<td class=num>{f.windows_flagged} of {f.windows_tested}</td>"
                f"<td class=num>{f.max_psi:.2f}</td><td>{_e(when(f.max_psi_window))}</td>"
                f"<td>{_e(f.baseline)}</td></tr>"
                for f in c.drift
            )
            parts.append(
                "<table><thead><tr><th>Segment with an outcome shift</th>"
                f"<th class=num>Windows with PSI &gt; {DRIFT_PSI:g}</th>"
                "<th class=num>Largest PSI</th><th>When</th><th>Compared with</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>"
            )
        elif not c.suppressed:
            parts.append("<p class=small>No segment's outcome mix shifted noticeably.</p>")
        if c.drift_suppressed:
            parts.append(
                f"<p class=small>{c.drift_suppressed} more segment(s) with an outcome shift "
                f"have fewer than {k} distinct users and are not shown.</p>"
            )
        parts.append("</div>")
    if rest:
        rows = "".join(
            f'<tr data-version="{_e(c.dimension)}={_e(c.value)}" '
            f'data-surface="{_e(c.surface or "")}">'
            + "".join(f"<td>{_e(v)}</td>" for v in _rest_row(c))
            + "</tr>"
            for c in rest
        )
        parts.append(
            f"<h3>{len(rest)} more new version(s)</h3>"
            "<table><thead><tr>"
            + "".join(f"<th>{_e(h)}</th>" for h in _REST_HEADERS)
            + f"</tr></thead><tbody>{rows}</tbody></table>"
        )
    parts.append("</section>")
    return "".join(parts)


def _pipeline_only(report: WeeklyReport) -> list[Kpi]:
    """The data-quality KPIs not already in the KPI table (whose notes are said there)."""
    shown = {k.rate_id for k in report.kpis}
    q = report.data_quality
    return [k for k in (q.telemetry, q.redaction) if k.rate_id not in shown]


def _quality_items(report: WeeklyReport) -> list[tuple[str, str, int]]:
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


def _html_quality(report: WeeklyReport) -> str:
    q = report.data_quality
    rows = "".join(
        f'<tr data-metric="{key}" data-value="{n}"><td>{_e(label)}</td>'
        f"<td class=num>{n:,}</td></tr>"
        for key, label, n in _quality_items(report)
    )
    if q.batches == 0:
        intro = _empty("No micro-batch was committed this week.")
    else:
        intro = ""
    reasons = (
        ", ".join(f"{reason} {n:,}" for reason, n in q.rejected_by_reason)
        if q.rejected_by_reason
        else "none"
    )
    failing = ""
    if q.failing_expectations:
        failing = (
            "<table><thead><tr><th>Failing expectation</th><th>Column</th>"
            "<th class=num>Batches</th><th class=num>Unexpected values</th></tr></thead><tbody>"
            + "".join(
                f"<tr><td>{_e(f.expectation)}</td><td>{_e(f.column)}</td>"
                f"<td class=num>{f.batches:,}</td><td class=num>{f.unexpected:,}</td></tr>"
                for f in q.failing_expectations
            )
            + "</tbody></table>"
        )
    kpi_rows = "".join(
        f'<tr data-kpi="{_e(k.rate_id)}" data-status="{k.status}"><td>{_e(k.name)}</td>'
        f"<td class=num>{_rate_html(k.current)}</td><td class=num>{_e(target_text(k))}</td>"
        f"<td>{_status_html(k)}</td></tr>"
        for k in (q.telemetry, q.redaction)
    )
    not_run = (
        f"<p class=small>The suite did not run on {q.quality_not_run} batch(es).</p>"
        if q.quality_not_run
        else ""
    )
    return (
        '<section id="data-quality"><h2>Data quality</h2>'
        '<p class="lead">Whether the numbers above can be trusted: what came in, what was '
        "set aside and why, and whether the safety telemetry was complete and redacted.</p>"
        f"{intro}<table><tbody>{rows}</tbody></table>"
        f"<p class=small>Rejected by reason: {_e(reasons)}.</p>{not_run}{failing}"
        "<table><thead><tr><th>Pipeline KPI</th><th class=num>This week (95 % interval)</th>"
        f"<th class=num>Target</th><th>Status</th></tr></thead><tbody>{kpi_rows}</tbody></table>"
        f"{_volume_notes_html(_pipeline_only(report))}"
        "</section>"
    )


def _html_versions(report: WeeklyReport) -> str:
    v = report.versions
    if v.seen:
        rows = "".join(
            f'<tr data-dimension="{_e(s.dimension)}" data-value="{_e(s.value)}" '
            f'data-new="{str(s.is_new).lower()}" data-events="{s.events}">'
            f"<td>{_e(s.dimension.replace('_', ' '))}</td><td>{_e(s.value)}</td>"
            f"<td>{_e(when(s.first_seen))}</td><td class=num>{s.events:,}</td>"
            f"<td>{_e(', '.join(s.surfaces) or '–')}</td>"
            f"<td>{_badge('warn', 'new') if s.is_new else ''}</td></tr>"
            for s in v.seen
        )
        table = (
            "<table><thead><tr><th>Dimension</th><th>Version</th><th>First seen</th>"
            "<th class=num>Events this week</th><th>Surfaces</th><th>New this week</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )
    else:
        table = _empty("No model, prompt or policy version had traffic this week.")
    return (
        '<section id="versions"><h2>What changed</h2>'
        '<p class="lead">The versions in production this week, new ones first, and the alert '
        "rules watching them.</p>"
        f'{table}<p data-rules-evaluated="{v.rules_evaluated}">{_e(_rules_line(report))}</p>'
        "</section>"
    )


def _rules_line(report: WeeklyReport) -> str:
    v = report.versions
    fired = ", ".join(v.rules_fired) or "none"
    return (
        f"Alert rules evaluated: {v.rules_evaluated}; rules with an incident this week: "
        f"{fired}; alert state changes this week: {v.transitions}; incidents: "
        f"{len(report.incidents.incidents)}."
    )


# ---------------------------------------------------------------- Markdown
class _Markup(str):
    """Markdown the renderer wrote itself (bold, links) around escaped text: kept as is."""


# Characters with a meaning in Markdown or HTML, shown literally. `(` and `)` only form a link
# after `]`, `#`, `-`, `+` and `1.` only mark up a line they start, and text from the warehouse
# never starts a line here.
_MD_ESCAPES = {
    "\\": "\\\\", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
    "~": "\\~", "|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;",
    "\t": " ", "\n": " ", "\r": " ",
}  # fmt: skip


def md_escape(text: object) -> str:
    r"""`text` shown literally in Markdown, on one line, also inside a table cell.

    Markdown and HTML characters are escaped, line breaks become spaces, and invisible
    characters that could disguise text (bidi overrides and isolates, zero-width characters,
    other format and control characters) are shown as their code, e.g. `\u202e`. Every text
    of the Markdown report goes through here; `_Markup` (from `_bold`, `_link`) is kept.
    """
    if isinstance(text, _Markup):
        return str(text)
    out = []
    for ch in str(text):
        if ch in _MD_ESCAPES:
            out.append(_MD_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def _bold(text: object) -> _Markup:
    return _Markup(f"**{md_escape(text)}**")


def _md_url(url: str) -> str:
    """A link target that cannot end the link or break the line: unsafe bytes %-encoded."""
    return urllib.parse.quote(url, safe=":/?#@!$&'*+,;=%~-._")


def _link(text: object, url: str) -> _Markup:
    return _Markup(f"[{md_escape(text)}]({_md_url(url)})")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(md_escape(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return out + [""]


def render_markdown(report: WeeklyReport, chart_dir_name: str | None = None) -> str:
    """The report as Markdown; charts referenced as `<chart_dir_name>/<rate_id>.png`, or
    left out (with a note) when `chart_dir_name` is None.
    """
    _, word = headline(report)
    counts = report.status_counts()
    out = [
        f"# Safety posture, week {md_escape(report.week)}",
        "",
        md_escape(
            f"{day(report.start)} to {day(report.end)} (UTC, end exclusive) · generated "
            f"{when(report.generated_at)} · segments by {' / '.join(report.dimensions)}"
        ),
        "",
        "## Summary",
        "",
        _bold(f"Overall: {word}")
        + " — "
        + md_escape(
            ", ".join(
                f"{STATUS_LABELS[s].lower()}: {n}"
                for s, n in counts.items()
                if s != UNCONFIRMED or n
            )
        ),
        "",
        (
            f"{report.events:,} events aggregated ({report.events_seen:,} records seen)."
            if report.has_data
            else "No events in this week."
        ),
        "",
        md_escape(summary_sentence(report)),
        "",
        "## Safety KPIs against targets",
        "",
    ]
    kpi_rows = []
    for k in report.kpis:
        r = _kpi_row(k, report.previous_events > 0)
        this_week = f"{r.value} — {r.counts}" if r.counts else r.value
        kpi_rows.append([k.name, this_week, r.target, _md_status(k), r.previous, r.change])
    out += _md_table(
        ["KPI", "This week (95 % interval)", "Target", "Status", "Last week", "Change"], kpi_rows
    )
    out += _md_volume_notes(report.kpis)
    out += [md_escape(_kpi_note(report)), ""]
    shown = [k for k in report.categories if k.current.numerator or k.previous.numerator]
    if report.has_data and shown:
        out += ["### Harmful output by policy category", ""]
        out += _md_table(
            ["Category", "This week (95 % interval)", "Outputs flagged", "Change"],
            [
                [
                    k.name.removeprefix("Harmful output: "),
                    numbers.rate(k.current),
                    f"{k.current.numerator:,}",
                    _kpi_row(k, report.previous_events > 0).change,
                ]
                for k in shown
            ],
        )
    out += ["## Trends over the week", ""]
    t = report.trends
    if not report.has_data:
        out += ["No events in this week, so there is nothing to chart.", ""]
    elif chart_dir_name is None:
        out += ["Charts are in the HTML version of this report.", ""]
    else:
        for trend in t.charts:
            alt = _chart_alt(trend.name, t.bucket)
            out += [f"![{md_escape(alt)}]({_md_url(f'{chart_dir_name}/{trend.rate_id}.png')})", ""]
    if t.skipped and report.has_data:
        names = "; ".join(f"{kpi_name(r)} (no denominator)" for r in t.skipped)
        out += [md_escape(f"No chart for {names}."), ""]
    out += _md_risk(report)
    out += _md_incidents(report)
    out += _md_changes(report)
    out += _md_quality(report)
    out += _md_versions(report)
    out += ["---", ""] + [f"- {md_escape(n)}" for n in FOOTNOTES]
    return "\n".join(out) + "\n"


def _md_status(k: Kpi) -> _Markup:
    reason = status_reason(k)
    return _Markup(_bold(STATUS_LABELS[k.status]) + (f" — {md_escape(reason)}" if reason else ""))


def _md_volume_notes(kpis: Sequence[Kpi]) -> list[str]:
    notes = [volume_note(k) for k in kpis if volume_note(k)]
    return [line for note in notes for line in (md_escape(note), "")]


def _md_risk(report: WeeklyReport) -> list[str]:
    r = report.risk
    out = ["## Top risk segments", ""]
    if r.rows:
        header = " / ".join(d.replace("_", " ") for d in r.dimensions)
        out += _md_table(
            ["#", f"Segment ({header})", "Events", "Users", "Harmful output", "Refusal rate"],
            [
                [
                    i,
                    s.segment,
                    f"{s.events:,}",
                    f"{s.distinct_users:,}",
                    numbers.rate(s.violation) + (" — above target" if s.above_target else ""),
                    numbers.rate(s.refusal),
                ]
                for i, s in enumerate(r.rows, 1)
            ],
        )
    else:
        out += [
            f"No segment had at least {r.min_events:,} events and {r.min_distinct_users} "
            "distinct users this week, so none is ranked.",
            "",
        ]
    return out + [md_escape(_risk_note(report)), ""]


def _md_incidents(report: WeeklyReport) -> list[str]:
    inc = report.incidents
    out = ["## Incidents", ""]
    if not inc.incidents:
        return out + ["No alerts fired this week." + _incidents_held_back(report), ""]
    out += [md_escape(_incident_aggregate(report)), ""]
    rows = []
    for i in inc.incidents:
        _, within = _within(i)
        rows.append(
            [
                _link(i.rule, i.runbook),
                i.severity,
                i.segment,
                when(i.fired_at) + (" (before this week)" if i.fired_before_week else ""),
                when(i.resolved_at) if i.resolved_at else "still firing",
                duration(i.mttr_seconds),
                within,
                duration(i.mtta_seconds) if i.mtta_seconds is not None else "not acknowledged",
            ]
        )
    return out + _md_table(
        [
            "Alert (runbook)",
            "Severity",
            "Segment",
            "Fired",
            "Resolved",
            "Time to resolve",
            "Within target",
            "Time to acknowledge",
        ],
        rows,
    )


def _md_changes(report: WeeklyReport) -> list[str]:
    ch = report.changes
    k = report.risk.min_distinct_users
    out = ["## Changes this week", ""]
    if not ch.tracked_dimensions:
        return out + [
            "No version dimension is a segment dimension, so changes are not tracked.",
            "",
        ]
    note = _history_note(report)
    if note:
        out += [md_escape(note), ""]
    if not ch.comparisons:
        out += ["No new model, prompt or policy version appeared this week.", ""]
    shown, rest = ranked_comparisons(ch.comparisons)
    for c in shown:
        title, note = _comparison_title(c), _comparison_note(c, k)
        out += [f"### New {md_escape(title)}", "", md_escape(note), ""]
        if c.rates:
            out += _md_table(
                ["Rate", "New version", "Previous", "Difference", "Significance"],
                [
                    [
                        r.name,
                        numbers.rate(r.new),
                        numbers.rate(r.previous),
                        _difference(r.new, r.previous),
                        _q_text(r.q_value, r.p_value),
                    ]
                    for r in c.rates
                ],
            )
        if c.drift:
            out += _md_table(
                [
                    "Segment with an outcome shift",
                    f"Windows with PSI > {DRIFT_PSI:g}",
                    "Largest PSI",
                    "When",
                ],
                [
                    [
                        f.segment,
                        f"{f.windows_flagged} of {f.windows_tested}",
                        f"{f.max_psi:.2f}",
                        when(f.max_psi_window),
                    ]
                    for f in c.drift
                ],
            )
        if c.drift_suppressed:
            out += [
                f"{c.drift_suppressed} more segment(s) with an outcome shift have fewer than "
                f"{k} distinct users and are not shown.",
                "",
            ]
    if rest:
        out += [f"### {len(rest)} more new version(s)", ""]
        out += _md_table(_REST_HEADERS, [_rest_row(c) for c in rest])
    return out


def _md_quality(report: WeeklyReport) -> list[str]:
    q = report.data_quality
    out = ["## Data quality", ""]
    if q.batches == 0:
        out += ["No micro-batch was committed this week.", ""]
    out += _md_table(["", "Count"], [[label, f"{n:,}"] for _, label, n in _quality_items(report)])
    reasons = ", ".join(f"{r} {n:,}" for r, n in q.rejected_by_reason) or "none"
    out += [md_escape(f"Rejected by reason: {reasons}."), ""]
    if q.failing_expectations:
        out += _md_table(
            ["Failing expectation", "Column", "Batches", "Unexpected values"],
            [[f.expectation, f.column, f.batches, f.unexpected] for f in q.failing_expectations],
        )
    out += _md_table(
        ["Pipeline KPI", "This week (95 % interval)", "Target", "Status"],
        [
            [k.name, numbers.rate(k.current), target_text(k), _md_status(k)]
            for k in (q.telemetry, q.redaction)
        ],
    )
    return out + _md_volume_notes(_pipeline_only(report))


def _md_versions(report: WeeklyReport) -> list[str]:
    v = report.versions
    out = ["## What changed", ""]
    if v.seen:
        out += _md_table(
            ["Dimension", "Version", "First seen", "Events this week", "Surfaces", "New"],
            [
                [
                    s.dimension.replace("_", " "),
                    s.value,
                    when(s.first_seen),
                    f"{s.events:,}",
                    ", ".join(s.surfaces) or "–",
                    "new" if s.is_new else "",
                ]
                for s in v.seen
            ],
        )
    else:
        out += ["No model, prompt or policy version had traffic this week.", ""]
    return out + [md_escape(_rules_line(report)), ""]
