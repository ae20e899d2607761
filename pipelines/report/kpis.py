"""A KPI of the week (pure): its status against the target, the volume a clean week needs to
confirm that target, and the week-over-week test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pipelines.metrics.buckets import CounterBuckets
from pipelines.metrics.catalog import RATES, RateValue, rate, rate_value
from pipelines.metrics.rate_tests import OK, two_proportion_test
from pipelines.metrics.stats import wilson_interval
from pipelines.report.model import (
    AT_RISK,
    KPI_ORDER,
    MET,
    MISSED,
    NO_DATA,
    NO_TARGET,
    PAIRED_RATE,
    SIGNIFICANCE,
    UNCONFIRMED,
    Kpi,
    WeekChange,
)
from pipelines.report.wording import kpi_explanation, kpi_name


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


def week_over_week(current: RateValue, previous: RateValue) -> WeekChange:
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
        return WeekChange(None, None, None)
    return WeekChange(test.difference, test.p_value, test.p_value < SIGNIFICANCE)


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
        explanation=kpi_explanation(rate_id),
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
