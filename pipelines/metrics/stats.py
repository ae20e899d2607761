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
