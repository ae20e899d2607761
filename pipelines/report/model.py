"""The weekly report's data model and its pure parts: ISO weeks, KPI status and the volume
a target needs, week-over-week change, trend buckets, incidents from alert transitions.

`pipelines.report.weekly` fills the model from the warehouse; `pipelines.report.render`
turns it into HTML or Markdown. Nothing here does I/O.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pipelines.alerting.engine import parse_segment
from pipelines.alerting.evaluate import segment_label
from pipelines.metrics.buckets import CounterBuckets
from pipelines.metrics.catalog import (
    RATES,
    RateValue,
    rate,
    rate_value,
)
from pipelines.metrics.rate_tests import OK, two_proportion_test
from pipelines.metrics.stats import wilson_interval
from pipelines.warehouse.tables import as_utc

MET = "met"
MISSED = "missed"
AT_RISK = "at_risk"  # the 95 % interval straddles the target
# Nothing bad seen (0 of n; n of n for a rate that must stay high), but the week is too small
# for the interval to confirm the target: rare-event targets such as 0.01 % need tens of
# thousands of events before a clean week can meet them.
UNCONFIRMED = "unconfirmed"
NO_DATA = "no_data"
NO_TARGET = "no_target"  # tracked beside its paired KPI, without a target of its own

SIGNIFICANCE = 0.05  # a week-over-week change with p below this is called significant
DRIFT_PSI = 0.1  # outcome PSI above this counts as a noticeable shift in the changes section
OUTCOME_DISTRIBUTION = "outcome"
SURFACE_DIMENSION = "product_surface"
VERSION_DIMENSIONS = ("model_version", "prompt_version", "policy_version")
NOT_A_VALUE = ("*", "other")  # all values / the cardinality-control overflow bucket

# The KPI table's rows, in reading order; refusal_rate has no target but is shown beside
# the harmful-output rate because either can be gamed alone. Other rates with a configured
# target follow in catalog order.
KPI_ORDER = (
    "violation_rate",
    "refusal_rate",
    "over_refusal_rate",
    "jailbreak_success_rate",
    "injection_success_rate",
    "unauthorized_tool_call_rate",
    "pii_output_rate",
    "redaction_failure_rate",
    "telemetry_completeness",
)
PAIRED_RATE = "refusal_rate"
CHART_RATES = (
    "violation_rate",
    "refusal_rate",
    "over_refusal_rate",
    "injection_success_rate",
    "jailbreak_success_rate",
    "unauthorized_tool_call_rate",
    "pii_output_rate",
    "telemetry_completeness",
)
# Compared between a new version and its predecessors: the charted rates but completeness,
# which describes the pipeline rather than the model.
CHANGE_RATES = tuple(r for r in CHART_RATES if r != "telemetry_completeness")

_NAMES = {
    "violation_rate": "Harmful output rate",
    "refusal_rate": "Refusal rate",
    "over_refusal_rate": "Over-refusal rate (benign requests refused)",
    "jailbreak_success_rate": "Jailbreak success rate",
    "injection_success_rate": "Prompt-injection success rate",
    "unauthorized_tool_call_rate": "Unauthorized tool-call rate",
    "pii_output_rate": "PII leakage rate",
    "redaction_failure_rate": "Redaction failure rate",
    "telemetry_completeness": "Safety telemetry completeness",
    "block_rate": "Blocked outputs",
    "user_report_rate": "User report rate",
    "appeal_overturn_rate": "Appeals overturned",
    "injection_attempt_rate": "Prompt-injection attempts",
    "successful_injection_rate": "Successful prompt injections per event",
    "jailbreak_attempt_rate": "Jailbreak attempts",
}
_EXPLANATIONS = {
    "violation_rate": "outputs flagged in any policy category",
    "refusal_rate": "requests the model refused (paired with harmful output)",
    "over_refusal_rate": "refusals of requests nothing flagged: a proxy for false positives",
    "jailbreak_success_rate": "jailbreak attempts that got past the safety controls",
    "injection_success_rate": "prompt-injection attempts that changed the model's behaviour",
    "unauthorized_tool_call_rate": "tool-using requests with a call outside the user's rights",
    "pii_output_rate": "outputs that contained personal data",
    "redaction_failure_rate": "records whose text still held personal data upstream",
    "telemetry_completeness": "records carrying every required safety field",
}


def kpi_name(rate_id: str) -> str:
    """Plain-language name of a catalog rate, e.g. 'Harmful output rate'."""
    if rate_id in _NAMES:
        return _NAMES[rate_id]
    if rate_id.startswith("violation_rate_"):
        return "Harmful output: " + rate_id.removeprefix("violation_rate_").replace("_", " ")
    return rate(rate_id).description.rstrip(".")


# ---------------------------------------------------------------- ISO weeks
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True, order=True)
class IsoWeek:
    """An ISO 8601 week, Monday 00:00 UTC to the next Monday (exclusive)."""

    year: int
    week: int

    def __post_init__(self) -> None:
        try:
            date.fromisocalendar(self.year, self.week, 1)
        except ValueError as exc:
            msg = f"{self.year}-W{self.week:02d} is not an ISO week: {exc}"
            raise ValueError(msg) from exc

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        """'2026-W47' -> IsoWeek(2026, 47); ValueError naming the expected form otherwise."""
        match = _WEEK.match(text.strip())
        if match is None:
            msg = f"cannot read ISO week {text!r}: write it as YYYY-Www, e.g. 2026-W47"
            raise ValueError(msg)
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def containing(cls, moment: datetime) -> IsoWeek:
        """The week of an aware datetime (taken in UTC); ValueError for a naive one."""
        if moment.tzinfo is None:
            msg = "need a timezone-aware datetime to find its ISO week"
            raise ValueError(msg)
        iso = moment.astimezone(UTC).isocalendar()
        return cls(iso.year, iso.week)

    @property
    def start(self) -> datetime:
        monday = date.fromisocalendar(self.year, self.week, 1)
        return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=7)

    def previous(self) -> IsoWeek:
        return IsoWeek.containing(self.start - timedelta(days=1))

    def __str__(self) -> str:
        return f"{self.year}-W{self.week:02d}"


# ---------------------------------------------------------------- the report tree
@dataclass(frozen=True)
class Change:
    """The week against the previous one: difference of proportions and its p-value."""

    difference: float | None  # current - previous; None when either week has no data
    p_value: float | None  # pooled two-proportion z test, two-sided, cluster-robust
    significant: bool | None  # p < SIGNIFICANCE; None when not tested


@dataclass(frozen=True)
class Kpi:
    rate_id: str
    name: str
    explanation: str
    current: RateValue
    previous: RateValue
    target: float | None
    higher_is_worse: bool
    status: str  # MET, MISSED, AT_RISK, UNCONFIRMED, NO_DATA or NO_TARGET
    change: Change
    # The smallest denominator at which a week with nothing bad seen meets the target
    # (`volume_to_confirm`); None without a target or when no volume can.
    volume_to_confirm: int | None = None

    @property
    def too_few_to_confirm(self) -> bool:
        """Even with nothing bad seen, this week's volume could not have met the target."""
        return (
            self.volume_to_confirm is not None
            and 0 < self.current.denominator < self.volume_to_confirm
        )


@dataclass(frozen=True)
class TrendPoint:
    start: datetime
    numerator: int
    denominator: int
    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Trend:
    rate_id: str
    name: str
    points: tuple[TrendPoint, ...]
    target: float | None
    higher_is_worse: bool
    bucket_seconds: int


@dataclass(frozen=True)
class Trends:
    bucket: str  # '1 day', '1 hour' or the stored window, e.g. '5 minutes'
    charts: tuple[Trend, ...]
    skipped: tuple[str, ...]  # chart rates without a denominator in the week


@dataclass(frozen=True)
class RiskSegment:
    segment: str  # 'chat / atlas-l-2026.10.2 / de-DE'
    values: tuple[str, ...]
    events: int
    distinct_users: int
    violation: RateValue
    refusal: RateValue
    above_target: bool  # the violation rate's lower bound exceeds its target


@dataclass(frozen=True)
class RiskSegments:
    dimensions: tuple[str, ...]
    rows: tuple[RiskSegment, ...]
    segments: int  # segments with traffic in the week
    suppressed: int  # fewer than min_distinct_users distinct users: never shown alone
    low_volume: int  # shown-able but fewer than min_events events: not ranked
    min_events: int
    min_distinct_users: int
    violation_target: float | None
    # Segments of k users or more held back too, so that the suppressed ones cannot be worked
    # out as the totals minus what is shown (complementary suppression).
    complementary: int = 0


@dataclass(frozen=True)
class Incident:
    rule: str
    severity: str
    metric: str
    segment: str
    summary: str
    fired_at: datetime  # window_start of the firing transition
    resolved_at: datetime | None  # window_start of the resolving transition
    acknowledged_at: datetime | None  # recorded_at of the first acknowledgement
    mttr_seconds: float | None  # resolved_at - fired_at (event time)
    mtta_seconds: float | None  # acknowledged - firing row's recorded_at
    target_hours: float | None
    within_target: bool | None  # None: no target, or still firing and not yet over it
    fired_before_week: bool
    runbook: str


@dataclass(frozen=True)
class Incidents:
    incidents: tuple[Incident, ...]
    by_severity: tuple[tuple[str, int], ...]
    median_mttr_seconds: float | None
    sev1: int
    still_firing: int
    mttr_targets: tuple[tuple[str, float], ...]  # severity -> hours
    # Some incident of a segment with fewer than min_distinct_users users in the week was
    # left out (of the list and of every count above); how many is not said.
    suppressed: bool = False


@dataclass(frozen=True)
class VersionSeen:
    dimension: str
    value: str
    first_seen: datetime
    events: int  # in the week
    surfaces: tuple[str, ...]
    is_new: bool  # first seen in this week


@dataclass(frozen=True)
class RateComparison:
    rate_id: str
    name: str
    new: RateValue
    previous: RateValue
    higher_is_worse: bool
    p_value: float | None  # the same test as `Change.p_value`: new against previous versions
    q_value: float | None  # Benjamini-Hochberg over every comparison of the section


@dataclass(frozen=True)
class DriftFlag:
    segment: str
    windows_tested: int
    windows_flagged: int  # outcome PSI > DRIFT_PSI
    max_psi: float
    max_psi_window: datetime
    baseline: str


@dataclass(frozen=True)
class VersionComparison:
    dimension: str
    value: str
    surface: str | None
    previous_values: tuple[str, ...]
    suppressed: bool  # a side has fewer than min_distinct_users users
    rates: tuple[RateComparison, ...]
    drift: tuple[DriftFlag, ...]
    drift_suppressed: int


@dataclass(frozen=True)
class Changes:
    tracked_dimensions: tuple[str, ...]
    new_versions: tuple[VersionSeen, ...]
    comparisons: tuple[VersionComparison, ...]
    history_start: datetime | None  # the dimension set's first window
    min_trials: int


@dataclass(frozen=True)
class FailingExpectation:
    expectation: str
    column: str
    batches: int
    unexpected: int


@dataclass(frozen=True)
class DataQuality:
    batches: int
    input_rows: int
    aggregated_rows: int
    rejected_rows: int
    rejected_by_reason: tuple[tuple[str, int], ...]
    late_rows: int
    duplicate_rows: int
    dlq_rows: int
    quality_failed_batches: int
    quality_not_run: int
    failing_expectations: tuple[FailingExpectation, ...]
    telemetry: Kpi
    redaction: Kpi


@dataclass(frozen=True)
class Versions:
    seen: tuple[VersionSeen, ...]
    rules_evaluated: int
    rules_fired: tuple[str, ...]  # rules with an incident overlapping the week
    transitions: int


@dataclass(frozen=True)
class WeeklyReport:
    week: str
    previous_week: str
    start: datetime
    end: datetime
    generated_at: datetime
    dimensions: tuple[str, ...]
    events: int
    events_seen: int
    previous_events: int
    kpis: tuple[Kpi, ...]
    categories: tuple[Kpi, ...]
    trends: Trends
    risk: RiskSegments
    incidents: Incidents
    changes: Changes
    data_quality: DataQuality
    versions: Versions

    @property
    def has_data(self) -> bool:
        return self.events_seen > 0 or self.events > 0

    def kpi(self, rate_id: str) -> Kpi:
        for k in (*self.kpis, *self.categories):
            if k.rate_id == rate_id:
                return k
        msg = f"the report has no KPI {rate_id!r}"
        raise KeyError(msg)

    def status_counts(self) -> dict[str, int]:
        """KPIs with a target per status (MET, MISSED, AT_RISK, UNCONFIRMED, NO_DATA)."""
        counts = dict.fromkeys((MET, MISSED, AT_RISK, UNCONFIRMED, NO_DATA), 0)
        for k in self.kpis:
            if k.status in counts:
                counts[k.status] += 1
        return counts


# ---------------------------------------------------------------- pure calculations
def target_status(value: RateValue, target: float | None, *, higher_is_worse: bool) -> str:
    """MET when the whole 95 % interval is on the good side of the target, MISSED when it is
    all on the bad side, AT_RISK when it straddles it; NO_DATA without a denominator.

    An interval that straddles the target although nothing bad was seen (0 of n, or n of n
    for a rate that must stay high) is UNCONFIRMED rather than AT_RISK: the week shows no
    risk, only too few events to confirm the target (see `volume_to_confirm`).
    """
    if value.denominator == 0:
        return NO_DATA
    if target is None:
        return NO_TARGET
    if higher_is_worse:
        if value.upper <= target:
            return MET
        if value.lower > target:
            return MISSED
        clean = value.numerator == 0
    else:
        if value.lower >= target:
            return MET
        if value.upper < target:
            return MISSED
        clean = value.numerator == value.denominator
    return UNCONFIRMED if clean else AT_RISK


IntervalFunction = Callable[[int, int], tuple[float, float]]
_MAX_VOLUME = 10**15  # beyond any week's traffic: a target no volume can confirm gives None


def volume_to_confirm(
    target: float,
    *,
    higher_is_worse: bool,
    interval: IntervalFunction = wilson_interval,
) -> int | None:
    """The smallest n for which a week with nothing bad seen meets `target` under
    `target_status`: the upper end of `interval(0, n)` at or below the target (for a rate
    that must stay high, the lower end of `interval(n, n)` at or above it). None when no n
    up to 10^15 does (a target of 0 %, or of 100 % for a rate that must stay high).

    `interval` is the report's: a week without a single bad event has no variance between
    users, so its cluster-robust interval is Wilson's (`pipelines.metrics.buckets`). Found
    by doubling then bisection, which needs only that the interval narrows as n grows.
    """

    def confirms(n: int) -> bool:
        if higher_is_worse:
            return interval(0, n)[1] <= target
        return interval(n, n)[0] >= target

    high = 1
    while not confirms(high):
        if high >= _MAX_VOLUME:
            return None
        high *= 2
    low = high // 2  # confirms(low) is False, or low == 0
    while high - low > 1:
        middle = (low + high) // 2
        if confirms(middle):
            high = middle
        else:
            low = middle
    return high


def week_over_week(current: RateValue, previous: RateValue) -> Change:
    """The week's rate against the previous week's: a pooled two-proportion z test whose
    variance on each side is widened by that week's design effect (the rates'
    `design_effect`, from the per-user-bucket sums), so that a change one prolific user
    makes is not called significant. Weeks without bucket sums count as independent events.
    """
    test = two_proportion_test(
        current.numerator,
        current.denominator,
        previous.numerator,
        previous.denominator,
        current_design_effect=current.design_effect,
        baseline_design_effect=previous.design_effect,
    )
    if test.status != OK or test.p_value is None:
        return Change(None, None, None)
    return Change(test.difference, test.p_value, test.p_value < SIGNIFICANCE)


def build_kpi(
    rate_id: str,
    current: Mapping[str, int],
    previous: Mapping[str, int],
    target: float | None,
    current_buckets: CounterBuckets | None = None,
    previous_buckets: CounterBuckets | None = None,
) -> Kpi:
    """A KPI of the week: its rate with a 95 % interval (cluster-robust when the weeks'
    per-user-bucket sums are given), the previous week's, and its target status.
    """
    cur = rate_value(rate_id, current, current_buckets)
    prev = rate_value(rate_id, previous, previous_buckets)
    worse = rate(rate_id).higher_is_worse
    volume = None if target is None else volume_to_confirm(target, higher_is_worse=worse)
    return Kpi(
        rate_id=rate_id,
        name=kpi_name(rate_id),
        explanation=_EXPLANATIONS.get(rate_id, rate(rate_id).description.rstrip(".")),
        current=cur,
        previous=prev,
        target=target,
        higher_is_worse=worse,
        status=target_status(cur, target, higher_is_worse=worse),
        change=week_over_week(cur, prev),
        volume_to_confirm=volume,
    )


def kpi_ids(targets: Mapping[str, float]) -> list[str]:
    ordered = [r for r in KPI_ORDER if r in targets or r == PAIRED_RATE]
    return ordered + [r.id for r in RATES if r.id in targets and r.id not in ordered]


def trend_bucket(span: timedelta, window: timedelta) -> timedelta:
    """1 day when the data spans at least 3 days, else 1 hour from 6 hours, else the window."""
    if span >= timedelta(days=3):
        return timedelta(days=1)
    if span >= timedelta(hours=6):
        return timedelta(hours=1)
    return window


def duration_text(delta: timedelta) -> str:
    """'1 day', '1 hour', '5 minutes', '30 seconds'."""
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def bucket_trends(
    windows: Sequence[tuple[datetime, datetime, Mapping[str, int]]],
    rate_ids: Sequence[str],
    targets: Mapping[str, float],
    *,
    users: Mapping[datetime, int] | None = None,
    min_users: int = 0,
) -> Trends:
    """Per-window counter sums -> one series per rate, in buckets sized by `trend_bucket`.

    `windows`: (window_start, window_end, counter sums over every segment), any order.
    A bucket with a zero denominator is left out of its series (a gap, not a zero). With
    `users` (window_start -> the largest distinct users of one row of the window), a bucket
    whose windows have no row of `min_users` or more is left out too: its traffic might come
    from fewer users than that (say, one small segment alone at night).
    """
    charts: list[Trend] = []
    skipped: list[str] = []
    if not windows:
        return Trends("-", (), tuple(rate_ids))
    first = min(w[0] for w in windows)
    last = max(w[1] for w in windows)
    window = min(w[1] - w[0] for w in windows)
    size = trend_bucket(last - first, window)
    sums: dict[datetime, dict[str, int]] = {}
    largest: dict[datetime, int] = {}
    for start, _, counts in windows:
        key = _floor(start, size)
        acc = sums.setdefault(key, {})
        for c, n in counts.items():
            acc[c] = acc.get(c, 0) + int(n)
        if users is not None:
            largest[key] = max(largest.get(key, 0), users.get(start, 0))
    if users is not None:
        sums = {key: acc for key, acc in sums.items() if largest[key] >= min_users}
    for rate_id in rate_ids:
        r = rate(rate_id)
        points = []
        for key in sorted(sums):
            v = rate_value(rate_id, {c: sums[key].get(c, 0) for c in (r.numerator, r.denominator)})
            if v.denominator and v.value is not None:
                points.append(
                    TrendPoint(key, v.numerator, v.denominator, v.value, v.lower, v.upper)
                )
        if not points:
            skipped.append(rate_id)
            continue
        charts.append(
            Trend(
                rate_id=rate_id,
                name=kpi_name(rate_id),
                points=tuple(points),
                target=targets.get(rate_id),
                higher_is_worse=r.higher_is_worse,
                bucket_seconds=int(size.total_seconds()),
            )
        )
    return Trends(duration_text(size), tuple(charts), tuple(skipped))


def _floor(moment: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = int(size.total_seconds())
    offset = int((moment - epoch).total_seconds())
    return epoch + timedelta(seconds=offset - offset % seconds)


# ---------------------------------------------------------------- small-segment suppression
def complementary_segment(
    hidden_users: int, k: int, shown_events: Mapping[tuple[str, ...], int]
) -> tuple[str, ...] | None:
    """The shown segment to hold back as well, or None.

    The report's totals count every segment; what is shown per segment (or per version) is
    subtracted from them, so the suppressed segments are revealed as a whole. When, together,
    they have fewer than `k` distinct users (`hidden_users`: the HyperLogLog union of them
    all; 0 when none is suppressed), that whole describes a small group: the shown segment
    with the fewest events joins them (it has k users or more on its own, so the union then
    does too). Ties break on the segment's values.
    """
    if hidden_users == 0 or hidden_users >= k or not shown_events:
        return None
    return min(shown_events, key=lambda values: (shown_events[values], values))


def alert_segment_shown(
    segment: Sequence[tuple[str, str]],
    dims: Sequence[str],
    visible: Iterable[tuple[str, ...]],
) -> bool:
    """Whether an alert's segment (pairs of dimension and value, over a subset of `dims`)
    contains a segment of `visible` (values over `dims`, k users or more in the week), so
    has k users or more itself. A dimension outside `dims` matches nothing: not shown.
    """
    index = {d: i for i, d in enumerate(dims)}
    if any(d not in index for d, _ in segment):
        return False
    return any(all(values[index[d]] == v for d, v in segment) for values in visible)


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


def utc_time(value: datetime) -> datetime:
    out = as_utc(value)
    assert out is not None
    return out
