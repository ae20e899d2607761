"""Anytime-valid test that a rate is above a reference level, for windows that are still open.

Pure functions, no I/O. The question asked after every micro-batch of a 5-minute window is
"is this segment's rate (violations / events so far) above ``p0``?", where ``p0`` is a
baseline or an absolute limit.

Why not a plain z-test after every batch
    A test at level 5% guarantees 5% false alarms when it is looked at once, at a sample size
    fixed in advance. Looked at after each of 15 batches of a healthy window, and alerting
    the first time it crosses, it fires in several times more healthy windows than that:
    every look is another chance for noise to cross the line (the "peeking" problem). The
    unit tests measure this on simulated windows.

What "anytime-valid" buys
    The test keeps an *e-value* for the window: the wealth of a bet against "the rate is at
    most p0" that starts at 1 and, when the rate really is at most p0, does not grow on
    average, whatever happens. Ville's inequality then says that the chance it *ever* reaches
    ``1 / alpha`` during the window is at most ``alpha``. So the rule can be evaluated after
    every batch, and fire the first time the e-value reaches ``1 / alpha``, at no extra
    false-alarm cost: the false-alarm rate of one segment in one window is at most ``alpha``
    however often it is looked at. (It is per segment and window: many segments over many
    windows still add up their ``alpha``s.) The price is a somewhat later alarm than an
    un-corrected test would give when the rate really is high.

Prolific users (the variance choice)
    Events of one user are not independent: each user has their own rate. When a few users
    produce most of a segment's events, the window's rate moves with those few users' habits,
    far more than a count of independent events would suggest, and a test that assumes
    independence fires on healthy windows. Users are hashed into buckets (32 to 64), so that
    all of a user's events land in one bucket; the spread of the buckets' counts shows how
    much more the window's count swings than independent events at the window's own rate
    would (the *excess*, a cluster-robust variance less the binomial one). The test uses
    the independent-events variance ``n p0 (1 - p0)`` plus that excess, so clustering can
    only make it more cautious, never quicker, and traffic of many users (no excess) is
    tested as independent events, at full speed. A consequence by design: when
    a segment's events come from a handful of users, the test may not fire at all (the
    evidence it can gather is limited to about half the number of non-empty buckets, in log
    units), because a few users cannot show that the segment's rate is high.

Small counts
    The normal approximation behind the first e-value is poor with few events and a small
    ``p0`` (one violation among ten events would look like overwhelming evidence). A second,
    exact e-value for independent Bernoulli(p0) events is computed too, and the test fires
    only when both reach ``1 / alpha``. The minimum of two e-values reaches the threshold
    only if each one does, so the false-alarm bound of whichever is valid for the traffic at
    hand carries over: the exact one with independent events (at any sample size), the
    normal one with clustered users (approximately, for windows with enough events and
    users).

Choosing ``v_opt``
    The caller passes the variance expected at the window's typical size, e.g.
    ``typical_events * p0 * (1 - p0)`` from the baseline. It sets where the test is
    sharpest. It must be fixed before the window's data are seen (a constant of the rule, or
    computed from earlier windows), otherwise the guarantee is lost.

Literature
    - S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021), "Time-uniform, nonparametric,
      nonasymptotic confidence sequences", Annals of Statistics 49(2) (normal mixture,
      choice of the mixture precision, Ville's inequality).
    - I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy, A. Ramdas, "Time-uniform central
      limit theory and asymptotic confidence sequences", arXiv:2103.06476 (validity of the
      normal mixture with an estimated variance, for large samples).
    - R. Johari, P. Koomen, L. Pekelis, D. Walsh (2022), "Always valid inference:
      continuous monitoring of A/B tests", Operations Research 70(3) (the mixture
      sequential probability ratio test).
    - H. Robbins (1970), "Statistical methods related to the law of the iterated logarithm"
      (mixtures of likelihood ratios).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

__all__ = [
    "Evidence",
    "bucket_excess",
    "beta_mixture_log_e",
    "beta_prior",
    "bucket_variance",
    "mixture_tau",
    "normal_mixture_log_e",
    "rate_exceeds",
]


@dataclass(frozen=True)
class Evidence:
    """The outcome of one look at a window.

    ``e_value`` is ``exp(log_e)`` (``inf`` if that overflows), and ``log_e`` is the smaller
    of ``log_e_normal`` and ``log_e_exact``; ``fired`` is ``e_value >= 1 / alpha``.
    ``statistic`` is ``x - p0 * n``; ``variance`` (the one used) is
    ``variance_independent`` (``n p0 (1 - p0)``) plus ``variance_excess``, the between-user
    variance beyond independent events (`bucket_excess`; 0 without bucket sums).
    ``variance_buckets`` is the bucket spread it came from (None when no bucket sums were
    given). ``tau`` is the standard deviation of the mixing prior.
    """

    e_value: float
    log_e: float
    fired: bool
    statistic: float
    variance: float
    variance_independent: float
    variance_buckets: float | None
    log_e_normal: float
    log_e_exact: float
    tau: float
    variance_excess: float = 0.0


def _exp(log_value: float) -> float:
    try:
        return math.exp(log_value)
    except OverflowError:
        return math.inf


def _check_probability(value: float, name: str, upper: float = 1.0) -> float:
    value = float(value)
    if not 0.0 < value < upper:
        msg = f"{name} must be strictly between 0 and {upper:g}, got {value}"
        raise ValueError(msg)
    return value


def _check_count(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or value != math.floor(value):
        msg = f"{name} must be a non-negative integer count, got {value}"
        raise ValueError(msg)
    return value


class _Buckets:
    """Validated bucket sums: the arrays and their totals."""

    __slots__ = ("n", "ns", "x", "xs")

    def __init__(self, x_b: npt.ArrayLike, n_b: npt.ArrayLike) -> None:
        xs = np.asarray(x_b, dtype=np.float64)
        ns = np.asarray(n_b, dtype=np.float64)
        for arr, name in ((xs, "bucket numerators"), (ns, "bucket denominators")):
            if arr.ndim != 1 or arr.size == 0:
                msg = f"{name} must be a non-empty 1-D sequence of counts"
                raise ValueError(msg)
        if xs.shape != ns.shape:
            msg = f"bucket numerators and denominators differ in length: {xs.size} and {ns.size}"
            raise ValueError(msg)
        # This runs after every micro-batch, so the valid case takes few passes: every x_b
        # and n_b - x_b a non-negative integer (NaN fails the comparison), and finite totals
        # (a sum of non-negative numbers is finite only if each one is).
        both = np.concatenate((xs, ns - xs)).reshape(2, -1)
        totals = both.sum(axis=1)
        x, n = float(totals[0]), float(totals[0] + totals[1])
        if not (both.min() >= 0 and (both == np.floor(both)).all() and math.isfinite(n)):
            counts = np.concatenate((xs, ns))
            if np.all(np.isfinite(counts) & (counts >= 0) & (counts == np.floor(counts))):
                msg = "a bucket numerator exceeds its denominator"
            else:
                msg = "bucket numerators and denominators must hold non-negative integer counts"
            raise ValueError(msg)
        self.xs, self.ns, self.x, self.n = xs, ns, x, n

    def variance(self, p0: float) -> float:
        deviations = self.xs - p0 * self.ns
        return float(deviations @ deviations)

    def spread(self) -> float:
        """B / (B - 1) * sum_b (x_b - R n_b)^2 with R = x / n: the variance of x - p0 n
        centred on the window's own rate, so a rise above p0 does not inflate it.
        """
        buckets = len(self.xs)
        if self.n == 0 or buckets < 2:
            return 0.0
        deviations = self.xs - (self.x / self.n) * self.ns
        return float(buckets / (buckets - 1) * (deviations @ deviations))

    def excess(self) -> float:
        """The spread beyond the binomial variance ``n R (1 - R)`` at the sample's rate."""
        if self.n == 0:
            return 0.0
        rate = self.x / self.n
        return max(0.0, self.spread() - self.n * rate * (1.0 - rate))


def bucket_variance(x_b: npt.ArrayLike, n_b: npt.ArrayLike, p0: float) -> float:
    """Cluster-robust variance of ``x - p0 n`` from per-bucket sums: ``sum_b (x_b - p0 n_b)^2``.

    Users are hashed into buckets, so a user's events all fall in one bucket and the buckets
    are independent. Each bucket's deviation ``x_b - p0 n_b`` has mean 0 when the rate is
    ``p0``, so its square is an unbiased estimate of the bucket's variance whatever the
    correlation between events inside it; summing gives the variance of the window's total.
    No ``B / (B - 1)`` small-sample factor is applied: that factor corrects for centring on
    an *estimated* mean, and here the centre ``p0`` is the known value under test. When the
    true rate is above ``p0`` the estimate includes the squared excess too (it is larger,
    which costs some power, never validity); below ``p0`` likewise.
    Raises ``ValueError`` for invalid counts, differing lengths or ``p0`` outside (0, 1).
    """
    p0 = _check_probability(p0, "p0")
    return _Buckets(x_b, n_b).variance(p0)


def bucket_excess(x_b: npt.ArrayLike, n_b: npt.ArrayLike) -> float:
    """How much more a sample's count swings than independent events would, from its user
    buckets: ``max(0, spread - n R (1 - R))`` with the spread ``B / (B - 1) sum_b (x_b -
    R n_b)^2`` and ``R = x / n`` (0 with no events or a single bucket). With independent
    events the spread is about ``n R (1 - R)`` and the excess about 0; a prolific user
    whose rate differs from the rest's makes it large. Raises ``ValueError`` for invalid
    counts or differing lengths.
    """
    return _Buckets(x_b, n_b).excess()


def _optimal_ratio(alpha: float) -> float:
    # Root r > 0 of g(r) = r - log(1 + r) - L, L = 2 log(1 / (2 alpha)) > 0; see mixture_tau.
    # g is increasing and convex on r > 0, so Newton's method started to the right of the
    # root (g(2L + 3) > 0) decreases monotonically onto it.
    level = 2.0 * math.log(1.0 / (2.0 * alpha))
    r = 2.0 * level + 3.0
    for _ in range(200):
        step = (r - math.log1p(r) - level) * (1.0 + r) / r
        r -= step
        if step <= 1e-15 * r:
            break
    return r


@functools.lru_cache(maxsize=256)
def _tau(v_opt: float, alpha: float) -> float:
    return math.sqrt(_optimal_ratio(alpha) / v_opt)


def mixture_tau(v_opt: float, alpha: float) -> float:
    """Prior standard deviation ``tau`` of the drift that makes the test sharpest at ``v_opt``.

    Where the test fires ``S`` is clearly positive and ``Phi(S / sqrt(V + 1/tau^2)) ~ 1``,
    so ``E >= 1/alpha`` reads, with ``rho = 1 / tau^2`` and ``L = 2 log(1 / (2 alpha))``::

        S^2 >= (V + rho) * (L + log((V + rho) / rho)).

    Minimising the right-hand side over ``rho`` at ``V = v_opt`` (the threshold on ``S`` is
    then as low as it can be at the window's typical size) gives, with ``r = v_opt / rho``,
    the condition ``r = L + log(1 + r)``. It is solved exactly here, so::

        tau^2 = r / v_opt,   r - log(1 + r) = 2 log(1 / (2 alpha)).

    One fixed-point step from ``r = L`` gives ``r ~ L + log(1 + L)``, the approximation
    ``rho = v_opt / (2 log(1/alpha) + log(1 + 2 log(1/alpha)))`` used by Howard et al.
    (2021) and Waudby-Smith et al. for the two-sided mixture, here with ``alpha`` replaced
    by ``2 alpha`` because the one-sided (half-normal) mixture is twice the two-sided one
    where it matters. For ``alpha = 0.05``, ``r ~ 6.64``.

    Raises ``ValueError`` for ``v_opt`` not positive and finite or ``alpha`` outside
    (0, 0.5) (a one-sided alarm at a level of one half or more is not a test).
    """
    v_opt = float(v_opt)
    if not (math.isfinite(v_opt) and v_opt > 0):
        msg = f"v_opt must be positive and finite, got {v_opt}"
        raise ValueError(msg)
    alpha = _check_probability(alpha, "alpha", 0.5)
    return _tau(v_opt, alpha)


def normal_mixture_log_e(s: float, v: float, tau: float) -> float:
    """Log of the one-sided normal-mixture e-value for a centred sum ``s`` of variance ``v``.

    For a drift ``lam`` the process ``exp(lam s - lam^2 v / 2)`` is (approximately, for a
    sum of many small independent pieces) a test martingale when the mean is at most 0 and
    ``lam >= 0``. Mixing over ``lam >= 0`` with the half-normal density
    ``2 phi(lam / tau) / tau`` keeps that property and needs no single ``lam``. With
    ``a = v + 1/tau^2``, completing the square
    ``lam s - lam^2 a / 2 = -a (lam - s/a)^2 / 2 + s^2 / (2a)`` gives::

        E = 2 / (tau sqrt(2 pi)) * exp(s^2 / (2a)) * int_0^inf exp(-a (lam - s/a)^2 / 2) dlam
          = 2 / (tau sqrt(2 pi)) * exp(s^2 / (2a)) * sqrt(2 pi / a) * Phi(s / sqrt(a))
          = 2 / sqrt(1 + tau^2 v) * exp(s^2 / (2a)) * Phi(s / sqrt(a)),

    using ``tau sqrt(a) = sqrt(1 + tau^2 v)``. Computed in log space (``log_ndtr``), so a
    very negative ``s`` gives a very negative, finite value rather than ``log(0)``.
    With no data (``s = v = 0``) it is ``log(2 Phi(0)) = 0``.
    """
    a = v + 1.0 / (tau * tau)
    return float(
        math.log(2.0)
        - 0.5 * math.log1p(tau * tau * v)
        + s * s / (2.0 * a)
        + special.log_ndtr(s / math.sqrt(a))
    )


def beta_prior(p0: float, tau: float) -> tuple[float, float]:
    """Parameters ``(a, b)`` of the Beta prior on the rate used by the exact e-value.

    The drift ``lam`` of the normal mixture is, for one Bernoulli event, the change of
    log-odds ``logit(p) - logit(p0)``, so near ``p0`` a prior spread ``tau`` on ``lam`` is a
    spread ``tau p0 (1 - p0)`` on the rate. The Beta with mean ``p0`` and "prior sample
    size" ``m = 1 / (tau^2 p0 (1 - p0))`` has about that spread
    (variance ``p0 (1 - p0) / (m + 1)``), so both e-values bet on the same alternatives:
    ``a = m p0 = 1 / (tau^2 (1 - p0))``, ``b = m (1 - p0) = 1 / (tau^2 p0)``.
    """
    return 1.0 / (tau * tau * (1.0 - p0)), 1.0 / (tau * tau * p0)


def _log_upper_beta(a: float, b: float, p: float) -> float:
    tail = float(special.betaincc(a, b, p))
    return math.log(tail) if tail > 0 else -math.inf


@functools.lru_cache(maxsize=1024)
def _log_prior_mass(a: float, b: float, p0: float) -> float:
    # log of B(a, b) times the prior's mass above p0: the same for every look at a rule.
    return float(special.betaln(a, b)) + _log_upper_beta(a, b, p0)


def beta_mixture_log_e(x: float, n: float, p0: float, a: float, b: float) -> float:
    """Log of the exact mixture e-value for ``x`` successes in ``n`` Bernoulli(p0) events.

    The likelihood ratio of rate ``p`` against ``p0`` is
    ``(p / p0)^x ((1 - p) / (1 - p0))^(n - x)``; for every ``p > p0`` it is a test
    martingale, event by event, when the events are independent with rate at most ``p0``
    (a lower rate makes its expected step below 1). So is its average over a prior on
    ``p``, here the Beta(a, b) restricted to ``(p0, 1)``. The integral is a Beta function::

        E = B(a + x, b + n - x) * Q(a + x, b + n - x; p0)
            / (B(a, b) * Q(a, b; p0) * p0^x * (1 - p0)^(n - x)),

    where ``Q(., .; p0)`` is the regularized upper incomplete Beta function at ``p0`` (the
    mass above ``p0``). Exact at any ``n``, computed in log space; ``-inf`` when the data
    put no representable mass above ``p0`` (far below the reference: no evidence).
    """
    log_post = special.betaln(a + x, b + n - x) + _log_upper_beta(a + x, b + n - x, p0)
    log_prior = _log_prior_mass(a, b, p0)
    log_null = x * math.log(p0) + (n - x) * math.log1p(-p0)
    return float(log_post - log_prior - log_null)


def rate_exceeds(
    x: float,
    n: float,
    p0: float,
    *,
    alpha: float,
    v_opt: float,
    buckets: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    cluster_excess: float | None = None,
) -> Evidence:
    """One look at an open window: is its rate ``x / n`` above ``p0``, anytime-valid?

    ``x`` and ``n`` are the window's running numerator and denominator; ``buckets`` is
    ``(x_b, n_b)``, the same sums split by user bucket (they must add up to ``x`` and ``n``),
    or None when unavailable (then events are taken as independent, and prolific users can
    cause false alarms). ``alpha`` is the bound on the probability that the window ever
    fires while its rate is at most ``p0``; ``v_opt`` is the variance of ``x - p0 n``
    expected at the window's typical size (see ``mixture_tau``), fixed before the window.

    The normal e-value uses ``S = x - p0 n`` and the variance ``n p0 (1 - p0)`` plus the
    buckets' excess (`bucket_excess`: their spread around the window's own rate ``R``
    beyond the binomial ``n R (1 - R)``). Taken around the window's rate and less the
    binomial part, a rise above ``p0`` spread over many users does not inflate it (around
    ``p0`` it would grow with the square of the rise, and the binomial part with the rate,
    and cap the evidence); with clustered users at ``R = p0`` it is the cluster-robust
    variance of ``x - p0 n``, and at ``R < p0`` it is larger than that. The exact e-value
    uses ``x`` and ``n`` with ``beta_prior(p0, tau)``.
    The evidence is the smaller of the two, and fires when it reaches ``1 / alpha``.
    ``n == 0`` gives an e-value of 1, not fired.

    ``cluster_excess`` replaces the buckets' excess when the events tested are part of a
    larger sample whose buckets are known but theirs are not (the latest slices of a
    window, tested with the excess of the whole window so far, `bucket_excess` of its
    bucket sums: all of it is taken as the span's, as a burst of one user inside the span
    would make it). Not with ``buckets``.

    Raises ``ValueError`` for counts that are negative or not integers, ``x > n``, ``p0``
    outside (0, 1), ``alpha`` outside (0, 0.5), ``v_opt`` not positive, or bucket sums of
    the wrong shape or not adding up to ``x`` and ``n``.
    """
    x = _check_count(x, "x")
    n = _check_count(n, "n")
    if x > n:
        msg = f"x ({x:g}) exceeds n ({n:g})"
        raise ValueError(msg)
    p0 = _check_probability(p0, "p0")
    tau = mixture_tau(v_opt, alpha)
    v_buckets: float | None = None
    excess = 0.0
    if cluster_excess is not None:
        if buckets is not None:
            msg = "pass buckets or cluster_excess, not both"
            raise ValueError(msg)
        if not math.isfinite(cluster_excess) or cluster_excess < 0:
            msg = f"cluster_excess must be finite and >= 0, got {cluster_excess!r}"
            raise ValueError(msg)
        excess = float(cluster_excess)
    if buckets is not None:
        if len(buckets) != 2:
            msg = "buckets must be a pair (x_b, n_b)"
            raise ValueError(msg)
        split = _Buckets(*buckets)
        if split.x != x or split.n != n:
            msg = f"bucket sums ({split.x:g}, {split.n:g}) do not match x and n ({x:g}, {n:g})"
            raise ValueError(msg)
        v_buckets = split.spread()
        excess = split.excess()
    s = x - p0 * n
    v_independent = n * p0 * (1.0 - p0)
    variance = v_independent + excess
    if n == 0:
        return Evidence(1.0, 0.0, False, 0.0, 0.0, 0.0, v_buckets, 0.0, 0.0, tau, excess)
    log_normal = normal_mixture_log_e(s, variance, tau)
    a, b = beta_prior(p0, tau)
    log_exact = beta_mixture_log_e(x, n, p0, a, b)
    log_e = min(log_normal, log_exact)
    return Evidence(
        e_value=_exp(log_e),
        log_e=log_e,
        fired=log_e >= -math.log(alpha),
        statistic=s,
        variance=variance,
        variance_independent=v_independent,
        variance_buckets=v_buckets,
        log_e_normal=log_normal,
        log_e_exact=log_exact,
        tau=tau,
        variance_excess=excess,
    )
