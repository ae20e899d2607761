"""Drift statistics on binned counts: pure functions, no I/O.

Inputs are count vectors over the same bins (mergeable histograms summed over a window):
``current`` and ``baseline``, equal-length 1-D sequences of non-negative integers. Every
function validates them the same way and raises ``ValueError`` on bad input, whatever the
data would otherwise have produced.

Each formula is written once, over the rows of two (pairs x bins) matrices, so that every
segment of a window is tested in one pass: the functions on one pair of vectors
(``psi``, ``compare_distributions``, ...) are that computation on a single row, and
``compare_distributions_rows`` is the same on many. The tests of a rate against its
baseline, and the false-discovery control across them, are with the metrics
(`pipelines.metrics.rate_tests`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from pipelines.metrics.rate_tests import INSUFFICIENT, OK

_Counts = npt.NDArray[np.float64]


def _valid_counts(arr: _Counts, name: str) -> None:
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.floor(arr)):
        msg = f"{name} must hold non-negative integer counts"
        raise ValueError(msg)


def _counts(values: npt.ArrayLike, name: str) -> _Counts:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        msg = f"{name} must be a non-empty 1-D sequence of counts"
        raise ValueError(msg)
    _valid_counts(arr, name)
    return arr


def _pair(current: npt.ArrayLike, baseline: npt.ArrayLike) -> tuple[_Counts, _Counts]:
    c = _counts(current, "current")
    b = _counts(baseline, "baseline")
    if c.shape != b.shape:
        msg = f"current and baseline need the same bins, got {c.size} and {b.size}"
        raise ValueError(msg)
    return c, b


def _nonempty_pair(current: npt.ArrayLike, baseline: npt.ArrayLike) -> tuple[_Counts, _Counts]:
    """One pair as a 1-row matrix each, for the row-wise formulas."""
    c, b = _pair(current, baseline)
    if c.sum() == 0 or b.sum() == 0:
        msg = "current and baseline must each have a positive total count"
        raise ValueError(msg)
    return c[np.newaxis, :], b[np.newaxis, :]


def _row_pairs(current: npt.ArrayLike, baseline: npt.ArrayLike) -> tuple[_Counts, _Counts]:
    c = np.asarray(current, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    for arr, name in ((c, "current"), (b, "baseline")):
        if arr.ndim != 2 or arr.shape[1] == 0:
            msg = f"{name} must be a 2-D array of counts, one row per pair, at least one bin"
            raise ValueError(msg)
        _valid_counts(arr, name)
    if c.shape != b.shape:
        msg = f"current and baseline need the same shape, got {c.shape} and {b.shape}"
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


def _check_epsilon(epsilon: float) -> None:
    if not epsilon > 0:
        msg = f"epsilon must be positive, got {epsilon}"
        raise ValueError(msg)


# Row-wise formulas. Each takes validated (pairs x bins) float matrices whose rows all have a
# positive total, and returns one value per row.


def _shares(counts: _Counts) -> _Counts:
    return counts / counts.sum(axis=1, keepdims=True)


def _psi_rows(c: _Counts, b: _Counts, epsilon: float) -> _Counts:
    # Not renormalising keeps every non-empty bin's share exactly as observed; the shares
    # then sum to at most 1 + epsilon * (empty bins), negligible next to the empty bin's term.
    p = np.where(c > 0, _shares(c), epsilon)
    q = np.where(b > 0, _shares(b), epsilon)
    return np.sum((p - q) * np.log(p / q), axis=1)


def _js_rows(c: _Counts, b: _Counts) -> _Counts:
    p, q = _shares(c), _shares(b)
    m = (p + q) / 2.0

    def kl_to_m(x: _Counts) -> _Counts:
        # m > 0 wherever x > 0; where x = 0 the ratio is set to 1, so the term is 0 * log 1 = 0
        # (the 0 * log 0 = 0 convention).
        ratio = np.divide(x, m, out=np.ones_like(x), where=x > 0)
        return np.sum(x * np.log(ratio), axis=1)

    divergence = (kl_to_m(p) + kl_to_m(q)) / (2.0 * math.log(2.0))
    # Rounding can push the divergence a hair outside [0, 1]; the distance cannot be.
    return np.minimum(1.0, np.sqrt(np.maximum(0.0, divergence)))


def _chi2_rows(c: _Counts, b: _Counts) -> tuple[_Counts, npt.NDArray[np.int64], _Counts]:
    # Bins empty in both rows are dropped: their terms are left out of the sum and the dof.
    keep = (c + b) > 0
    bins = keep.sum(axis=1)
    column = c + b
    c_n = c.sum(axis=1, keepdims=True)
    b_n = b.sum(axis=1, keepdims=True)
    total = c_n + b_n
    terms = np.zeros_like(c)
    for observed, row_total in ((c, c_n), (b, b_n)):
        expected = row_total * column / total
        terms += np.divide((observed - expected) ** 2, expected, out=np.zeros_like(c), where=keep)
    testable = bins >= 2
    statistic = np.where(testable, terms.sum(axis=1), 0.0)
    dof = np.where(testable, bins - 1, 0).astype(np.int64)
    p_value = np.ones(c.shape[0])
    if testable.any():
        p_value[testable] = stats.chi2.sf(statistic[testable], dof[testable])
    return statistic, dof, p_value


def _cdf_gap(c: _Counts, b: _Counts) -> _Counts:
    # Integer cumulative counts divided by the total, as scipy does, so D agrees to the bit.
    return np.abs(
        np.cumsum(c, axis=1) / c.sum(axis=1, keepdims=True)
        - np.cumsum(b, axis=1) / b.sum(axis=1, keepdims=True)
    )


def _ks_rows(c: _Counts, b: _Counts) -> tuple[_Counts, _Counts]:
    d = np.max(_cdf_gap(c, b), axis=1)
    n, m = c.sum(axis=1), b.sum(axis=1)
    effective_n = n * m / (n + m)
    root = np.sqrt(effective_n)
    p_value = np.clip(stats.kstwobign.sf((root + 0.12 + 0.11 / root) * d), 0.0, 1.0)
    # Half rounds to even, as Python's round(): e = 0.5 (one observation each side) gives 0.
    return d, np.where(np.round(effective_n) < 1, 1.0, p_value)


def _wasserstein_rows(c: _Counts, b: _Counts, points: _Counts) -> _Counts:
    return np.sum(_cdf_gap(c, b)[:, :-1] * np.diff(points), axis=1)


def psi(current: npt.ArrayLike, baseline: npt.ArrayLike, *, epsilon: float = 1e-4) -> float:
    """Population stability index: sum over bins of (c - b) * ln(c / b) on bin proportions.

    A proportion of exactly 0 (in either vector) is replaced by ``epsilon`` in both factors
    of its term, so that an empty bin gives a large but finite value; the proportions are NOT
    renormalised afterwards (they may sum to slightly more than 1). Identical inputs give 0.0.
    Raises ``ValueError`` for invalid counts, differing lengths, a zero total or
    ``epsilon <= 0``.
    """
    _check_epsilon(epsilon)
    c, b = _nonempty_pair(current, baseline)
    return float(_psi_rows(c, b, epsilon)[0])


def js_distance(current: npt.ArrayLike, baseline: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (square root of the JS divergence, base 2), in [0, 1].

    Empty bins are fine (0 * log 0 = 0). Raises ``ValueError`` for invalid counts, differing
    lengths or a zero total.
    """
    c, b = _nonempty_pair(current, baseline)
    return float(_js_rows(c, b)[0])


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
    statistic, dof, p_value = _chi2_rows(c, b)
    return (float(statistic[0]), int(dof[0]), float(p_value[0]))


def doubling_test(current: npt.ArrayLike, baseline: npt.ArrayLike) -> float:
    """p-value that some bin's share of ``current`` is more than twice (``DOUBLING``) its
    share of ``baseline``: the smallest exact one-sided p-value over the bins, times the
    number of bins, at most 1 (see `_doubling_rows`). 1.0 when no bin has events now.
    Raises ``ValueError`` for invalid counts, differing lengths or a zero total.
    """
    c, b = _nonempty_pair(current, baseline)
    return float(_doubling_rows(c, b)[0])


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
    d, p_value = _ks_rows(c, b)
    return (float(d[0]), float(p_value[0]))


def wasserstein_binned(
    current: npt.ArrayLike, baseline: npt.ArrayLike, points: npt.ArrayLike
) -> float:
    """1-Wasserstein (earth mover's) distance with all of bin i's mass at ``points[i]``.

    Equals sum over i of |F_c(i) - F_b(i)| * (points[i+1] - points[i]), in the units of
    ``points`` (strictly increasing, one per bin, e.g. bin midpoints). Raises ``ValueError``
    for invalid counts or points, differing lengths or a zero total.
    """
    c, b = _nonempty_pair(current, baseline)
    pts = _points(points, c.shape[1])
    return float(_wasserstein_rows(c, b, pts)[0])


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
    doubling_p_value: float | None = None  # some bin's share more than doubled (exact)


# The factor a bin's share must exceed for `doubling_p_value`: an incident-sized shift (an
# outcome twice as frequent as usual), not the 20-30 % a benign release brings, which a
# large segment would otherwise show "significant" every window.
DOUBLING = 2.0


def _doubling_rows(c: _Counts, b: _Counts) -> _Counts:
    """Per row: the Bonferroni-adjusted (x bins) smallest one-sided exact p-value, over the
    bins, of "the bin's share now is at most DOUBLING x its share in the baseline".

    Each bin is the conditional test of two Poisson counts (the `rise` of the alert rules,
    pipelines.metrics.stats.rate_ratio_p_value): given x of n now and y of m in the
    baseline, P(X >= x) for X ~ Binomial(x + y, 2n / (2n + m)). Exact for the small counts
    where Pearson's chi-square is not (one error in 46 events of a segment whose history
    has almost none gives a chi-square p-value below 1e-8; here, above 0.1). A bin with no
    events now has p-value 1. Every row must have events on both sides (the callers keep
    the sufficient rows only, or refuse a zero total).
    """
    from scipy.special import betainc

    n = c.sum(axis=1, keepdims=True)
    p0 = np.broadcast_to(DOUBLING * n / (DOUBLING * n + b.sum(axis=1, keepdims=True)), c.shape)
    tested = c > 0
    p = np.ones_like(c)
    p[tested] = betainc(c[tested], b[tested] + 1.0, p0[tested])
    return np.minimum(1.0, p.min(axis=1) * c.shape[1])


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
    status is ``OK`` with PSI, JS distance, chi-square and the doubling test
    (`_doubling_rows`) always; KS only when ``ordered``; Wasserstein only when ``ordered``
    and ``points`` is given. Inputs are validated first in both cases, so bad input raises
    ``ValueError`` regardless of the counts; ``points`` with ``ordered=False`` is rejected
    because distances between unordered categories are meaningless.
    """
    c, b = _pair(current, baseline)
    (result,) = compare_distributions_rows(
        c[np.newaxis, :],
        b[np.newaxis, :],
        ordered=ordered,
        points=points,
        min_count=min_count,
        epsilon=epsilon,
    )
    return result


def compare_distributions_rows(
    current: npt.ArrayLike,
    baseline: npt.ArrayLike,
    *,
    ordered: bool,
    points: npt.ArrayLike | None = None,
    min_count: int = 1,
    epsilon: float = 1e-4,
) -> list[DistributionDrift]:
    """``compare_distributions`` of each row of ``current`` with the same row of ``baseline``.

    ``current`` and ``baseline`` are (pairs x bins) matrices of counts; item i of the result
    is ``compare_distributions(current[i], baseline[i], ...)``, computed for all rows at
    once. Every row is validated, sufficient or not: ``ValueError`` for a matrix that is not
    2-D, differing shapes, invalid counts in any row, bad ``points`` or ``epsilon``.
    """
    c, b = _row_pairs(current, baseline)
    pts = None
    if points is not None:
        if not ordered:
            msg = "points only make sense for ordered bins"
            raise ValueError(msg)
        pts = _points(points, c.shape[1])
    _check_epsilon(epsilon)
    current_n = c.sum(axis=1)
    baseline_n = b.sum(axis=1)
    sufficient = np.minimum(current_n, baseline_n) >= max(min_count, 1)
    cs, bs = c[sufficient], b[sufficient]
    absent = [None] * cs.shape[0]
    chi2_statistic, chi2_dof, chi2_p_value = _chi2_rows(cs, bs)
    columns: list[list[Any]] = [
        _psi_rows(cs, bs, epsilon).tolist(),
        _js_rows(cs, bs).tolist(),
        chi2_statistic.tolist(),
        chi2_dof.tolist(),
        chi2_p_value.tolist(),
    ]
    if ordered:
        ks_statistic, ks_p_value = _ks_rows(cs, bs)
        columns += [ks_statistic.tolist(), ks_p_value.tolist()]
    else:
        columns += [absent, absent]
    columns.append(_wasserstein_rows(cs, bs, pts).tolist() if pts is not None else absent)
    columns.append(_doubling_rows(cs, bs).tolist())
    computed = zip(*columns, strict=True)
    insufficient = (None,) * len(columns)
    return [
        DistributionDrift(
            OK if ok else INSUFFICIENT, cn, bn, *(next(computed) if ok else insufficient)
        )
        for ok, cn, bn in zip(
            sufficient.tolist(),
            current_n.astype(np.int64).tolist(),
            baseline_n.astype(np.int64).tolist(),
            strict=True,
        )
    ]
