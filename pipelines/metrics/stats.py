"""Interval estimates for rates."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of successes/trials; (0.0, 1.0) when there are no trials.

    Wilson, not Wald: Wald has zero width at p = 0 and p = 1 and undercovers for the rare
    events that safety rates are made of.
    """
    if trials < 0 or successes < 0 or successes > trials:
        msg = f"need 0 <= successes <= trials, got {successes}/{trials}"
        raise ValueError(msg)
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    z2 = z * z
    denom = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    # The bounds are exactly 0 at p = 0 and 1 at p = 1; rounding would otherwise leave the
    # estimate a hair outside its own interval.
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == trials else min(1.0, centre + half)
    return (lower, upper)


def rate_ratio_p_value(
    numerator: float,
    denominator: float,
    baseline_numerator: int,
    baseline_denominator: int,
    factor: float = 1.0,
) -> float:
    """One-sided p-value of "the current rate is at most `factor` x the baseline rate".

    The conditional test for the ratio of two Poisson rates (Przyborowski & Wilenski
    1940): given x events in n now and y in m in the baseline, under the null x given
    x + y is binomial with p0 = factor n / (factor n + m), and the p-value is
    P(X >= x) = I_p0(x, y + 1) (the regularised incomplete beta function). It is exact for
    small counts, needs no normal approximation, and takes the baseline's own uncertainty
    into account: a baseline of 0 events in a short history says little, and a single
    event now is not significant against it, while 0 in a long one is. For binomial counts
    with a rate that is not small it is conservative (their variance is below Poisson's).

    `numerator` and `denominator` may be fractional: the effective counts of clustered
    events (the counts divided by the rate's design effect). 1.0 when there is nothing to
    test: no current events, no current denominator or no baseline denominator.
    """
    from scipy.special import betainc  # scipy is heavy to import; only rules need this

    x, n, y, m = numerator, denominator, baseline_numerator, baseline_denominator
    if not (factor > 0 and math.isfinite(factor)):
        msg = f"factor must be a positive number, got {factor}"
        raise ValueError(msg)
    if min(x, n, y, m) < 0 or x > n or y > m or not all(map(math.isfinite, (x, n))):
        msg = f"need 0 <= numerator <= denominator, got {x}/{n} and baseline {y}/{m}"
        raise ValueError(msg)
    if x <= 0 or n <= 0 or m <= 0:
        return 1.0
    p0 = factor * n / (factor * n + m)
    return float(betainc(x, y + 1.0, p0))
