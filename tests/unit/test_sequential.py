"""The anytime-valid rate test agrees with direct integration and keeps its false-alarm bound.

Closed forms are checked against numerical integration of the mixtures they stand for; the
false-alarm bound against simulated healthy windows (clustered users, many looks per
window), where a fixed-level z-test checked after every batch is shown to fail.
"""

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import integrate

from pipelines.alerting.sequential import (
    Evidence,
    beta_mixture_log_e,
    beta_prior,
    bucket_variance,
    mixture_tau,
    normal_mixture_log_e,
    rate_exceeds,
)

ALPHA = 0.05
BUCKETS = 32
Z_95 = NormalDist().inv_cdf(0.95)  # the naive one-sided test at 5%


def _se(p, size):
    return math.sqrt(p * (1 - p) / size)


def _quad(f, low, high, points=None):
    value, _ = integrate.quad(f, low, high, points=points, epsabs=0, epsrel=1e-11, limit=200)
    return value


def _log_beta_density(p, a, b):
    # Unnormalised: the constants cancel between numerator and prior mass.
    return (a - 1) * math.log(p) + (b - 1) * math.log1p(-p)


def _beta_mixture_by_quadrature(x, n, p0, a, b):
    def weighted(p):
        ratio = x * math.log(p / p0) + (n - x) * math.log1p(-p) - (n - x) * math.log1p(-p0)
        return math.exp(ratio + _log_beta_density(p, a, b))

    points = [x / n] if n and p0 < x / n < 1 else None
    mass = _quad(lambda p: math.exp(_log_beta_density(p, a, b)), p0, 1)
    return math.log(_quad(weighted, p0, 1, points) / mass)


# Closed forms against integration.


@pytest.mark.parametrize(
    ("s", "v", "tau"),
    [
        (0.0, 1.0, 1.0),
        (1.0, 0.0, 1.0),
        (3.0, 4.0, 0.5),
        (-2.0, 5.0, 1.2),
        (10.0, 20.0, 0.3),
        (25.0, 30.0, 0.6),
        (0.5, 0.01, 3.0),
        (-15.0, 40.0, 0.8),
    ],
)
def test_normal_mixture_equals_integral_over_drift(s, v, tau):
    def integrand(lam):
        prior = 2 * math.exp(-((lam / tau) ** 2) / 2) / (math.sqrt(2 * math.pi) * tau)
        return math.exp(lam * s - lam * lam * v / 2) * prior

    a = v + 1 / tau**2
    centre = max(s / a, 0.0)
    value = _quad(integrand, 0, centre + 40 / math.sqrt(a), [centre])
    assert normal_mixture_log_e(s, v, tau) == pytest.approx(math.log(value), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("x", "n", "p0", "a", "b"),
    [
        (0, 10, 0.1, 2.0, 18.0),
        (3, 10, 0.1, 2.0, 18.0),
        (30, 300, 0.02, 0.9, 44.0),
        (1, 1, 0.5, 1.0, 1.0),
        (12, 40, 0.3, 5.0, 11.0),
        (2, 2, 0.01, 0.5, 50.0),
        (0, 0, 0.2, 3.0, 12.0),
    ],
)
def test_beta_mixture_equals_integral_over_rate(x, n, p0, a, b):
    expected = _beta_mixture_by_quadrature(x, n, p0, a, b)
    assert beta_mixture_log_e(x, n, p0, a, b) == pytest.approx(expected, rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("v_opt", [0.5, 6.0, 250.0])
def test_tau_minimises_the_approximate_threshold_at_v_opt(alpha, v_opt):
    # With Phi ~ 1 the test fires when S^2 >= (V + rho) (2 log(1/(2 alpha)) + log((V + rho) / rho)),
    # rho = 1 / tau^2. The chosen tau must minimise that at V = v_opt (grid of rho).
    level = 2 * math.log(1 / (2 * alpha))
    rho = np.exp(np.linspace(-15, 15, 300_001))
    threshold = (v_opt + rho) * (level + np.log((v_opt + rho) / rho))
    best = rho[np.argmin(threshold)]
    assert 1 / mixture_tau(v_opt, alpha) ** 2 == pytest.approx(best, rel=2e-4)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_tau_is_nearly_sharpest_for_the_exact_e_value(alpha):
    # The smallest S that fires at V = v_opt, found by bisection on the e-value itself (Phi
    # included), is within 0.5% of the smallest over a grid of tau.
    v_opt = 30.0

    def smallest_firing_s(tau):
        low, high = 0.0, 1e4
        for _ in range(80):
            mid = (low + high) / 2
            if normal_mixture_log_e(mid, v_opt, tau) >= math.log(1 / alpha):
                high = mid
            else:
                low = mid
        return high

    grid = [smallest_firing_s(t) for t in np.exp(np.linspace(-6, 2, 401)) / math.sqrt(v_opt)]
    chosen = smallest_firing_s(mixture_tau(v_opt, alpha))
    assert chosen <= 1.005 * min(grid)


def test_tau_for_five_percent():
    # r - log(1 + r) = 2 log 10, solved by hand iteration: r = 6.6384 (to 4 decimals).
    assert mixture_tau(10.0, 0.05) ** 2 * 10.0 == pytest.approx(6.6384, abs=1e-4)


def test_beta_prior_has_mean_p0_and_the_drift_spread():
    p0, tau = 0.03, 0.4
    a, b = beta_prior(p0, tau)
    assert a / (a + b) == pytest.approx(p0, rel=1e-12)
    # m = a + b with variance p0 (1 - p0) / (m + 1); m = 1 / (tau^2 p0 (1 - p0)).
    assert a + b == pytest.approx(1 / (tau**2 * p0 * (1 - p0)), rel=1e-12)


def test_rate_exceeds_combines_the_parts_as_documented():
    x, n, p0, v_opt = 7, 60, 0.05, 40 * 0.05 * 0.95
    ev = rate_exceeds(x, n, p0, alpha=ALPHA, v_opt=v_opt)
    tau = mixture_tau(v_opt, ALPHA)
    a, b = 1 / (tau**2 * (1 - p0)), 1 / (tau**2 * p0)
    assert ev.log_e_exact == pytest.approx(_beta_mixture_by_quadrature(x, n, p0, a, b), rel=1e-8)
    assert ev.log_e_normal == pytest.approx(
        normal_mixture_log_e(x - p0 * n, n * p0 * (1 - p0), tau), rel=1e-12
    )
    assert ev.tau == tau


# Variance.


def test_bucket_variance_equals_a_direct_sum():
    x_b = [0, 3, 1, 7, 0, 2]
    n_b = [4, 10, 9, 12, 0, 30]
    p0 = 0.15
    expected = 0.0
    for xb, nb in zip(x_b, n_b, strict=True):
        expected += (xb - p0 * nb) * (xb - p0 * nb)
    assert bucket_variance(x_b, n_b, p0) == pytest.approx(expected, rel=1e-12)
    assert bucket_variance(np.array(x_b), np.array(n_b, dtype=float), p0) == pytest.approx(
        expected, rel=1e-12
    )


def test_variance_is_the_independent_one_plus_the_buckets_excess():
    p0 = 0.1
    # Every bucket exactly at p0: the bucket spread is 0, no excess, the independent one.
    even = rate_exceeds(4, 40, p0, alpha=ALPHA, v_opt=4.0, buckets=([1, 1, 1, 1], [10] * 4))
    assert even.variance_buckets == 0.0 and even.variance_excess == 0.0
    assert even.variance == even.variance_independent == pytest.approx(40 * 0.1 * 0.9)
    # All violations in one bucket (one heavy user): the spread, centred on the window's
    # rate 4 / 40 with the B / (B - 1) factor, exceeds the binomial 40 * 0.1 * 0.9 = 3.6.
    heavy = rate_exceeds(4, 40, p0, alpha=ALPHA, v_opt=4.0, buckets=([4, 0, 0, 0], [10] * 4))
    direct = 4 / 3 * ((4 - 1) ** 2 + 3 * 1.0**2)
    assert heavy.variance_buckets == pytest.approx(direct)
    assert heavy.variance_excess == pytest.approx(direct - 3.6)
    assert heavy.variance == pytest.approx(3.6 + direct - 3.6)
    assert heavy.log_e_normal < even.log_e_normal
    # A rise spread evenly over the buckets (3 in 10 in each, p0 = 0.1) does not inflate it:
    # centred on p0, the same sums would give 4 * (3 - 1)^2 = 16 and cost the alert power.
    spread = rate_exceeds(12, 40, p0, alpha=ALPHA, v_opt=4.0, buckets=([3] * 4, [10] * 4))
    assert spread.variance_buckets == 0.0
    assert spread.variance == pytest.approx(40 * 0.1 * 0.9)


def test_a_rise_over_many_independent_users_keeps_the_independent_variance():
    # 400 events at 30 %, one user each, hashed into 32 buckets: the spread around the
    # window's rate is about the binomial 400 * 0.3 * 0.7 = 84, far above the independent
    # variance at p0 = 10 % (36). Only its excess over the binomial counts, so the test is
    # as quick as for independent events, whatever the buckets' noise.
    rng = np.random.default_rng(3)
    excesses = []
    for _ in range(200):
        bucket = rng.integers(0, BUCKETS, 400)
        hit = rng.random(400) < 0.3
        x_b = np.bincount(bucket, weights=hit, minlength=BUCKETS).astype(int)
        n_b = np.bincount(bucket, minlength=BUCKETS)
        ev = rate_exceeds(int(x_b.sum()), 400, 0.1, alpha=ALPHA, v_opt=36.0, buckets=(x_b, n_b))
        rate = x_b.sum() / 400
        assert ev.variance_excess == pytest.approx(
            max(0.0, ev.variance_buckets - 400 * rate * (1 - rate))
        )
        assert ev.variance == pytest.approx(400 * 0.1 * 0.9 + ev.variance_excess)
        excesses.append(ev.variance_excess)
    # The spread is an unbiased estimate of the binomial variance here: its excess is 0 in
    # about half the windows and small on average.
    assert 0.3 < np.mean(np.asarray(excesses) == 0.0) < 0.7
    assert np.mean(excesses) < 0.25 * 84


# The combined evidence.


def test_fires_only_when_both_e_values_reach_the_threshold():
    # One violation in 20 events at p0 = 0.2%: z ~ 5, and the normal e-value alone clears
    # 1/alpha by far. Exactly, one or more violations in 20 such events happen in 3.9% of
    # windows (1 - 0.998^20), not rare enough for an alarm: the exact e-value stays below.
    ev = rate_exceeds(1, 20, 0.002, alpha=ALPHA, v_opt=0.2)
    assert ev.log_e_normal >= math.log(1 / ALPHA) + 2 > math.log(1 / ALPHA) > ev.log_e_exact
    assert not ev.fired
    assert ev.log_e == ev.log_e_exact
    assert ev.e_value == pytest.approx(math.exp(ev.log_e_exact))
    strong = rate_exceeds(30, 300, 0.02, alpha=ALPHA, v_opt=6.0)
    assert strong.fired
    assert strong.log_e == min(strong.log_e_normal, strong.log_e_exact)
    assert strong.statistic == pytest.approx(30 - 0.02 * 300)


def test_no_events_is_no_evidence():
    ev = rate_exceeds(0, 0, 0.3, alpha=ALPHA, v_opt=5.0, buckets=(np.zeros(4), np.zeros(4)))
    assert isinstance(ev, Evidence)
    assert (ev.e_value, ev.log_e, ev.fired) == (1.0, 0.0, False)


def test_overwhelming_evidence_overflows_to_infinity_not_an_error():
    # 5,000 violations in 10,000 events at p0 = 1%: the log-likelihood ratio at the observed
    # rate is 5000 log 50 + 5000 log(0.5 / 0.99) ~ 16,000, far beyond exp's range.
    ev = rate_exceeds(5000, 10_000, 0.01, alpha=ALPHA, v_opt=10.0)
    assert ev.log_e > math.log(np.finfo(float).max)
    assert ev.e_value == math.inf
    assert ev.fired


def test_evidence_is_frozen():
    ev = rate_exceeds(1, 10, 0.1, alpha=ALPHA, v_opt=1.0)
    with pytest.raises(AttributeError):
        ev.fired = True  # type: ignore[misc]


# Simulated windows.


def _windows(
    rng,
    windows,
    p0,
    *,
    rate_scale=1.0,
    regular_users=150,
    events_per_regular_user=2.0,
    prolific_users=4,
    prolific_events=(40, 120),
    concentration=8.0,
    batches=(10, 20),
):
    """Cumulative per-bucket (x_b, n_b) after each micro-batch, shape (windows, batches, B).

    Each user has their own rate, Beta with mean p0 * rate_scale and the given concentration
    (lower = more spread between users); regular users send Poisson-many events, a few
    prolific users send many. Each event lands in one of the window's batches at random;
    users are hashed to buckets by id modulo B.
    """
    users = regular_users + prolific_users
    volume = np.empty((windows, users), dtype=np.int64)
    volume[:, :regular_users] = rng.poisson(events_per_regular_user, (windows, regular_users))
    low, high = prolific_events
    volume[:, regular_users:] = rng.integers(low, high + 1, (windows, prolific_users))
    mean = p0 * rate_scale
    rates = rng.beta(mean * concentration, (1 - mean) * concentration, (windows, users))
    k = rng.integers(batches[0], batches[1] + 1, windows)
    bucket = rng.integers(0, 2**31, (windows, users)) % BUCKETS
    # One entry per event: its window, user, batch and outcome.
    owner = np.repeat(np.arange(windows * users), volume.ravel())
    window = owner // users
    batch = (rng.random(owner.size) * k[window]).astype(np.int64)
    violation = rng.random(owner.size) < rates.ravel()[owner]
    k_max = batches[1]
    index = (window * k_max + batch) * BUCKETS + bucket.ravel()[owner]
    size = windows * k_max * BUCKETS
    shape = (windows, k_max, BUCKETS)
    n_b = np.bincount(index, minlength=size).reshape(shape).astype(np.float64)
    x_b = np.bincount(index, weights=violation, minlength=size).reshape(shape)
    return np.cumsum(x_b, axis=1), np.cumsum(n_b, axis=1), k


def _first_fire(x_b, n_b, k, p0, v_opt, *, buckets=True):
    """Index of the first batch after which the window fires, -1 if it never does."""
    x, n = x_b.sum(axis=2).tolist(), n_b.sum(axis=2).tolist()
    first = np.full(len(k), -1)
    for w in range(len(k)):
        for j in range(k[w]):
            split = (x_b[w, j], n_b[w, j]) if buckets else None
            if rate_exceeds(x[w][j], n[w][j], p0, alpha=ALPHA, v_opt=v_opt, buckets=split).fired:
                first[w] = j
                break
    return first


def _naive_fires(x_b, n_b, k, p0):
    """Whether a fixed-level one-sided z-test at 5%, checked after every batch, ever fires."""
    x, n = x_b.sum(axis=2), n_b.sum(axis=2)
    z = np.divide(x - p0 * n, np.sqrt(n * p0 * (1 - p0)), out=np.zeros_like(x), where=n > 0)
    looked = np.arange(x.shape[1]) < k[:, None]
    return ((z > Z_95) & looked).any(axis=1)


NULL_P0 = 0.05
NULL_WINDOWS = 2000
# The rule's constant: the variance at the expected window size (150 * 2 + 4 * 80 events).
NULL_V_OPT = 620 * NULL_P0 * (1 - NULL_P0)


@pytest.fixture(scope="module")
def clustered_null():
    return _windows(np.random.default_rng(20240611), NULL_WINDOWS, NULL_P0)


def test_clustered_null_keeps_the_false_alarm_bound_where_peeking_does_not(clustered_null):
    x_b, n_b, k = clustered_null
    tolerance = 3 * _se(ALPHA, NULL_WINDOWS)
    anytime = float(np.mean(_first_fire(x_b, n_b, k, NULL_P0, NULL_V_OPT) >= 0))
    naive = float(np.mean(_naive_fires(x_b, n_b, k, NULL_P0)))
    assert anytime <= ALPHA + tolerance
    # The same windows make the peeking z-test fire far more often than 5%.
    assert naive > 2 * ALPHA
    assert naive > ALPHA + tolerance


def test_clustered_null_needs_the_bucket_variance(clustered_null):
    # Without the bucket sums (events taken as independent), the prolific users' swings
    # break the bound: this is what the bucket variance is for.
    x_b, n_b, k = (a[:1000] for a in clustered_null)
    fired = np.mean(_first_fire(x_b, n_b, k, NULL_P0, NULL_V_OPT, buckets=False) >= 0)
    assert fired > ALPHA + 3 * _se(ALPHA, 1000)


def _exact_fire_probability(p0, batches, per_batch, fires):
    """P(ever fires) for independent Bernoulli(p0) events, looked at after every batch.

    Exact, by propagating the distribution of the running count x over the batches (a
    binomial step each), removing the mass of every (x, n) where ``fires(x, n)`` is true.
    """
    step = np.array(
        [
            math.comb(per_batch, i) * p0**i * (1 - p0) ** (per_batch - i)
            for i in range(per_batch + 1)
        ]
    )
    alive, fired = np.array([1.0]), 0.0
    for j in range(1, batches + 1):
        alive = np.convolve(alive, step)
        hit = np.array([fires(x, j * per_batch) for x in range(alive.size)])
        fired += alive[hit].sum()
        alive[hit] = 0.0
    return fired


@pytest.mark.parametrize(
    ("p0", "batches", "per_batch"),
    [(0.002, 10, 10), (0.01, 10, 5), (0.05, 20, 30), (0.2, 15, 20)],
)
def test_independent_events_exact_false_alarm_probability(p0, batches, per_batch):
    # No simulation noise: the probability that a healthy window ever fires is computed
    # exactly, and must be at most alpha; the peeking z-test's is far above it.
    v_opt = batches * per_batch * p0 * (1 - p0)

    def anytime(x, n):
        return rate_exceeds(x, n, p0, alpha=ALPHA, v_opt=v_opt).fired

    def naive(x, n):
        return (x - p0 * n) / math.sqrt(n * p0 * (1 - p0)) > Z_95

    assert _exact_fire_probability(p0, batches, per_batch, anytime) <= ALPHA
    assert _exact_fire_probability(p0, batches, per_batch, naive) > 2 * ALPHA


def test_small_counts_keep_the_bound_through_the_exact_e_value():
    # Events at p0 = 0.2%, ten batches of ten. One violation early in the window is enough
    # for the normal approximation alone to clear 1/alpha: on its own it would fire in
    # about 10% of healthy windows. The exact e-value keeps the combined test under alpha.
    p0, batches, per_batch = 0.002, 10, 10
    v_opt = batches * per_batch * p0 * (1 - p0)

    def evidence(x, n):
        return rate_exceeds(x, n, p0, alpha=ALPHA, v_opt=v_opt)

    normal_only = _exact_fire_probability(
        p0, batches, per_batch, lambda x, n: evidence(x, n).log_e_normal >= math.log(1 / ALPHA)
    )
    combined = _exact_fire_probability(p0, batches, per_batch, lambda x, n: evidence(x, n).fired)
    assert normal_only > 1.5 * ALPHA
    assert combined <= ALPHA


def test_power_at_five_times_the_reference_rate():
    # True rate 5 x p0, users moderately heterogeneous; ~400 and ~800 events per window in
    # 15 batches; v_opt fixed at the 400-event size as a rule's constant would be.
    p0, windows, batches = 0.02, 300, 15
    v_opt = 400 * p0 * (1 - p0)
    first_batch = {}
    for regular_users in (200, 400):
        rng = np.random.default_rng(regular_users)
        x_b, n_b, k = _windows(
            rng,
            windows,
            p0,
            rate_scale=5.0,
            regular_users=regular_users,
            prolific_users=0,
            concentration=20.0,
            batches=(batches, batches),
        )
        first = _first_fire(x_b, n_b, k, p0, v_opt)
        assert np.mean(first >= 0) >= 0.90
        # Never fired counts as one batch after the last.
        first_batch[regular_users] = np.where(first >= 0, first + 1, batches + 1).mean()
    assert first_batch[400] < first_batch[200]


# Input validation.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": 5, "n": 4}, "exceeds n"),
        ({"x": -1}, "x must be a non-negative integer"),
        ({"n": -3}, "n must be a non-negative integer"),
        ({"x": 1.5}, "x must be a non-negative integer"),
        ({"n": math.nan}, "n must be a non-negative integer"),
        ({"p0": 0.0}, "p0 must be strictly between 0 and 1"),
        ({"p0": 1.0}, "p0 must be strictly between 0 and 1"),
        ({"alpha": 0.0}, "alpha must be strictly between 0 and 0.5"),
        ({"alpha": 1.2}, "alpha must be strictly between 0 and 0.5"),
        ({"alpha": 0.5}, "alpha must be strictly between 0 and 0.5"),
        ({"v_opt": 0.0}, "v_opt must be positive"),
        ({"v_opt": math.inf}, "v_opt must be positive"),
        ({"buckets": ([1, 1], [5, 5])}, "do not match"),
        ({"buckets": ([2, 1], [5, 5, 0])}, "differ in length"),
        ({"buckets": ([4, -1], [8, 2])}, "non-negative integer counts"),
        ({"buckets": ([4, 0], [3, 7])}, "numerator exceeds its denominator"),
        ({"buckets": ([1.5, 1.5], [5, 5])}, "non-negative integer counts"),
        ({"buckets": ([3, 0], [5, math.inf])}, "non-negative integer counts"),
        ({"buckets": ([3, math.nan], [5, 5])}, "non-negative integer counts"),
        ({"buckets": ([[3]], [[10]])}, "non-empty 1-D"),
        ({"buckets": ([], [])}, "non-empty 1-D"),
        ({"buckets": ([3], [10], [1])}, "pair"),
    ],
)
def test_invalid_inputs_are_rejected(kwargs, message):
    args = {"x": 3, "n": 10, "p0": 0.1, "alpha": ALPHA, "v_opt": 1.0, **kwargs}
    x, n, p0 = args.pop("x"), args.pop("n"), args.pop("p0")
    with pytest.raises(ValueError, match=message):
        rate_exceeds(x, n, p0, **args)


def test_bucket_variance_rejects_bad_input():
    with pytest.raises(ValueError, match="p0"):
        bucket_variance([1], [2], 1.5)
    with pytest.raises(ValueError, match="differ in length"):
        bucket_variance([1, 2], [2], 0.1)
