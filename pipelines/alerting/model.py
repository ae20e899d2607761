"""The alert rule model: frozen `Rule`s, their conditions, and the vocabularies they use.

A rule is data: what it watches (a rate of the metric catalog, per segment of its `by`
dimensions), when it fires (a `Threshold`, `Change`, `Rise` or `Drift` condition, for how
many windows) and whom it pages (severity, owner, runbook). The meaning of each field is in
docs/alert-rules.md. Rules are read from YAML by `pipelines.alerting.loader` and evaluated
by the pure functions of `pipelines.alerting.evaluate`; their summary and description text
is `pipelines.alerting.templates`. Nothing here reads a file or the clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Literal

from pipelines.metrics.stats import rate_ratio_p_value, wilson_interval

Match = Literal["any", "all"]
Direction = Literal["up", "down", "any"]
Severity = Literal["sev1", "sev2", "sev3", "sev4"]
Evidence = Literal["users", "events"]

MATCHES: tuple[Match, ...] = ("all", "any")
DIRECTIONS: tuple[Direction, ...] = ("up", "down", "any")
SEVERITIES: tuple[Severity, ...] = ("sev1", "sev2", "sev3", "sev4")
EVIDENCE: tuple[Evidence, ...] = ("users", "events")

# Columns of segment_window_drift (fields of pipelines.drift.stats.DistributionDrift).
# Distances and test statistics grow with drift, so a rule fires when one is `above` a
# limit; p-values shrink with it, so a rule fires when one is `below` a limit.
DRIFT_STATISTICS_ABOVE = ("psi", "js_distance", "chi2_statistic", "ks_statistic", "wasserstein")
DRIFT_STATISTICS_BELOW = ("chi2_p_value", "ks_p_value", "doubling_p_value")
DRIFT_STATISTICS = DRIFT_STATISTICS_ABOVE + DRIFT_STATISTICS_BELOW
# Only computed for ordered (numeric) distributions; NULL for categorical ones.
ORDERED_ONLY_STATISTICS = frozenset({"ks_statistic", "ks_p_value", "wasserstein"})
# Statistics bounded by 1; the others (psi, chi2_statistic, wasserstein) are unbounded.
UNIT_STATISTICS = frozenset(
    {"js_distance", "ks_statistic", "chi2_p_value", "ks_p_value", "doubling_p_value"}
)

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
LABEL_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Label names a notifier sets from the rule itself; a rule's `labels` may not redefine them
# (nor the names of its `by` dimensions, which label each alert with its segment).
RESERVED_LABELS = ("alertname", "rule", "metric", "severity", "owner", "runbook", "segment")
# `by: stored` evaluates a rule per stored segment, whatever `stream.dimensions` holds; the
# job binds it (`bind_rules`). Its templates cannot name single dimensions (use {segment}),
# and no extra label may be named like a dimension.
STORED_KEYWORD = "stored"
STORED: tuple[str, ...] = ("<stored>",)

DEFAULT_MIN_EVENTS = 30

# Whether a rule is evaluated early (on the still-open window, after every micro-batch) when
# its YAML has no `early` key: pages (sev1, sev2) should arrive as soon as the evidence is
# conclusive; tickets (sev3, sev4) can wait for the window to close.
EARLY_BY_SEVERITY: Mapping[Severity, bool] = MappingProxyType(
    {"sev1": True, "sev2": True, "sev3": False, "sev4": False}
)
# Bound on the probability that one segment's open window fires early while the segment's
# rate is at or below the rule's reference (pipelines.alerting.sequential.rate_exceeds).
# It holds however often the window is looked at, but per (rule, segment, window): the
# chances add up. One segment sitting right at its reference all day has 288 windows, so at
# most 0.29 chance of an early false page a day at 0.001 (at 0.05 the bound says nothing);
# a rule has tens to hundreds of segments, and there are several early rules. Healthy
# segments sit well below the reference (limits are set at incident-sized levels), where
# the chance is far smaller than the bound, but only a small alpha keeps the sum small.
EARLY_ALPHA = 0.001
# The longest `horizons` a rule may have: each closing window re-reads that many stored
# windows (288 five-minute windows a day).
MAX_HORIZON = timedelta(days=1)


@dataclass(frozen=True)
class Threshold:
    """Fires when the rate's Wilson 95 % lower bound is > `above`, or its upper bound < `below`.

    Exactly one of the two is set. Testing the bound rather than the point estimate means a
    few events with a high rate do not fire: the interval is still wide. `min_events`: the
    threshold also needs at least this many events in the rate's denominator (a volume
    guard of its own, for a rule whose other condition, a `rise`, needs none).
    `until_baseline`: the threshold counts only while the segment's baseline holds fewer
    than this many events (None: always): a limit for new segments, where a `rise` has
    nothing to compare with, that gives way to the rise once the segment has a history
    (a limit near the normal level of some segments would page on their noise).
    """

    above: float | None = None
    below: float | None = None
    min_events: int = 0
    until_baseline: int | None = None

    def applies(self, denominator: int, baseline: tuple[int, int] | None) -> bool:
        """Whether the threshold takes part: enough events, and no history yet when
        `until_baseline` is set.
        """
        if denominator < self.min_events:
            return False
        if self.until_baseline is None:
            return True
        return baseline is None or baseline[1] < self.until_baseline

    def __post_init__(self) -> None:
        if (self.above is None) == (self.below is None):
            msg = "a threshold needs exactly one of above and below"
            raise ValueError(msg)

    def holds(self, lower: float, upper: float) -> bool:
        if self.above is not None:
            return lower > self.above
        assert self.below is not None
        return upper < self.below

    def passed(self, numerator: int, denominator: int) -> bool:
        """Whether the point estimate is past the limit (a shorter horizon of a rule with
        `horizons`: still burning); False with no events.
        """
        if denominator <= 0:
            return False
        value = numerator / denominator
        if self.above is not None:
            return value > self.above
        assert self.below is not None
        return value < self.below


@dataclass(frozen=True)
class Change:
    """Fires on a significant change of the rate against its baseline (a rate-test row).

    The BH q-value is <= `max_q`, the sign of current - baseline agrees with `direction`
    (`any`: either sign, but not 0) and its absolute value is >= `min_difference`.
    """

    max_q: float
    direction: Direction
    min_difference: float = 0.0

    def holds(self, q_value: float | None, difference: float | None) -> bool:
        if q_value is None or difference is None or q_value > self.max_q:
            return False
        if self.direction == "up" and difference <= 0:
            return False
        if self.direction == "down" and difference >= 0:
            return False
        return difference != 0 and abs(difference) >= self.min_difference


@dataclass(frozen=True)
class Rise:
    """Fires when the rate is shown to be more than `factor` times the segment's baseline.

    The p-value of "rate <= factor x baseline" (pipelines.metrics.stats.rate_ratio_p_value:
    the exact conditional test for a ratio of Poisson rates, on the window's counts divided
    by their design effect, against the baseline's counts from the rate test) is at most
    `alpha`. Unlike `change`, which asks whether the rate moved at all, it asks whether it
    moved by an incident-sized factor: a benign shift (a release that refuses 20 % more)
    never fires however much traffic shows it, and a few events in a small segment can
    fire when its baseline says they almost never happen. No baseline: false.
    """

    factor: float
    alpha: float

    def __post_init__(self) -> None:
        if not (self.factor >= 1.0 and math.isfinite(self.factor)):
            msg = f"a rise factor must be a number >= 1, got {self.factor}"
            raise ValueError(msg)
        if not 0.0 < self.alpha <= 0.5:
            msg = f"a rise alpha must be between 0 and 0.5, got {self.alpha}"
            raise ValueError(msg)

    def p_value(
        self,
        numerator: int,
        denominator: int,
        baseline: tuple[int, int] | None,
        design_effect: float = 1.0,
    ) -> float | None:
        """The test's p-value (None without a baseline). `design_effect` >= 1 (inf: the
        events cannot be told apart from one actor's) shrinks the window's counts to their
        effective number.
        """
        if baseline is None or baseline[1] <= 0:
            return None
        if not design_effect >= 1.0:
            msg = f"design_effect must be >= 1, got {design_effect}"
            raise ValueError(msg)
        if math.isinf(design_effect):
            return 1.0
        return rate_ratio_p_value(
            numerator / design_effect,
            denominator / design_effect,
            baseline[0],
            baseline[1],
            self.factor,
        )

    def holds(
        self,
        numerator: int,
        denominator: int,
        baseline: tuple[int, int] | None,
        design_effect: float = 1.0,
    ) -> bool:
        p = self.p_value(numerator, denominator, baseline, design_effect)
        return p is not None and p <= self.alpha

    def reference(self, baseline: tuple[int, int] | None) -> float | None:
        """The rate an open window must be shown to exceed to fire early: `factor` x the
        Wilson 95 % upper bound of the baseline rate (the bound, not the estimate, so that
        a short or empty baseline does not make a single event conclusive). None without a
        baseline.
        """
        if baseline is None or baseline[1] <= 0:
            return None
        return min(1.0, self.factor * wilson_interval(baseline[0], baseline[1])[1])


@dataclass(frozen=True)
class Drift:
    """Fires when a drift statistic of a distribution is > `above` (or a p-value < `below`)."""

    distribution: str
    statistic: str
    above: float | None = None
    below: float | None = None

    def __post_init__(self) -> None:
        if (self.above is None) == (self.below is None):
            msg = "a drift condition needs exactly one of above and below"
            raise ValueError(msg)

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.above is not None:
            return value > self.above
        assert self.below is not None
        return value < self.below


@dataclass(frozen=True)
class Rule:
    """One alert rule; see docs/alert-rules.md for the meaning of each field.

    `for_windows` is the YAML key `for`. `path` and `line` (of its `name` key) say where the
    rule was defined (None and 0 for a rule built in code) and take no part in equality.
    `early` (evaluate the still-open window too, see pipelines.alerting.evaluate
    .evaluate_early) may be left out or given as None: it is then set from the severity
    (`EARLY_BY_SEVERITY`), so after construction it is always a bool. It is the last field
    so that rules built in code with positional arguments keep working.
    """

    name: str
    metric: str
    by: tuple[str, ...]
    severity: Severity
    owner: str
    runbook: str
    summary: str
    threshold: Threshold | None = None
    change: Change | None = None
    drift: Drift | None = None
    match: Match = "all"
    min_events: int = DEFAULT_MIN_EVENTS
    for_windows: int = 1
    keep_firing_for: int = 0
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    path: str | None = field(default=None, compare=False)
    line: int = field(default=0, compare=False)
    early: bool | None = None
    horizons: tuple[timedelta, ...] = ()
    # True: the condition also needs the numerator concentrated in one user bucket (a
    # single actor, pipelines.alerting.evaluate.concentrated); False: it needs it not to
    # be; None: concentration plays no part.
    concentrated: bool | None = None
    # `condition.rise`: the rate shown to be more than `factor` x the segment's baseline.
    rise: Rise | None = None
    # "users": events of the same users count less (the rate of a user population: the
    # cluster-robust interval, the design effect); "events": every event is evidence on its
    # own (an attack, a leak: who sent them does not make them less real).
    evidence: Evidence = "users"

    def __post_init__(self) -> None:
        if (
            self.threshold is None
            and self.change is None
            and self.drift is None
            and self.rise is None
        ):
            msg = f"rule {self.name} needs at least one of threshold, change, drift and rise"
            raise ValueError(msg)
        if self.min_events < 1 or self.for_windows < 1 or self.keep_firing_for < 0:
            msg = f"rule {self.name}: need min_events >= 1, for >= 1, keep_firing_for >= 0"
            raise ValueError(msg)
        if self.horizons:
            horizons = tuple(sorted(set(self.horizons)))
            if horizons[0] <= timedelta(0):
                msg = f"rule {self.name}: horizons must be positive durations"
                raise ValueError(msg)
            if (
                (self.threshold is None and self.rise is None)
                or self.change is not None
                or self.drift is not None
            ):
                msg = (
                    f"rule {self.name}: horizons need a threshold or rise condition, without "
                    "change or drift (rate tests and drift statistics are per window)"
                )
                raise ValueError(msg)
            object.__setattr__(self, "horizons", horizons)
        if self.early is None:
            if self.severity not in EARLY_BY_SEVERITY:
                msg = (
                    f"rule {self.name}: severity {self.severity!r} is not one of "
                    f"{', '.join(SEVERITIES)}, so early has no default: give early=True or False"
                )
                raise ValueError(msg)
            object.__setattr__(self, "early", EARLY_BY_SEVERITY[self.severity])
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))
