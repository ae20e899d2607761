"""Tests of a rate against its baseline, and false-discovery control across many: pure
functions, no I/O.

`two_proportion_tests` tests many (current, baseline) pairs in one pass, widening each
side's variance by its design effect (events that come in clumps from users,
`pipelines.metrics.buckets`); `two_proportion_test` is that computation on one pair;
`benjamini_hochberg` turns the p-values of one family of tests into q-values. Used by the
drift step (per window), the significant-changes listing and the weekly report.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

INSUFFICIENT = "insufficient_data"
OK = "ok"

_Counts = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ProportionTest:
    """Two-proportion z test of current vs baseline rate; None fields when insufficient."""

    status: str
    current_successes: int
    current_trials: int
    baseline_successes: int
    baseline_trials: int
    difference: float | None  # p_current - p_baseline
    z: float | None
    p_value: float | None  # two-sided


def two_proportion_test(
    current_successes: int,
    current_trials: int,
    baseline_successes: int,
    baseline_trials: int,
    *,
    min_trials: int = 1,
    current_design_effect: float = 1.0,
    baseline_design_effect: float = 1.0,
) -> ProportionTest:
    """Two-sided pooled-variance z test of p_current = p_baseline.

    Pooled, not unpooled, variance: under the null both rates are equal, and z**2 is then
    exactly Pearson's chi-square on the 2 x 2 table. Status ``INSUFFICIENT`` (difference, z
    and p None) when either trial count is below ``min_trials`` (zero trials is always
    insufficient). When the pooled proportion is 0 or 1 there is no variance and no evidence:
    z = 0.0 and p = 1.0. Counts must be integers (``TypeError`` otherwise); raises
    ``ValueError`` for negative counts or successes > trials.

    ``current_design_effect`` and ``baseline_design_effect`` (each >= 1, may be inf) widen
    each side's variance for events that come in clumps from users, as in
    ``two_proportion_tests``: the pooled variance becomes
    ``p (1 - p) (d1 / n1 + d2 / n2)``. With both 1 this is the plain test.
    """
    # operator.index: accepts numpy integers, refuses 2.5 instead of silently truncating it.
    counts = [
        [operator.index(v)]
        for v in (current_successes, current_trials, baseline_successes, baseline_trials)
    ]
    (result,) = two_proportion_tests(
        *counts,
        min_trials=min_trials,
        current_design_effects=[current_design_effect],
        baseline_design_effects=[baseline_design_effect],
    )
    return result


def _integer_counts(values: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        msg = f"{name} must be a 1-D sequence of counts"
        raise ValueError(msg)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        msg = f"{name} must hold integers, got dtype {arr.dtype}"
        raise TypeError(msg)
    return arr.astype(np.int64)


def _design_effects(values: npt.ArrayLike | None, size: int, side: str) -> _Counts:
    """One design effect per test (all 1 for None); ValueError unless each is >= 1 or inf."""
    if values is None:
        return np.ones(size)
    deff = np.asarray(values, dtype=np.float64).reshape(-1)
    if deff.size != size or np.isnan(deff).any() or (deff < 1.0).any():
        msg = f"need one {side} design effect >= 1 per test"
        raise ValueError(msg)
    return deff


def two_proportion_tests(
    current_successes: npt.ArrayLike,
    current_trials: npt.ArrayLike,
    baseline_successes: npt.ArrayLike,
    baseline_trials: npt.ArrayLike,
    *,
    min_trials: int = 1,
    current_design_effects: npt.ArrayLike | None = None,
    baseline_design_effects: npt.ArrayLike | None = None,
) -> list[ProportionTest]:
    """``two_proportion_test`` on each position of four equal-length integer sequences.

    Item i of the result is ``two_proportion_test(current_successes[i], current_trials[i],
    baseline_successes[i], baseline_trials[i], min_trials=min_trials)``, computed for all
    positions at once. ``TypeError`` for non-integer counts; ``ValueError`` for sequences
    that are not 1-D or differ in length, and for any position with negative counts or
    successes > trials.

    `current_design_effects` and `baseline_design_effects` (one per position, each >= 1,
    may be inf; NaN is an error; None: all 1) widen each side's variance for events that
    cluster by user (pipelines.metrics.buckets.design_effects): with d1 the current side's
    and d2 the baseline's, the pooled variance becomes ``p (1 - p) (d1 / n1 + d2 / n2)``,
    so a change that one prolific user makes, on either side, is no longer "significant".
    With every design effect 1 the test is the plain pooled z test; an infinite one on
    either side gives z = 0, p = 1 (nothing is known about that side's users).
    """
    x1 = _integer_counts(current_successes, "current_successes")
    n1 = _integer_counts(current_trials, "current_trials")
    x2 = _integer_counts(baseline_successes, "baseline_successes")
    n2 = _integer_counts(baseline_trials, "baseline_trials")
    if not x1.size == n1.size == x2.size == n2.size:
        msg = "successes and trials need one value per test on both sides"
        raise ValueError(msg)
    for successes, trials, name in ((x1, n1, "current"), (x2, n2, "baseline")):
        bad = (trials < 0) | (successes < 0) | (successes > trials)
        if bad.any():
            i = int(np.argmax(bad))
            msg = f"{name}: need 0 <= successes <= trials, got {successes[i]}/{trials[i]}"
            raise ValueError(msg)
    current_deff = _design_effects(current_design_effects, x1.size, "current")
    baseline_deff = _design_effects(baseline_design_effects, x1.size, "baseline")
    sufficient = np.minimum(n1, n2) >= max(min_trials, 1)
    s1, t1, s2, t2 = x1[sufficient], n1[sufficient], x2[sufficient], n2[sufficient]
    d1, d2 = current_deff[sufficient], baseline_deff[sufficient]
    difference = s1 / t1 - s2 / t2
    z = np.zeros(difference.size)
    p_value = np.ones(difference.size)
    # A pooled proportion of 0 or 1 has no variance: z = 0 and p = 1 (no evidence); so has
    # a side whose users are unknown (infinite design effect).
    varies = (s1 + s2 > 0) & (s1 + s2 < t1 + t2) & np.isfinite(d1) & np.isfinite(d2)
    pooled = (s1 + s2)[varies] / (t1 + t2)[varies]
    z[varies] = difference[varies] / np.sqrt(
        pooled * (1.0 - pooled) * (d1[varies] / t1[varies] + d2[varies] / t2[varies])
    )
    # 2 * sf(|z|) rather than 2 * (1 - cdf): keeps relative precision for tiny p-values.
    p_value[varies] = np.minimum(1.0, 2.0 * stats.norm.sf(np.abs(z[varies])))
    computed = zip(difference.tolist(), z.tolist(), p_value.tolist(), strict=True)
    return [
        ProportionTest(
            OK if ok else INSUFFICIENT, a, n, b, m, *(next(computed) if ok else (None,) * 3)
        )
        for ok, a, n, b, m in zip(
            sufficient.tolist(), x1.tolist(), n1.tolist(), x2.tolist(), n2.tolist(), strict=True
        )
    ]


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values over the non-None p-values, in input order.

    Step-up: q_(i) = min over j >= i of p_(j) * m / j, capped at 1, with m the number of
    non-None entries (a missing test is not a test). None stays None; empty gives [].
    Raises ``ValueError`` for a p-value outside [0, 1] or NaN.
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not present:
        return out
    ps = np.asarray([p_values[i] for i in present], dtype=np.float64)
    if not np.all((ps >= 0) & (ps <= 1)):
        msg = "p-values must lie in [0, 1]"
        raise ValueError(msg)
    m = ps.size
    order = np.argsort(ps)
    ranked = ps[order] * (m / np.arange(1, m + 1))
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(ranked, 1.0)
    for i, value in zip(present, q, strict=True):
        out[i] = float(value)
    return out
