"""Cluster-robust rates from per-user-bucket sums: the estimator against independent
computations, a coverage simulation with clustered events, merging, and the user hash."""

import hashlib
import math

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import chisquare

from pipelines.metrics.buckets import (
    BUCKETS,
    BucketSums,
    design_effect,
    ratio_standard_error,
    robust_interval,
    top_bucket_share,
    user_bucket,
    user_buckets,
)
from pipelines.metrics.stats import wilson_interval

Z = 1.959963984540054


def _loop_standard_error(num, den):
    """Delta method over B i.i.d. clusters, written out with loops."""
    b = len(num)
    n_bar = 0.0
    d_bar = 0.0
    for x, y in zip(num, den, strict=True):
        n_bar += x / b
        d_bar += y / b
    r = n_bar / d_bar
    ss = 0.0
    for x, y in zip(num, den, strict=True):
        ss += (x - r * y) ** 2
    return math.sqrt(ss / (b - 1) / (b * d_bar * d_bar))


def _covariance_delta_se(num, den):
    """General delta method: Var(g(N̄, D̄)) = ∇gᵀ Cov(N̄, D̄) ∇g with g = N̄ / D̄."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    k = len(num)
    cov_of_means = np.cov(np.vstack([num, den]), ddof=1) / k
    n_bar, d_bar = num.mean(), den.mean()
    grad = np.array([1.0 / d_bar, -n_bar / d_bar**2])
    return math.sqrt(grad @ cov_of_means @ grad)


def _random_buckets(rng, buckets):
    den = rng.integers(0, 400, size=buckets)
    num = rng.binomial(den, rng.uniform(0.0, 0.3, size=buckets))
    return num, den


# --- the estimator ----------------------------------------------------------------------


@pytest.mark.parametrize("buckets", [2, 3, 32, 64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standard_error_is_the_per_cluster_delta_method(buckets, seed):
    rng = np.random.default_rng(seed)
    num, den = _random_buckets(rng, buckets)
    den[0] = max(den[0], 1)
    den[1] = max(den[1], 1)
    num_l, den_l = num.tolist(), den.tolist()
    se = ratio_standard_error(num_l, den_l)
    assert se == pytest.approx(_loop_standard_error(num_l, den_l), rel=1e-12)
    assert se == pytest.approx(_covariance_delta_se(num_l, den_l), rel=1e-12)
    # numpy arrays and BucketSums tuples give the same answer as lists
    sums = BucketSums(tuple(num_l), tuple(den_l))
    assert ratio_standard_error(sums.numerators, sums.denominators) == se
    assert ratio_standard_error(num, den) == se


def test_one_user_per_bucket_is_the_per_user_delta_method():
    # user i alone in bucket i: with B = number of users the bucket SE *is* the per-user
    # (cluster = user) delta-method SE. With B > n users the extra buckets are empty; they add
    # nothing to the sum of squared residuals, so SE_B^2 * (B - 1) / B = SE_n^2 * (n - 1) / n
    # (both equal sum_i (num_i - R den_i)^2 / D^2), i.e. SE_B = SE_n * sqrt(B (n-1) / (n (B-1))).
    rng = np.random.default_rng(7)
    n = 25
    events = rng.integers(1, 60, size=n)
    flags = rng.binomial(events, rng.beta(0.5, 5.0, size=n))
    per_user_se = _covariance_delta_se(flags, events)

    assert ratio_standard_error(flags, events) == pytest.approx(per_user_se, rel=1e-12)

    for buckets in (32, 64):
        ids = np.arange(n)  # user i -> bucket i
        sums = BucketSums.from_events(ids, flags, events, buckets)
        bucket_se = ratio_standard_error(sums.numerators, sums.denominators)
        assert bucket_se**2 * (buckets - 1) / buckets == pytest.approx(
            per_user_se**2 * (n - 1) / n, rel=1e-12
        )
        scale = math.sqrt(buckets * (n - 1) / (n * (buckets - 1)))
        assert bucket_se == pytest.approx(per_user_se * scale, rel=1e-12)
        assert bucket_se < per_user_se  # empty buckets make B / (B - 1) the smaller factor


# --- coverage with clustered events ------------------------------------------------------

# A window has _USERS users; 10 % are prolific (15 + Poisson(15) events, others 1 + Poisson(2));
# each user's violation rate is drawn from Beta(0.5, 9.5), so the population rate (events
# weighted, counts independent of rates) is 0.5 / 10 = 0.05.
_WINDOWS = 500
_USERS = 6000
_TRUE_RATE = 0.05


def _clustered_windows(seed, windows, users, buckets_list, heterogeneous=True):
    """Per window, bucket sums (num, den) of shape (windows, B) for each B in buckets_list."""
    rng = np.random.default_rng(seed)
    prolific = rng.random((windows, users)) < 0.10
    events = np.where(
        prolific, 15 + rng.poisson(15, (windows, users)), 1 + rng.poisson(2, (windows, users))
    )
    rates = rng.beta(0.5, 9.5, (windows, users)) if heterogeneous else _TRUE_RATE
    flags = rng.binomial(events, rates)
    # a uniform bucket per user stands in for the hash (tested for uniformity below)
    u = rng.random((windows, users))
    out = {}
    for buckets in buckets_list:
        ids = (np.arange(windows)[:, None] * buckets + (u * buckets).astype(np.int64)).ravel()
        size = windows * buckets
        num = np.bincount(ids, weights=flags.ravel(), minlength=size).reshape(windows, buckets)
        den = np.bincount(ids, weights=events.ravel(), minlength=size).reshape(windows, buckets)
        out[buckets] = (num.astype(np.int64), den.astype(np.int64))
    return out


@pytest.fixture(scope="module")
def clustered():
    return _clustered_windows(2024, _WINDOWS, _USERS, (32, 64))


@pytest.mark.parametrize("buckets", [32, 64])
def test_robust_interval_covers_nominally_where_wilson_does_not(clustered, buckets):
    num, den = clustered[buckets]
    robust_hits = 0
    wilson_hits = 0
    for n_b, d_b in zip(num, den, strict=True):
        lo, hi = robust_interval(n_b, d_b)
        robust_hits += lo <= _TRUE_RATE <= hi
        w_lo, w_hi = wilson_interval(int(n_b.sum()), int(d_b.sum()))
        wilson_hits += w_lo <= _TRUE_RATE <= w_hi
    robust, wilson = robust_hits / _WINDOWS, wilson_hits / _WINDOWS
    tolerance = 3 * math.sqrt(0.95 * 0.05 / _WINDOWS)
    assert abs(robust - 0.95) <= tolerance, (robust, wilson)
    assert wilson < 0.90, (robust, wilson)


def test_design_effect_is_large_for_clustered_heterogeneous_users(clustered):
    num, den = clustered[32]
    effects = [design_effect(n_b, d_b) for n_b, d_b in zip(num, den, strict=True)]
    assert np.mean(effects) > 2.0


def test_design_effect_is_one_for_independent_events_even_with_prolific_users():
    # every event has the same probability: the prolific users' events are not correlated
    sims = _clustered_windows(11, 300, 2000, (32,), heterogeneous=False)
    num, den = sims[32]
    effects = [design_effect(n_b, d_b) for n_b, d_b in zip(num, den, strict=True)]
    # one window's estimate has relative sd ~ sqrt(2 / 31); the mean of 300 is ~0.015
    assert np.mean(effects) == pytest.approx(1.0, abs=0.06)


def test_one_prolific_user_dominates():
    # 500 users with one event each (10 flagged) and one user flagged 40 times out of 50
    buckets = 32
    ids = np.array([i % buckets for i in range(500)] + [5])
    flags = np.array([1] * 10 + [0] * 490 + [40])
    events = np.array([1] * 500 + [50])
    sums = BucketSums.from_events(ids, flags, events, buckets)
    num, den = sums.numerators, sums.denominators
    assert (sums.numerator, sums.denominator) == (50, 550)

    deff = design_effect(num, den)
    assert deff > 10
    rate = 50 / 550
    se = ratio_standard_error(num, den)
    assert deff == pytest.approx(se**2 / (rate * (1 - rate) / 550), rel=1e-12)
    lo, hi = robust_interval(num, den)
    # Wilson's interval on the effective sample size 550 / deff, written out.
    n = 550 / deff
    centre = (rate + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(rate * (1 - rate) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), rel=1e-12)
    w_lo, w_hi = wilson_interval(50, 550)
    assert hi - lo > 2.5 * (w_hi - w_lo)
    assert top_bucket_share(num) == pytest.approx(41 / 50)  # bucket 5 also holds one flag


# --- robust_interval against Wilson --------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_robust_interval_is_never_narrower_than_wilson(seed):
    rng = np.random.default_rng(seed)
    num, den = _random_buckets(rng, 32)
    lo, hi = robust_interval(num, den)
    w_lo, w_hi = wilson_interval(int(num.sum()), int(den.sum()))
    assert lo <= w_lo
    assert hi >= w_hi
    rate = num.sum() / den.sum()
    se = ratio_standard_error(num, den)
    # Wilson's interval on the effective sample size n = D / max(1, deff), written out.
    n = min(den.sum(), rate * (1 - rate) / se**2)
    centre = (rate + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(rate * (1 - rate) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    assert lo == pytest.approx(min(w_lo, centre - half), rel=1e-12)
    assert hi == pytest.approx(max(w_hi, centre + half), rel=1e-12)


def test_robust_interval_falls_back_to_wilson_when_buckets_agree():
    # every bucket has the same rate: zero between-bucket variation, SE = 0
    den = [100, 200, 300, 400]
    num = [5, 10, 15, 20]
    assert ratio_standard_error(num, den) == 0.0
    assert robust_interval(num, den) == wilson_interval(50, 1000)
    assert design_effect(num, den) == 0.0


def test_robust_interval_with_another_z():
    num, den = _random_buckets(np.random.default_rng(3), 32)
    narrow = robust_interval(num, den, z=1.0)
    wide = robust_interval(num, den, z=3.0)
    assert wide[0] <= narrow[0] and wide[1] >= narrow[1]
    assert narrow[0] <= wilson_interval(int(num.sum()), int(den.sum()), 1.0)[0]


# --- edge cases ---------------------------------------------------------------------------


def test_zero_denominator():
    zeros = [0] * 32
    assert math.isnan(ratio_standard_error(zeros, zeros))
    assert math.isnan(design_effect(zeros, zeros))
    assert robust_interval(zeros, zeros) == (0.0, 1.0)


def test_fewer_than_two_buckets_with_data():
    num = [0] * 32
    den = [0] * 32
    num[4], den[4] = 3, 10
    assert ratio_standard_error(num, den) == math.inf
    assert design_effect(num, den) == math.inf
    assert robust_interval(num, den) == (0.0, 1.0)
    # one bucket only: same
    assert ratio_standard_error([3], [10]) == math.inf
    # a second bucket with data makes it finite
    den[9] = 10
    assert math.isfinite(ratio_standard_error(num, den))


def test_empty_buckets_count_in_b():
    # the same two non-empty buckets inside B = 2 and B = 32: only B / (B - 1) changes
    num2, den2 = [3, 9], [40, 50]
    num32 = num2 + [0] * 30
    den32 = den2 + [0] * 30
    se2, se32 = ratio_standard_error(num2, den2), ratio_standard_error(num32, den32)
    assert se32**2 == pytest.approx(se2**2 * (32 / 31) / (2 / 1), rel=1e-12)


def test_design_effect_at_rate_zero_or_one():
    assert design_effect([0, 0, 0], [5, 7, 0]) == 1.0
    assert design_effect([5, 7, 0], [5, 7, 0]) == 1.0


def test_top_bucket_share():
    assert top_bucket_share([0, 0, 0, 0]) == 0.0
    assert top_bucket_share([0, 7, 0, 0]) == 1.0
    assert top_bucket_share([1, 1, 1, 1]) == 0.25
    assert top_bucket_share([2, 6, 1, 1]) == 0.6
    assert top_bucket_share(np.array([3.0, 1.0])) == 0.75


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn", [ratio_standard_error, robust_interval, design_effect], ids=lambda f: f.__name__
)
def test_invalid_bucket_arrays(fn):
    with pytest.raises(ValueError, match="differ in length"):
        fn([1, 2], [3, 4, 5])
    with pytest.raises(ValueError, match="non-negative"):
        fn([1, -1], [3, 4])
    with pytest.raises(ValueError, match="non-negative"):
        fn([1, 1], [3, -4])
    with pytest.raises(ValueError, match="exceeds the denominator total"):
        fn([5, 6], [5, 5])
    with pytest.raises(ValueError, match="finite"):
        fn([1, math.nan], [3, 4])
    with pytest.raises(ValueError, match="one-dimensional"):
        fn([[1, 2]], [[3, 4]])
    with pytest.raises(ValueError, match="buckets"):
        fn([], [])


def test_other_invalid_inputs():
    with pytest.raises(ValueError, match="whole counts"):
        robust_interval([0.5, 1.0], [3, 4])
    with pytest.raises(ValueError, match="z must be"):
        robust_interval([1, 1], [3, 4], z=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        top_bucket_share([1, -2])
    with pytest.raises(ValueError, match="buckets"):
        top_bucket_share([])
    with pytest.raises(ValueError, match="differ in length"):
        BucketSums((1, 2), (3,))
    with pytest.raises(ValueError, match="non-negative"):
        BucketSums((1, -2), (3, 4))
    with pytest.raises(ValueError, match="exceeds the denominator total"):
        BucketSums((3, 4), (3, 3))
    with pytest.raises(ValueError, match="integers"):
        BucketSums((1.5, 2), (3, 4))
    with pytest.raises(ValueError, match="differ in length"):
        BucketSums.from_events([0, 1], [1], [1, 1], 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        BucketSums.from_events([0, 4], [1, 0], [1, 1], 4)
    with pytest.raises(ValueError, match="non-negative"):
        BucketSums.from_events([0, 1], [1, -1], [1, 1], 4)
    with pytest.raises(ValueError, match="exceeds the denominator total"):
        BucketSums.from_events([0, 1], [2, 1], [1, 1], 4)
    with pytest.raises(ValueError, match="whole numbers"):
        BucketSums.from_events([0, 1], [0.5, 1], [1, 1], 4)
    with pytest.raises(ValueError, match="cannot merge"):
        BucketSums.empty(4) + BucketSums.empty(8)
    with pytest.raises(ValueError, match="buckets"):
        user_bucket("x", 0)
    with pytest.raises(TypeError, match="str or bytes"):
        user_bucket(42)
    with pytest.raises(TypeError, match="str or bytes"):
        user_buckets(["a", None])


# --- merging ------------------------------------------------------------------------------


def _events(rng, users, count):
    keys = [f"user-{rng.integers(users)}" for _ in range(count)]
    flags = rng.random(count) < 0.1
    return keys, flags, np.ones(count, dtype=np.int64)


def test_merged_sums_are_the_sums_of_the_concatenated_events():
    rng = np.random.default_rng(5)
    # two windows (or segments) sharing some users
    keys_a, flags_a, den_a = _events(rng, 300, 2000)
    keys_b, flags_b, den_b = _events(rng, 300, 1500)
    a = BucketSums.from_events(user_buckets(keys_a), flags_a, den_a)
    b = BucketSums.from_events(user_buckets(keys_b), flags_b, den_b)
    both = BucketSums.from_events(
        user_buckets(keys_a + keys_b),
        np.concatenate([flags_a, flags_b]),
        np.concatenate([den_a, den_b]),
    )
    merged = a + b
    assert merged == both
    assert merged.buckets == BUCKETS
    assert (merged.numerator, merged.denominator) == (
        int(flags_a.sum() + flags_b.sum()),
        3500,
    )
    assert ratio_standard_error(merged.numerators, merged.denominators) == ratio_standard_error(
        both.numerators, both.denominators
    )
    assert b + a == merged
    assert a + BucketSums.empty() == a


def test_from_events_against_a_dictionary():
    rng = np.random.default_rng(6)
    ids = rng.integers(0, 8, size=200)
    num = rng.integers(0, 3, size=200)
    den = num + rng.integers(0, 3, size=200)
    expected_num = [0] * 8
    expected_den = [0] * 8
    for i, x, y in zip(ids.tolist(), num.tolist(), den.tolist(), strict=True):
        expected_num[i] += x
        expected_den[i] += y
    sums = BucketSums.from_events(ids, num, den, 8)
    assert sums.numerators == tuple(expected_num)
    assert sums.denominators == tuple(expected_den)


# --- the user hash -----------------------------------------------------------------------

# blake2b(key, digest_size=8) of a few keys (hex), pinned so that the buckets of stored sums
# never change silently.
_PINNED = {
    "": "e4a6a0577479b2b4",
    "alice": "4deaec0cce54da89",
    "0" * 64: "de4d7977bd8b8493",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855": "0e8cef8f7e3f79f1",
    "ünïcode": "239e96093375f28d",
}


@pytest.mark.parametrize(("key", "digest"), sorted(_PINNED.items()))
def test_user_bucket_is_a_stable_hash(key, digest):
    assert hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest() == digest
    for buckets in (32, 64, 10):
        assert user_bucket(key, buckets) == int(digest, 16) % buckets
        assert user_bucket(key.encode("utf-8"), buckets) == int(digest, 16) % buckets
    assert user_bucket(key) == int(digest, 16) % 32


def test_user_bucket_pinned_values():
    assert [user_bucket(k) for k in sorted(_PINNED)] == [20, 19, 9, 17, 13]
    assert [user_bucket(k, 64) for k in sorted(_PINNED)] == [52, 19, 9, 49, 13]


@pytest.mark.parametrize("buckets", [32, 64])
def test_user_bucket_is_uniform(buckets):
    rng = np.random.default_rng(99)
    keys = [rng.bytes(32).hex() for _ in range(20_000)]
    ids = user_buckets(keys, buckets)
    assert ids.min() >= 0 and ids.max() < buckets
    counts = np.bincount(ids, minlength=buckets)
    assert chisquare(counts).pvalue > 0.001


def test_user_buckets_accepts_lists_numpy_and_arrow():
    keys = [f"u{i}" for i in range(50)]
    expected = [user_bucket(k, 64) for k in keys]
    assert user_buckets(keys, 64).tolist() == expected
    assert user_buckets(np.array(keys), 64).tolist() == expected
    assert user_buckets(pa.array(keys), 64).tolist() == expected
    assert user_buckets(pa.chunked_array([keys[:20], keys[20:]]), 64).tolist() == expected
    assert user_buckets([], 64).tolist() == []
    assert user_buckets([], 64).dtype == np.int64


# --- the stored form (segment_window_agg.bucket_sums) ------------------------------------


def test_stored_sums_round_trip_and_add_like_counters() -> None:
    from pipelines.metrics.buckets import (
        add_counter_buckets,
        decode_counter_buckets,
        encode_counter_buckets,
        rate_buckets,
    )

    rng = np.random.default_rng(5)
    a = {"events": rng.integers(0, 50, 32).tolist(), "violations": [0] * 32}
    b = {"events": rng.integers(0, 50, 32).tolist(), "refusals": rng.integers(0, 3, 32).tolist()}
    stored = decode_counter_buckets(encode_counter_buckets(a))
    # All-zero counters are left out; what is left comes back exactly.
    assert set(stored) == {"events"}
    assert stored["events"].tolist() == a["events"]
    merged = add_counter_buckets(stored, None, b)
    summed = [x + y for x, y in zip(a["events"], b["events"], strict=True)]
    assert merged["events"].tolist() == summed
    assert merged["refusals"].tolist() == b["refusals"]
    sums = rate_buckets(merged, "violations", "events")
    assert sums.numerators == (0,) * 32
    assert list(sums.denominators) == merged["events"].tolist()
    # An empty blob is "no events", not unknown.
    assert decode_counter_buckets(encode_counter_buckets({})) == {}
    assert decode_counter_buckets(None) == {}


@pytest.mark.parametrize(
    "bad",
    [{"events": [1, 2], "violations": [1, 2, 3]}, {"events": [-1] * 32}, {"events": [0.5] * 32}],
)
def test_stored_sums_refuse_ragged_negative_or_fractional_counts(bad) -> None:
    from pipelines.metrics.buckets import encode_counter_buckets

    with pytest.raises(ValueError):
        encode_counter_buckets(bad)
