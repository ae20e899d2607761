"""The weekly report's data model: a frozen tree of plain values, the ISO week it covers, and
the constants its sections share (statuses, the KPIs and charts in reading order).

`pipelines.report.weekly` fills it (reads in `store`, pure builders in `build`, `kpis`,
`trends`, `incidents`, `suppression`); `pipelines.report.html` and
`pipelines.report.markdown` turn it into text. Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pipelines.metrics.catalog import RATES, RateValue
from pipelines.segments import ALL_DIMENSIONS_VALUE, OTHER_VALUE
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
# All values / the cardinality-control overflow bucket: not a version of its own.
NOT_A_VALUE = (ALL_DIMENSIONS_VALUE, OTHER_VALUE)

# The KPI table's rows, in reading order (the catalog's `kpi_row`); refusal_rate has no
# target but is shown beside the harmful-output rate because either can be gamed alone.
# Other rates with a configured target follow in catalog order.
KPI_ORDER = tuple(r.id for _, r in sorted((r.kpi_row, r) for r in RATES if r.kpi_row))
PAIRED_RATE = "refusal_rate"
CHART_RATES = tuple(r.id for r in RATES if r.chart)  # the catalog's `chart` rates, in order
# Compared between a new version and its predecessors: the charted rates but completeness,
# which describes the pipeline rather than the model.
CHANGE_RATES = tuple(r for r in CHART_RATES if r != "telemetry_completeness")


def tracked_dimensions(dims: tuple[str, ...]) -> tuple[str, ...]:
    """The version dimensions among the segment dimensions `dims`, in report order."""
    return tuple(d for d in VERSION_DIMENSIONS if d in dims)


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
class WeekChange:
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
    change: WeekChange
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
    p_value: float | None  # the same test as `WeekChange.p_value`: new against previous versions
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


def utc_time(value: datetime) -> datetime:
    out = as_utc(value)
    assert out is not None
    return out
