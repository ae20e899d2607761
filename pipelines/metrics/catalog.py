"""The metric catalog: every counter, rate and quantile per window x segment, with a stable id.

A counter is the number of records in a window x segment for which a boolean predicate holds.
Event counters are counted over aggregated events (valid, on time, not duplicates); their
predicate is a Spark SQL expression over the parsed event (the subset that
`pipelines.stream.predicates.SqlPredicate` evaluates on Arrow columns; a test checks it against
Spark), and the same text is what the docs and the warehouse columns show. Telemetry
counters are counted over every record that names a segment, rejected ones included (see
`pipelines.stream.counting`), because a broken event is exactly what they measure.

A rate is numerator / denominator of two counters, the numerator counting a subset of the
denominator's records, so every rate is a binomial proportion with a Wilson interval. The
warehouse stores the counters, never the ratio, so any roll-up (day, week, segment union)
is an exact sum. A quantile is read from a mergeable histogram
(`pipelines.metrics.distributions`).

Adding a counter: add an entry here and a warehouse migration that adds its column
(tests/unit/test_metric_catalog.py checks that they agree), then regenerate docs/metrics.md
with `safewatch metrics docs > docs/metrics.md`. Alert rules, the report and the docs name
metrics by id, so an id never changes meaning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.metrics.buckets import (
    CounterBuckets,
    design_effect,
    rate_buckets,
    robust_interval,
)
from pipelines.metrics.stats import wilson_interval
from schemas import event_schema

# The policy categories of the event contract (`moderation.flagged_categories`), in its order.
POLICY_CATEGORIES: tuple[str, ...] = tuple(
    event_schema("1")["properties"]["moderation"]["properties"]["flagged_categories"]["items"][
        "enum"
    ]
)
_UNFLAGGED = "size(moderation.flagged_categories) = 0"
_BLOCKED_OR_REFUSED = "(moderation.action = 'block' OR refusal.refused)"


@dataclass(frozen=True)
class Counter:
    id: str
    description: str
    predicate: str | None  # Spark SQL boolean over one parsed event; None: telemetry counter


@dataclass(frozen=True)
class Rate:
    """One rate, everything about it in one entry: what it divides, how people name and
    read it, its default target, and where it is shown (the weekly report's KPI table and
    charts, the exporter's headline rates).
    """

    id: str
    numerator: str
    denominator: str
    description: str
    higher_is_worse: bool = True
    name: str = ""  # for people, e.g. 'Harmful output rate' (default: the description)
    explanation: str = ""  # what it counts, in a few words (default: the description)
    default_target: float | None = None  # report.targets' default (None: no target)
    kpi_row: int | None = None  # its row in the report's KPI table, if it has one
    chart: bool = False  # a trend chart in the weekly report
    headline: bool = False  # exported to Prometheus per segment (safewatch_rate)

    def __post_init__(self) -> None:
        plain = self.description.rstrip(".")
        if not self.name:
            object.__setattr__(self, "name", plain)
        if not self.explanation:
            object.__setattr__(self, "explanation", plain)

    @property
    def unit(self) -> str:
        """What the denominator counts, in words: 'events', 'jailbreak attempts'."""
        return DENOMINATOR_UNITS.get(self.denominator, "counted")


@dataclass(frozen=True)
class Quantile:
    id: str
    distribution: str  # id of a numeric distribution in pipelines.metrics.distributions
    q: float
    description: str


@dataclass(frozen=True)
class RateValue:
    """A rate with its 95 % interval; `value` is None when the denominator is 0.

    `design_effect` (at least 1) is how many times the rate's variance exceeds the binomial
    one because its events come in clumps from users (pipelines.metrics.buckets): 1.0 when
    the per-user-bucket sums are unknown or do not match the counts, inf when all of the
    events may be one user's (fewer than two buckets hold events). Tests that compare two
    rates widen each side's variance by it.
    """

    rate_id: str
    numerator: int
    denominator: int
    value: float | None
    lower: float
    upper: float
    design_effect: float = 1.0

    def __post_init__(self) -> None:
        if not self.design_effect >= 1.0:
            msg = f"design_effect must be >= 1, got {self.design_effect}"
            raise ValueError(msg)


EVENT_COUNTERS: tuple[Counter, ...] = (
    Counter("events", "Events aggregated (valid, on time, not duplicates).", "true"),
    Counter(
        "violations",
        "Outputs flagged in at least one policy category (harmful output).",
        "size(moderation.flagged_categories) > 0",
    ),
    *(
        Counter(
            f"violations_{c}",
            f"Outputs flagged in the policy category {c}.",
            f"array_contains(moderation.flagged_categories, '{c}')",
        )
        for c in POLICY_CATEGORIES
    ),
    Counter("unflagged_events", "Outputs flagged in no policy category.", _UNFLAGGED),
    Counter("blocks", "Outputs blocked by moderation.", "moderation.action = 'block'"),
    Counter("refusals", "Requests the model refused, fully or partly.", "refusal.refused"),
    Counter(
        "over_refusals",
        "Refusals of requests whose output no policy category flagged (a proxy for false "
        "positives of the safety behaviour).",
        f"refusal.refused AND {_UNFLAGGED}",
    ),
    Counter(
        "injection_attempts",
        "Requests with a detected prompt-injection attempt.",
        "injection.attempt_detected",
    ),
    Counter(
        "injection_successes",
        "Injection attempts that changed the model's behaviour.",
        "injection.attempt_detected AND injection.succeeded",
    ),
    Counter("jailbreak_attempts", "Jailbreak attempts.", "jailbreak.attempt"),
    Counter(
        "jailbreak_successes",
        "Jailbreak attempts that bypassed the safety controls.",
        "jailbreak.attempt AND jailbreak.succeeded",
    ),
    Counter(
        "tool_call_events", "Events in which the model made tool calls.", "tool_calls.total > 0"
    ),
    Counter(
        "unauthorized_tool_call_events",
        "Events with tool calls of which at least one was executed outside the user's or "
        "tenant's permissions.",
        "tool_calls.total > 0 AND tool_calls.unauthorized > 0",
    ),
    Counter(
        "pii_outputs",
        "Outputs that contained personal data before redaction.",
        "privacy.pii_detected_in_output",
    ),
    Counter("user_reports", "Responses reported by the user.", "feedback.user_report"),
    Counter(
        "blocked_or_refused",
        "Events blocked by moderation or refused by the model (decisions that can be appealed).",
        _BLOCKED_OR_REFUSED,
    ),
    Counter(
        "appeal_overturns",
        "Blocks or refusals overturned on appeal.",
        f"feedback.appeal_overturned AND {_BLOCKED_OR_REFUSED}",
    ),
)

TELEMETRY_COUNTERS: tuple[Counter, ...] = (
    Counter(
        "events_seen",
        "Records that named this segment: aggregated, rejected or late (not duplicates).",
        None,
    ),
    Counter(
        "telemetry_complete",
        "Records among events_seen that carried every required safety field with a valid value.",
        None,
    ),
    Counter(
        "redaction_failures",
        "Events among events_seen whose free text still held personal data (upstream "
        "redaction failed): counted by their structured fields with that text dropped.",
        None,
    ),
)

# Kept under its old name: the streaming job counts these per event.
COUNTERS = EVENT_COUNTERS

# The denominators of the rates, in words.
DENOMINATOR_UNITS = {
    "events": "events",
    "events_seen": "records",
    "unflagged_events": "unflagged outputs",
    "injection_attempts": "injection attempts",
    "jailbreak_attempts": "jailbreak attempts",
    "tool_call_events": "tool-using requests",
    "blocked_or_refused": "blocks and refusals",
}

# Default targets are the example targets of the safety KPI reference; PII leakage and
# redaction failures are "near zero" there, taken as 0.01 %.
RATES: tuple[Rate, ...] = (
    Rate(
        "violation_rate",
        "violations",
        "events",
        "Harmful output rate.",
        name="Harmful output rate",
        explanation="outputs flagged in any policy category",
        default_target=0.001,
        kpi_row=1,
        chart=True,
        headline=True,
    ),
    *(
        Rate(
            f"violation_rate_{c}",
            f"violations_{c}",
            "events",
            f"Harmful output rate in the policy category {c}.",
            name="Harmful output: " + c.replace("_", " "),
        )
        for c in POLICY_CATEGORIES
    ),
    Rate("block_rate", "blocks", "events", "Share of outputs blocked.", name="Blocked outputs"),
    Rate(
        "refusal_rate",
        "refusals",
        "events",
        "Refusal rate.",
        name="Refusal rate",
        explanation="requests the model refused (paired with harmful output)",
        kpi_row=2,
        chart=True,
        headline=True,
    ),
    Rate(
        "over_refusal_rate",
        "over_refusals",
        "unflagged_events",
        "Share of unflagged outputs whose request was refused (false-positive proxy).",
        name="Over-refusal rate (benign requests refused)",
        explanation="refusals of requests nothing flagged: a proxy for false positives",
        default_target=0.05,
        kpi_row=3,
        chart=True,
    ),
    Rate(
        "injection_attempt_rate",
        "injection_attempts",
        "events",
        "Injection attempts per event.",
        name="Prompt-injection attempts",
    ),
    Rate(
        "injection_success_rate",
        "injection_successes",
        "injection_attempts",
        "Share of injection attempts that succeeded.",
        name="Prompt-injection success rate",
        explanation="prompt-injection attempts that changed the model's behaviour",
        default_target=0.01,
        kpi_row=5,
        chart=True,
        headline=True,
    ),
    Rate(
        "successful_injection_rate",
        "injection_successes",
        "events",
        "Successful prompt injections per event: counted against all traffic, so that a few "
        "successes stand out where the attempts are few (the Sev-1 signal).",
        name="Successful prompt injections per event",
    ),
    Rate(
        "jailbreak_attempt_rate",
        "jailbreak_attempts",
        "events",
        "Jailbreak attempts per event.",
        name="Jailbreak attempts",
    ),
    Rate(
        "jailbreak_success_rate",
        "jailbreak_successes",
        "jailbreak_attempts",
        "Share of jailbreak attempts that succeeded.",
        name="Jailbreak success rate",
        explanation="jailbreak attempts that got past the safety controls",
        default_target=0.05,
        kpi_row=4,
        chart=True,
        headline=True,
    ),
    Rate(
        "unauthorized_tool_call_rate",
        "unauthorized_tool_call_events",
        "tool_call_events",
        "Share of tool-using events with an unauthorized tool call executed.",
        name="Unauthorized tool-call rate",
        explanation="tool-using requests with a call outside the user's rights",
        default_target=0.01,
        kpi_row=6,
        chart=True,
    ),
    Rate(
        "pii_output_rate",
        "pii_outputs",
        "events",
        "PII leakage rate.",
        name="PII leakage rate",
        explanation="outputs that contained personal data",
        default_target=0.0001,
        kpi_row=7,
        chart=True,
        headline=True,
    ),
    Rate(
        "user_report_rate", "user_reports", "events", "User report rate.", name="User report rate"
    ),
    Rate(
        "appeal_overturn_rate",
        "appeal_overturns",
        "blocked_or_refused",
        "Share of blocks and refusals overturned on appeal.",
        name="Appeals overturned",
    ),
    Rate(
        "telemetry_completeness",
        "telemetry_complete",
        "events_seen",
        "Share of records with every required safety field (target > 98-99 %).",
        higher_is_worse=False,
        name="Safety telemetry completeness",
        explanation="records carrying every required safety field",
        default_target=0.98,
        kpi_row=9,
        chart=True,
        headline=True,
    ),
    Rate(
        "redaction_failure_rate",
        "redaction_failures",
        "events_seen",
        "Share of records whose text still held personal data.",
        name="Redaction failure rate",
        explanation="records whose text still held personal data upstream",
        default_target=0.0001,
        kpi_row=8,
    ),
)

QUANTILES: tuple[Quantile, ...] = (
    Quantile("latency_p50", "latency_ms", 0.50, "Median end-to-end latency, ms."),
    Quantile("latency_p95", "latency_ms", 0.95, "95th percentile of latency, ms."),
    Quantile("latency_p99", "latency_ms", 0.99, "99th percentile of latency, ms."),
)


def counter_ids() -> tuple[str, ...]:
    """Every counter column of segment_window_agg: event counters, then telemetry counters."""
    return tuple(c.id for c in (*EVENT_COUNTERS, *TELEMETRY_COUNTERS))


def event_counter_ids() -> tuple[str, ...]:
    return tuple(c.id for c in EVENT_COUNTERS)


def telemetry_counter_ids() -> tuple[str, ...]:
    return tuple(c.id for c in TELEMETRY_COUNTERS)


def bucket_counter_ids() -> tuple[str, ...]:
    """The event counters kept per user bucket (pipelines.metrics.buckets), in
    EVENT_COUNTERS order: every numerator or denominator of a rate over aggregated events.
    The telemetry rates (over every record seen, valid or not) are not split by user.
    """
    used = {c for r in RATES for c in (r.numerator, r.denominator)}
    return tuple(c.id for c in EVENT_COUNTERS if c.id in used)


def rate(rate_id: str) -> Rate:
    """The rate with this id; KeyError naming the known ids otherwise."""
    for r in RATES:
        if r.id == rate_id:
            return r
    msg = f"unknown rate {rate_id!r}; known: {[r.id for r in RATES]}"
    raise KeyError(msg)


def rate_value(
    rate_id: str, totals: Mapping[str, int], buckets: CounterBuckets | None = None
) -> RateValue:
    """The rate over `totals` (counter id -> count, e.g. a row or a roll-up), with its 95 %
    interval: cluster-robust when `buckets` (the same rows' per-user-bucket sums,
    pipelines.metrics.buckets) hold the rate's counters, Wilson's otherwise.

    With the robust interval comes the rate's design effect (`design_effect` of the bucket
    sums, at least 1; inf when fewer than two buckets hold events, the same case in which
    the interval is [0, 1]). Without usable sums it is 1.0: the events count as independent.
    """
    r = rate(rate_id)
    num, den = int(totals[r.numerator]), int(totals[r.denominator])
    lo, hi = wilson_interval(num, den)
    deff = 1.0
    if buckets and r.denominator in buckets:
        sums = rate_buckets(buckets, r.numerator, r.denominator)
        if (sums.numerator, sums.denominator) == (num, den):
            lo, hi = robust_interval(sums.numerators, sums.denominators)
            found = design_effect(sums.numerators, sums.denominators)
            # nan (no events) says nothing about users; below 1 is no clumping at all.
            deff = 1.0 if math.isnan(found) else max(1.0, found)
    return RateValue(r.id, num, den, num / den if den else None, lo, hi, deff)
