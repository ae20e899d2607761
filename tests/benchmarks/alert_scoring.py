"""Alert quality against known incidents: precision, recall, time to page, false pages.

Pure: pages and incidents in, figures out; no I/O, no clock. The alert-quality benchmark
(tests/benchmarks/bench_alert_quality.py) replays a synthetic week with injected incidents
(tests/benchmarks/synthetic_week.py) through the real warehouse and alert code and scores
the pages it got with `score`.

Definitions
- A page is a transition of one rule on one segment to firing (from inactive or pending,
  on a closed window or early on an open one), at the time it was recorded.
- A page is *true* when it matches an incident:
  * the rule covers the incident's kind (`covers`: rule -> kinds it can rightly page on,
    e.g. a harmful-output rule on a jailbreak wave, whose successes produce harmful
    outputs);
  * the page's segment is the incident's segment or contains it: every dimension the page
    names has the incident's value, or the roll-up value "*" (a page on `chat / *`
    contains an incident in `chat / m / de-DE`); a dimension the page does not name
    matches any value;
  * it fired in [incident start, incident end + grace]. The grace covers the pipeline's
    own delay: the last window holding incident events closes up to one window after the
    incident ends, plus the watermark delay, and the batch that moves the watermark past
    it runs up to one trigger interval later (`default_grace`: window + watermark +
    trigger, 15.5 minutes with the job's defaults).
  Every other page is false.
- precision = true pages / pages, per rule and over all rules.
- An incident is *paged* when a true page matches it. Per rule, recall is over the
  incidents of the kinds the rule is meant for (`primary`, by default its `covers`), paged
  by that rule; overall, over every incident, paged by any rule. Each recall is given over
  all incidents and over those at least `min_multiplier` times their baseline (the
  "big" incidents, 3x by default).
- time to page = the first matching page's time - the incident's start (>= 0), per
  incident paged; its median and 90th percentile (linear interpolation between order
  statistics, as numpy's default), split into rate incidents and event-level (Sev-1)
  incidents.
- false pages per week per 50 segments = false pages x (7 days / period) x (50 / segments).

Detectable incidents
Each incident may carry its *oracle detection probability* (`Incident.oracle_power`, from
tests/benchmarks/alert_oracle.py): the chance that the best possible test, one that knows
the incident's segment, its exact start and end and the exact expected count without it,
detects it at the false-page budget. An incident is *detectable* when it is at least
`min_multiplier` times its baseline and its oracle power is at least `min_power` (50 %);
`score` gives recall over the detectable incidents next to the other recall figures.
Incidents whose oracle power is unknown (`None`) are never detectable and are counted
apart (`incidents_big_unknown`): the detectable recall is then unknown too.

The same oracle also bounds how soon an incident can page (`Incident.oracle_time`, from
`oracle_time`). `score` gives its median over the detectable rate incidents, and, over the
rate incidents that were paged, the oracle's median beside the rules' median time to page
on the same incidents: how far the rules are from the best possible on the incidents they
do page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pipelines.segments import ALL_DIMENSIONS_VALUE

Segment = tuple[tuple[str, str], ...]  # ((dimension, value), ...)
WEEK = timedelta(days=7)
PER_SEGMENTS = 50


@dataclass(frozen=True)
class Incident:
    """A known incident: its kind, segment, [start, end] and size against its baseline
    (`multiplier`; inf when the baseline is 0). `event_level`: a few single events (a Sev-1
    kind such as a redaction failure), not a rate that moved. `oracle_power`: its oracle
    detection probability (`oracle_power`; None when unknown).
    """

    id: str
    kind: str
    segment: Segment
    start: datetime
    end: datetime
    multiplier: float = math.inf
    event_level: bool = False
    oracle_power: float | None = None
    # Seconds from the start the oracle needs to detect it with probability min_power
    # (`oracle_time`); None when unknown or never.
    oracle_time: float | None = None

    def __post_init__(self) -> None:
        if self.end < self.start:
            msg = f"incident {self.id} ends before it starts"
            raise ValueError(msg)


@dataclass(frozen=True)
class Page:
    """A transition to firing of `rule` on `segment`, recorded at `at`."""

    rule: str
    segment: Segment
    at: datetime
    window_start: datetime | None = None
    early: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Spread:
    """Median and 90th percentile of times to page, in seconds (None when no incident)."""

    count: int
    median: float | None
    p90: float | None


@dataclass(frozen=True)
class Quality:
    """The figures of one rule, or of all rules (`name` = "all"), or of one incident kind
    (pages then count the pages matching incidents of that kind only).
    """

    name: str
    pages: int
    true_pages: int
    false_pages: int
    incidents: int
    paged: int
    incidents_big: int
    paged_big: int
    time_to_page: Spread
    false_per_week_per_50: float
    # Incidents >= min_multiplier with oracle power >= min_power, and those paged; incidents
    # >= min_multiplier whose oracle power is unknown.
    incidents_detectable: int = 0
    paged_detectable: int = 0
    incidents_big_unknown: int = 0

    @property
    def precision(self) -> float | None:
        return self.true_pages / self.pages if self.pages else None

    @property
    def recall(self) -> float | None:
        return self.paged / self.incidents if self.incidents else None

    @property
    def recall_big(self) -> float | None:
        return self.paged_big / self.incidents_big if self.incidents_big else None

    @property
    def recall_detectable(self) -> float | None:
        """Recall over the detectable incidents; None when there is none or when the oracle
        power of an incident >= min_multiplier is unknown.
        """
        if self.incidents_big_unknown or not self.incidents_detectable:
            return None
        return self.paged_detectable / self.incidents_detectable


@dataclass(frozen=True)
class QualityReport:
    rules: tuple[Quality, ...]
    overall: Quality
    kinds: tuple[Quality, ...]
    time_to_page_rate: Spread  # rate incidents, first page by any rule
    time_to_page_event: Spread  # event-level (Sev-1) incidents
    first_page: Mapping[str, Page | None]  # incident id -> its first matching page
    matched: Mapping[int, tuple[str, ...]]  # page index -> ids of the incidents it matches
    false_pages: tuple[Page, ...]
    missed: tuple[Incident, ...]
    period: timedelta
    segments: int
    min_multiplier: float
    min_power: float = 0.5
    # The oracle's time to detect (`oracle_time`) of the detectable rate incidents, and, on
    # the rate incidents paged that have one, the oracle's and the rules' times side by side.
    oracle_time_rate: Spread = Spread(0, None, None)
    oracle_time_rate_paged: Spread = Spread(0, None, None)
    time_to_page_rate_paged: Spread = Spread(0, None, None)


@dataclass(frozen=True)
class Targets:
    """The acceptance targets of the default rule set (docs: the alert-quality issue)."""

    precision: float = 0.90
    recall_big: float = 0.95
    recall_detectable: float = 0.95  # the same target, over the detectable incidents
    false_per_week_per_50: float = 1.0
    median_rate_s: float = 120.0
    median_event_s: float = 60.0


@dataclass(frozen=True)
class TargetResult:
    name: str
    value: float | None
    target: str
    met: bool


@dataclass
class _Acc:
    pages: int = 0
    true_pages: int = 0
    first: dict[str, datetime] = field(default_factory=dict)


def default_grace(window: timedelta, watermark: timedelta, trigger: timedelta) -> timedelta:
    """How long after an incident ends a page still counts for it: window + watermark +
    trigger (see the module docstring).
    """
    return window + watermark + trigger


def contains(page: Segment, incident: Segment) -> bool:
    """Whether a page on segment `page` covers an incident in segment `incident`."""
    values = dict(incident)
    for dim, value in page:
        if value == ALL_DIMENSIONS_VALUE:
            continue
        if values.get(dim) != value:
            return False
    return True


def matches(
    page: Page, incident: Incident, covers: Mapping[str, Iterable[str]], grace: timedelta
) -> bool:
    """Whether `page` is a true page for `incident` (see the module docstring)."""
    return (
        incident.kind in set(covers.get(page.rule, ()))
        and contains(page.segment, incident.segment)
        and incident.start <= page.at <= incident.end + grace
    )


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile of `values` by linear interpolation between order statistics
    (numpy's default method); None for no values.
    """
    if not 0.0 <= q <= 1.0:
        msg = f"q must be in [0, 1], got {q}"
        raise ValueError(msg)
    if not values:
        return None
    xs = sorted(values)
    h = q * (len(xs) - 1)
    lo = math.floor(h)
    if lo + 1 >= len(xs):
        return float(xs[lo])
    return float(xs[lo] + (h - lo) * (xs[lo + 1] - xs[lo]))


def spread(values: Sequence[float]) -> Spread:
    return Spread(len(values), quantile(values, 0.5), quantile(values, 0.9))


def per_week_per_50(count: int, period: timedelta, segments: int) -> float:
    """`count` over `period` and `segments`, as a count per week per 50 segments."""
    if period <= timedelta(0) or segments <= 0:
        msg = "period and segments must be positive"
        raise ValueError(msg)
    return count * (WEEK / period) * (PER_SEGMENTS / segments)


def score(
    pages: Sequence[Page],
    incidents: Sequence[Incident],
    *,
    covers: Mapping[str, Iterable[str]],
    period: timedelta,
    segments: int,
    grace: timedelta,
    primary: Mapping[str, Iterable[str]] | None = None,
    rules: Sequence[str] | None = None,
    min_multiplier: float = 3.0,
    min_power: float = 0.5,
) -> QualityReport:
    """Match `pages` to `incidents` and compute every figure (see the module docstring).

    `rules` lists the rules to report (default: those in `covers`, then any other that
    paged); `period` and `segments` scale the false pages to a week and 50 segments; an
    incident >= `min_multiplier` with an oracle power >= `min_power` is detectable.
    """
    cover = {rule: frozenset(kinds) for rule, kinds in covers.items()}
    meant = {rule: frozenset(kinds) for rule, kinds in (primary or covers).items()}
    names = list(rules) if rules is not None else list(cover)
    names += sorted({p.rule for p in pages} - set(names))
    ids = [i.id for i in incidents]
    if len(set(ids)) != len(ids):
        msg = "incident ids must be unique"
        raise ValueError(msg)

    by_rule = {name: _Acc() for name in names}
    overall = _Acc()
    by_kind: dict[str, _Acc] = {}
    matched: dict[int, tuple[str, ...]] = {}
    first_page: dict[str, Page | None] = {i.id: None for i in incidents}
    false_pages: list[Page] = []
    for n, page in enumerate(pages):
        hits = [i for i in incidents if matches(page, i, cover, grace)]
        acc = by_rule[page.rule]
        acc.pages += 1
        overall.pages += 1
        if not hits:
            false_pages.append(page)
            continue
        acc.true_pages += 1
        overall.true_pages += 1
        matched[n] = tuple(i.id for i in hits)
        for kind in {i.kind for i in hits}:
            k = by_kind.setdefault(kind, _Acc())
            k.pages += 1
            k.true_pages += 1
        for i in hits:
            _first(acc.first, i.id, page.at)
            _first(overall.first, i.id, page.at)
            _first(by_kind.setdefault(i.kind, _Acc()).first, i.id, page.at)
            seen = first_page[i.id]
            if seen is None or page.at < seen.at:
                first_page[i.id] = page

    def quality(name: str, acc: _Acc, subjects: Sequence[Incident]) -> Quality:
        paged = [i for i in subjects if i.id in acc.first]
        big = [i for i in subjects if i.multiplier >= min_multiplier]
        detectable = [i for i in big if _detectable(i, min_power)]
        delays = [(acc.first[i.id] - i.start).total_seconds() for i in paged]
        false = acc.pages - acc.true_pages
        return Quality(
            name=name,
            pages=acc.pages,
            true_pages=acc.true_pages,
            false_pages=false,
            incidents=len(subjects),
            paged=len(paged),
            incidents_big=len(big),
            paged_big=sum(1 for i in big if i.id in acc.first),
            time_to_page=spread(delays),
            false_per_week_per_50=per_week_per_50(false, period, segments),
            incidents_detectable=len(detectable),
            paged_detectable=sum(1 for i in detectable if i.id in acc.first),
            incidents_big_unknown=sum(1 for i in big if i.oracle_power is None),
        )

    rule_figures = tuple(
        quality(name, by_rule[name], [i for i in incidents if i.kind in meant.get(name, ())])
        for name in names
    )
    kinds = sorted({i.kind for i in incidents})
    kind_figures = tuple(
        quality(kind, by_kind.get(kind, _Acc()), [i for i in incidents if i.kind == kind])
        for kind in kinds
    )

    def delays(event_level: bool) -> Spread:
        return spread(
            [
                (overall.first[i.id] - i.start).total_seconds()
                for i in incidents
                if i.event_level == event_level and i.id in overall.first
            ]
        )

    rate = [i for i in incidents if not i.event_level and i.oracle_time is not None]
    both = [i for i in rate if i.id in overall.first]
    return QualityReport(
        rules=rule_figures,
        overall=quality("all", overall, incidents),
        kinds=kind_figures,
        time_to_page_rate=delays(False),
        time_to_page_event=delays(True),
        oracle_time_rate=spread(
            [
                i.oracle_time
                for i in rate
                if i.oracle_time is not None
                and i.multiplier >= min_multiplier
                and _detectable(i, min_power)
            ]
        ),
        oracle_time_rate_paged=spread([i.oracle_time for i in both if i.oracle_time is not None]),
        time_to_page_rate_paged=spread(
            [(overall.first[i.id] - i.start).total_seconds() for i in both]
        ),
        first_page=first_page,
        matched=matched,
        false_pages=tuple(false_pages),
        missed=tuple(i for i in incidents if i.id not in overall.first),
        period=period,
        segments=segments,
        min_multiplier=min_multiplier,
        min_power=min_power,
    )


def _detectable(incident: Incident, min_power: float) -> bool:
    return incident.oracle_power is not None and incident.oracle_power >= min_power


def _first(found: dict[str, datetime], incident_id: str, at: datetime) -> None:
    if incident_id not in found or at < found[incident_id]:
        found[incident_id] = at


def check_targets(report: QualityReport, targets: Targets = Targets()) -> list[TargetResult]:
    """Each target with the measured value and whether it is met (a figure that could not
    be measured, e.g. no incident paged, is not met).
    """
    o = report.overall

    def at_least(value: float | None, target: float) -> bool:
        return value is not None and value >= target

    def at_most(value: float | None, target: float) -> bool:
        return value is not None and value <= target

    m = report.min_multiplier
    return [
        TargetResult("precision", o.precision, f">= {targets.precision:.0%}",
                     at_least(o.precision, targets.precision)),
        TargetResult(f"recall of incidents >= {m:g}x baseline", o.recall_big,
                     f">= {targets.recall_big:.0%}", at_least(o.recall_big, targets.recall_big)),
        TargetResult("false pages per week per 50 segments", o.false_per_week_per_50,
                     f"<= {targets.false_per_week_per_50:g}",
                     at_most(o.false_per_week_per_50, targets.false_per_week_per_50)),
        TargetResult("median time to page, rate incidents (s)", report.time_to_page_rate.median,
                     f"<= {targets.median_rate_s:g}",
                     at_most(report.time_to_page_rate.median, targets.median_rate_s)),
        TargetResult("median time to page, Sev-1 event incidents (s)",
                     report.time_to_page_event.median, f"<= {targets.median_event_s:g}",
                     at_most(report.time_to_page_event.median, targets.median_event_s)),
    ]  # fmt: skip


def detectable_target(report: QualityReport, targets: Targets = Targets()) -> TargetResult:
    """The recall target over the detectable incidents (oracle power >= min_power), to be
    shown beside the recall target over every incident >= min_multiplier (`check_targets`),
    never instead of it. Unknown (not met) when an incident's oracle power is unknown.
    """
    o = report.overall
    value = o.recall_detectable
    return TargetResult(
        f"recall of detectable incidents >= {report.min_multiplier:g}x baseline "
        f"(oracle power >= {report.min_power * 100:g} %)",
        value,
        f">= {targets.recall_detectable:.0%}",
        value is not None and value >= targets.recall_detectable,
    )


__all__ = [
    "Incident",
    "Page",
    "Quality",
    "QualityReport",
    "Spread",
    "TargetResult",
    "Targets",
    "check_targets",
    "contains",
    "default_grace",
    "detectable_target",
    "matches",
    "per_week_per_50",
    "quantile",
    "score",
    "spread",
]
