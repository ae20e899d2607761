"""The oracle detection probability of an incident and the oracle's time to detect it:
what is detectable at all at the false-page budget, whatever the rules.

Pure: counts and durations in, probabilities and times out. The synthetic week
(tests/benchmarks/synthetic_week.py) gives each incident its expected counts; the
alert-quality benchmark puts the oracle's figures on each `Incident`
(tests/benchmarks/alert_scoring.py), whose scoring reports recall over the detectable ones.

Some incidents are too small to be seen at all at the false-page budget: two harmful
outputs in a few minutes where 0.2 are expected are noise to any rule that does not page
hundreds of times a week. So, independently of any rule, each incident gets an
*oracle detection probability*: the chance that the best possible test detects it, a test
that knows the incident's segment, its exact start and end and the exact expected count
without it. That test counts the events of the affected quantity (harmful outputs,
refusals, ...) in the segment over [start, end] and pages when the count reaches a
critical count c:
- the expected count without the incident is `baseline_count`, with it `incident_count`
  (the count is Poisson; the injected events of an event kind are certain, `injected`);
- its false-page budget is the target's (1 false page per week per 50 segments, i.e.
  segments / 50 a week), shared by the incident kinds and spread over every look the test
  could take: one per incident-length stretch of the period and segment. Its level is
  alpha = budget over the period x duration / (period x segments x kinds);
- c is the smallest count with P(Poisson(baseline_count) >= c) <= alpha (1 when
  baseline_count is 0: one event is conclusive);
- the oracle power is P(count >= c) with the incident: P(Poisson(incident_count) >= c),
  or, with `injected` certain events, P(Poisson(incident_count - injected) >= c - injected).
It is an upper bound on what a rule counting the affected quantity can do, and an
optimistic one: a rule does not know when an incident starts and ends (it must look at
every window and every length, which costs more of the budget) nor the exact baseline (it
estimates it). A rule that uses other information than the count (which users the events
come from, a distribution's shape) may do better on some incidents (an abusive user, an
attack from a few users). The scoring counts an incident as *detectable* when it is at
least `min_multiplier` times its baseline and its oracle power is at least `min_power`
(50 %).

The same oracle also bounds how soon an incident can page (`oracle_time`): the earliest
time from its start at which the oracle test over what has arrived so far detects it with
probability `min_power`. The scoring sets it beside the rules' time to page.
"""

from __future__ import annotations

import math
from datetime import timedelta

from scipy import stats

from tests.benchmarks.alert_scoring import PER_SEGMENTS, WEEK, Targets


def oracle_alpha(
    duration: timedelta,
    *,
    period: timedelta,
    segments: int,
    kinds: int,
    budget_per_week: float | None = None,
) -> float:
    """The oracle test's level for an incident lasting `duration`: the false pages allowed
    over `period` (`budget_per_week`, by default the target's 1 per week per 50 segments,
    i.e. segments / 50), shared by `kinds` incident kinds and spread over the
    period / duration x segments disjoint incident-length looks of the period:
    budget over the period x duration / (period x segments x kinds).
    """
    if period <= timedelta(0) or segments <= 0 or kinds <= 0:
        msg = "period, segments and kinds must be positive"
        raise ValueError(msg)
    if duration < timedelta(0):
        msg = "the duration must not be negative"
        raise ValueError(msg)
    if budget_per_week is None:
        budget_per_week = Targets().false_per_week_per_50 * segments / PER_SEGMENTS
    budget = budget_per_week * (period / WEEK)
    return budget * (duration / period) / (segments * kinds)


def critical_count(mean: float, alpha: float) -> int | None:
    """The smallest count c with P(Poisson(mean) >= c) <= alpha: 1 when `mean` is 0 (one
    event is conclusive), 0 when alpha >= 1; None when no count is (alpha 0, mean > 0).
    """
    if mean < 0 or alpha < 0 or math.isnan(mean) or math.isnan(alpha):
        msg = f"the mean and alpha must not be negative, got {mean}, {alpha}"
        raise ValueError(msg)
    if alpha >= 1.0:
        return 0
    if mean == 0.0:
        return 1
    if alpha == 0.0:
        return None

    def tail(c: int) -> float:  # P(Poisson(mean) >= c)
        return float(stats.poisson.sf(c - 1, mean))

    # tail() decreases in c; tail(0) = 1 > alpha. Bracket, then bisect.
    lo, hi = 0, max(1, math.ceil(mean))
    while tail(hi) > alpha:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tail(mid) <= alpha:
            hi = mid
        else:
            lo = mid
    return hi


def oracle_power(
    baseline_count: float,
    incident_count: float,
    duration: timedelta,
    *,
    period: timedelta,
    segments: int,
    kinds: int,
    budget_per_week: float | None = None,
    injected: int = 0,
) -> float:
    """An incident's oracle detection probability (see the module docstring): the power of
    the one-sided Poisson count test over [start, end] with null mean `baseline_count` at
    level `oracle_alpha`, against `incident_count`. `injected`: events of the incident that
    are certain (an event kind's injected events, part of `incident_count`), not Poisson.
    """
    if incident_count < 0 or injected < 0:
        msg = "counts must not be negative"
        raise ValueError(msg)
    alpha = oracle_alpha(
        duration, period=period, segments=segments, kinds=kinds, budget_per_week=budget_per_week
    )
    c = critical_count(baseline_count, alpha)
    if c is None:
        return 0.0
    need = c - injected
    if need <= 0:
        return 1.0
    mean = max(0.0, incident_count - injected)
    if mean == 0.0:
        return 0.0
    return float(stats.poisson.sf(need - 1, mean))


def oracle_time(
    baseline_count: float,
    incident_count: float,
    duration: timedelta,
    *,
    period: timedelta,
    segments: int,
    kinds: int,
    budget_per_week: float | None = None,
    injected: int = 0,
    step: timedelta = timedelta(seconds=30),
    min_power: float = 0.5,
) -> timedelta | None:
    """The oracle's time to detect an incident: the earliest t of ``step, 2 step, ...`` and
    finally `duration` itself at which the oracle test over the incident's first t has power
    >= `min_power`, i.e. detects it by then with at least that probability. The counts are
    taken as arriving evenly: the first t holds the share t / duration of `baseline_count`,
    of the incident's Poisson part (`incident_count` - `injected`) and of the certain
    `injected` events (rounded down: they arrive one by one), and the test's
    level is that of a look of length t (`oracle_alpha`). None when it never does, i.e. when
    `oracle_power` over the whole incident is below `min_power`.

    An optimistic figure, like the oracle power: a rule that does not know the start cannot
    detect an incident sooner than this with the same probability, except by luck.
    """
    if step <= timedelta(0):
        msg = f"the step must be positive, got {step}"
        raise ValueError(msg)
    if duration <= timedelta(0):
        looks = [duration]
    else:
        looks = [step * k for k in range(1, math.ceil(duration / step))] + [duration]
    for t in looks:
        share = t / duration if duration > timedelta(0) else 1.0
        certain = math.floor(injected * share + 1e-9)
        power = oracle_power(
            baseline_count * share,
            max(0.0, incident_count - injected) * share + certain,
            t,
            period=period,
            segments=segments,
            kinds=kinds,
            budget_per_week=budget_per_week,
            injected=certain,
        )
        if power >= min_power:
            return t
    return None


__all__ = [
    "critical_count",
    "oracle_alpha",
    "oracle_power",
    "oracle_time",
]
