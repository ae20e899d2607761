"""Drift statistics on binned counts: pure functions, no I/O.

Inputs are count vectors over the same bins (mergeable histograms summed over a window):
``current`` and ``baseline``, equal-length 1-D sequences of non-negative integers. Every
function validates them the same way and raises ``ValueError`` on bad input, whatever the
data would otherwise have produced.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

INSUFFICIENT = "insufficient_data"
OK = "ok"

_Counts = npt.NDArray[np.float64]


def _counts(values: npt.ArrayLike, name: str) -> _Counts:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        msg = f"{name} must be a non-empty 1-D sequence of counts"
        raise ValueError(msg)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.floor(arr)):
        msg = f"{name} must hold non-negative integer counts"
        raise ValueError(msg)
    return arr


def _pair(current: npt.ArrayLike, baseline: npt.ArrayLike) -> tuple[_Counts, _Counts]:
    c = _counts(current, "current")
    b = _counts(baseline, "baseline")
    if c.shape != b.shape:
        msg = f"current and baseline need the same bins, got {c.size} and {b.size}"
        raise ValueError(msg)
    return c, b


def _nonempty_pair(current: npt.ArrayLike, baseline: npt.ArrayLike) -> tuple[_Counts, _Counts]:
    c, b = _pair(current, baseline)
    if c.sum() == 0 or b.sum() == 0:
        msg = "current and baseline must each have a positive total count"
        raise ValueError(msg)
    return c, b


def _points(points: npt.ArrayLike, size: int) -> _Counts:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 1 or pts.size != size:
        msg = f"points must be a 1-D sequence with one value per bin ({size})"
        raise ValueError(msg)
    if not np.all(np.isfinite(pts)) or np.any(np.diff(pts) <= 0):
        msg = "points must be finite and strictly increasing"
        raise ValueError(msg)
    return pts


def psi(current: npt.ArrayLike, baseline: npt.ArrayLike, *, epsilon: float = 1e-4) -> float:
    """Population stability index: sum over bins of (c - b) * ln(c / b) on bin proportions.

    A proportion of exactly 0 (in either vector) is replaced by ``epsilon`` in both factors
    of its term, so that an empty bin gives a large but finite value; the proportions are NOT
    renormalised afterwards (they may sum to slightly more than 1). Identical inputs give 0.0.
    Raises ``ValueError`` for invalid counts, differing lengths, a zero total or
    ``epsilon <= 0``.
    """
    if not epsilon > 0:
        msg = f"epsilon must be positive, got {epsilon}"
        raise ValueError(msg)
    c, b = _nonempty_pair(current, baseline)
    # Not renormalising keeps every non-empty bin's share exactly as observed; the shares
    # then sum to at most 1 + epsilon * (empty bins), negligible next to the empty bin's term.
    p = np.where(c > 0, c / c.sum(), epsilon)
    q = np.where(b > 0, b / b.sum(), epsilon)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(current: npt.ArrayLike, baseline: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (square root of the JS divergence, base 2), in [0, 1].

    Empty bins are fine (0 * log 0 = 0). Raises ``ValueError`` for invalid counts, differing
    lengths or a zero total.
    """
    c, b = _nonempty_pair(current, baseline)
    p = c / c.sum()
    q = b / b.sum()
    m = (p + q) / 2.0

    def kl_to_m(x: _Counts) -> float:
        # m > 0 wherever x > 0, so only the x = 0 terms need the 0 * log 0 = 0 convention.
        nz = x > 0
        return float(np.sum(x[nz] * np.log(x[nz] / m[nz])))

    divergence = (kl_to_m(p) + kl_to_m(q)) / (2.0 * math.log(2.0))
    # Rounding can push the divergence a hair outside [0, 1]; the distance cannot be.
    return min(1.0, math.sqrt(max(0.0, divergence)))


def chi2_homogeneity(current: npt.ArrayLike, baseline: npt.ArrayLike) -> tuple[float, int, float]:
    """Pearson chi-square test of homogeneity of the 2 x k table [current; baseline].

    No Yates correction (it is only meaningful for 2 x 2 and is conservative). Bins empty in
    both rows carry no information and would give zero expected counts, so they are dropped
    first. Returns ``(statistic, dof, p_value)`` with dof = remaining bins - 1; with fewer
    than 2 remaining bins there is nothing to compare and the result is ``(0.0, 0, 1.0)``
    (no evidence of change). Raises ``ValueError`` for invalid counts, differing lengths or a
    zero total.
    """
    c, b = _nonempty_pair(current, baseline)
    keep = (c + b) > 0
    table = np.vstack([c[keep], b[keep]])
    k = table.shape[1]
    if k < 2:
        return (0.0, 0, 1.0)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = k - 1
    return (statistic, dof, float(stats.chi2.sf(statistic, dof)))


def ks_binned(current: npt.ArrayLike, baseline: npt.ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test on ordered bins; returns ``(D, p_value)``.

    D = max |F_c - F_b| of the cumulative proportions at bin boundaries, which equals
    ``scipy.stats.ks_2samp`` on samples placed at the bin positions (ties included). The
    p-value is the asymptotic Kolmogorov distribution with Stephens' small-sample correction,
    ``kstwobign.sf((sqrt(e) + 0.12 + 0.11 / sqrt(e)) * D)`` with e = n*m/(n+m) and n, m the
    totals. Within 0.035 of scipy's ``ks_2samp(method="asymp")`` p-value once e >= 2, and
    its cost does not depend on the data: scipy's finite-n distribution (``kstwo``) takes
    up to tens of milliseconds for some (n, D), too slow for thousands of segments per
    window. When e rounds to 0 (one observation on each side) the p-value is 1.0, which is
    the exact permutation p-value there. Raises ``ValueError`` for invalid counts, differing
    lengths or a zero total.
    """
    c, b = _nonempty_pair(current, baseline)
    n, m = c.sum(), b.sum()
    # Integer cumulative counts divided by the total, as scipy does, so D agrees to the bit.
    d = float(np.max(np.abs(np.cumsum(c) / n - np.cumsum(b) / m)))
    effective_n = float(n * m / (n + m))
    if round(effective_n) < 1:
        return (d, 1.0)
    root = math.sqrt(effective_n)
    p_value = float(np.clip(stats.kstwobign.sf((root + 0.12 + 0.11 / root) * d), 0.0, 1.0))
    return (d, p_value)


def wasserstein_binned(
    current: npt.ArrayLike, baseline: npt.ArrayLike, points: npt.ArrayLike
) -> float:
    """1-Wasserstein (earth mover's) distance with all of bin i's mass at ``points[i]``.

    Equals sum over i of |F_c(i) - F_b(i)| * (points[i+1] - points[i]), in the units of
    ``points`` (strictly increasing, one per bin, e.g. bin midpoints). Raises ``ValueError``
    for invalid counts or points, differing lengths or a zero total.
    """
    c, b = _nonempty_pair(current, baseline)
    pts = _points(points, c.size)
    gap = np.abs(np.cumsum(c) / c.sum() - np.cumsum(b) / b.sum())
    return float(np.sum(gap[:-1] * np.diff(pts)))


@dataclass(frozen=True)
class DistributionDrift:
    """All drift statistics for one binned distribution; every statistic None if insufficient."""

    status: str
    current_n: int
    baseline_n: int
    psi: float | None
    js_distance: float | None
    chi2_statistic: float | None
    chi2_dof: int | None
    chi2_p_value: float | None
    ks_statistic: float | None  # None for categorical (unordered) bins
    ks_p_value: float | None
    wasserstein: float | None  # None for categorical bins or without points


def compare_distributions(
    current: npt.ArrayLike,
    baseline: npt.ArrayLike,
    *,
    ordered: bool,
    points: npt.ArrayLike | None = None,
    min_count: int = 1,
    epsilon: float = 1e-4,
) -> DistributionDrift:
    """Every applicable drift statistic for ``current`` against ``baseline``.

    Status is ``INSUFFICIENT`` with every statistic None when either total is below
    ``min_count`` (a zero total is always insufficient, whatever ``min_count``). Otherwise
    status is ``OK`` with PSI, JS distance and chi-square always; KS only when ``ordered``;
    Wasserstein only when ``ordered`` and ``points`` is given. Inputs are validated first in
    both cases, so bad input raises ``ValueError`` regardless of the counts; ``points`` with
    ``ordered=False`` is rejected because distances between unordered categories are
    meaningless.
    """
    c, b = _pair(current, baseline)
    if points is not None:
        if not ordered:
            msg = "points only make sense for ordered bins"
            raise ValueError(msg)
        _points(points, c.size)
    if not epsilon > 0:
        msg = f"epsilon must be positive, got {epsilon}"
        raise ValueError(msg)
    current_n, baseline_n = int(c.sum()), int(b.sum())
    if min(current_n, baseline_n) < max(min_count, 1):
        return DistributionDrift(
            status=INSUFFICIENT,
            current_n=current_n,
            baseline_n=baseline_n,
            psi=None,
            js_distance=None,
            chi2_statistic=None,
            chi2_dof=None,
            chi2_p_value=None,
            ks_statistic=None,
            ks_p_value=None,
            wasserstein=None,
        )
    chi2_statistic, chi2_dof, chi2_p_value = chi2_homogeneity(c, b)
    ks_statistic, ks_p_value = ks_binned(c, b) if ordered else (None, None)
    wasserstein = wasserstein_binned(c, b, points) if ordered and points is not None else None
    return DistributionDrift(
        status=OK,
        current_n=current_n,
        baseline_n=baseline_n,
        psi=psi(c, b, epsilon=epsilon),
        js_distance=js_distance(c, b),
        chi2_statistic=chi2_statistic,
        chi2_dof=chi2_dof,
        chi2_p_value=chi2_p_value,
        ks_statistic=ks_statistic,
        ks_p_value=ks_p_value,
        wasserstein=wasserstein,
    )


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
) -> ProportionTest:
    """Two-sided pooled-variance z test of p_current = p_baseline.

    Pooled, not unpooled, variance: under the null both rates are equal, and z**2 is then
    exactly Pearson's chi-square on the 2 x 2 table. Status ``INSUFFICIENT`` (difference, z
    and p None) when either trial count is below ``min_trials`` (zero trials is always
    insufficient). When the pooled proportion is 0 or 1 there is no variance and no evidence:
    z = 0.0 and p = 1.0. Counts must be integers (``TypeError`` otherwise); raises
    ``ValueError`` for negative counts or successes > trials.
    """
    # operator.index: accepts numpy integers, refuses 2.5 instead of silently truncating it.
    x1, n1 = operator.index(current_successes), operator.index(current_trials)
    x2, n2 = operator.index(baseline_successes), operator.index(baseline_trials)
    for successes, trials, name in ((x1, n1, "current"), (x2, n2, "baseline")):
        if trials < 0 or successes < 0 or successes > trials:
            msg = f"{name}: need 0 <= successes <= trials, got {successes}/{trials}"
            raise ValueError(msg)
    counts = {
        "current_successes": x1,
        "current_trials": n1,
        "baseline_successes": x2,
        "baseline_trials": n2,
    }
    if min(n1, n2) < max(min_trials, 1):
        return ProportionTest(status=INSUFFICIENT, difference=None, z=None, p_value=None, **counts)
    difference = x1 / n1 - x2 / n2
    if x1 + x2 in (0, n1 + n2):
        return ProportionTest(status=OK, difference=difference, z=0.0, p_value=1.0, **counts)
    pooled = (x1 + x2) / (n1 + n2)
    z = difference / math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    # 2 * sf(|z|) rather than 2 * (1 - cdf): keeps relative precision for tiny p-values.
    p_value = min(1.0, 2.0 * float(stats.norm.sf(abs(z))))
    return ProportionTest(status=OK, difference=difference, z=z, p_value=p_value, **counts)


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
