"""Cluster-robust intervals for rates: per-user-bucket sums and the delta method.

Why this exists. A rate such as violations / events is computed from events, but events are
not independent: they come in clumps from users. One prolific user flagged 40 times in a
window moves a segment's violation rate as much as 40 unrelated users would, yet the
binomial (Wilson) interval counts those 40 events as 40 independent pieces of evidence and
comes out far too narrow. Alerts and reports then call the segment "significantly" worse
when it is really one user.

What the buckets are. Every user key is hashed into one of B buckets (`BUCKETS` = 32 by
default; `user_bucket`), so all the events of one user land in the same bucket. For each
window x segment x bucket the pipeline keeps two sums: the rate's numerator (e.g.
violations) and its denominator (e.g. events). Each bucket is then a random group of users,
and the B buckets are treated as B independent, identically distributed replicates of "a
1/B sample of the user population". How much the bucket ratios disagree with each other
measures how noisy the rate really is, users and all.

Why the interval widens when a few users dominate. If every user contributes a few events,
the buckets agree closely and the interval is about as wide as Wilson's. If one user
contributes a large share of the numerator, the bucket holding that user sticks out and the
between-bucket variation (hence the standard error) grows. `design_effect` reports the
factor by which the variance exceeds the binomial one (about 1 for independent events) and
`top_bucket_share` the share of the numerator that sits in a single bucket (an "is this one
actor?" signal).

Why it is mergeable. The bucket of a user does not depend on the window or the segment, so
the bucket sums of any union of windows and segments are the element-wise sums of their
bucket sums (`BucketSums.__add__`), and the standard error of the union is computed from
those sums: no events, no user ids are needed after aggregation. (A user active in two
windows of a union lands in the same bucket in both, which is exactly what makes the
estimate of the union correct.)

The estimator. With bucket sums num_b, den_b (b = 1..B), totals N = sum(num_b) and
D = sum(den_b), the rate is R = N / D and its delta-method standard error, treating the B
buckets as i.i.d. clusters ("random groups"), is

    SE^2 = B / (B - 1) * sum_b (num_b - R * den_b)^2 / D^2,

which is the same as (1 / (B * Dbar^2)) * (1 / (B - 1)) * sum_b (num_b - R * den_b)^2 with
Dbar = D / B the mean denominator per bucket. Buckets are the clusters: users who share a
bucket are pooled, which is harmless because pooling independent users keeps the buckets
independent.

Caveats an on-call engineer should know.
- The interval `robust_interval` is Wilson's at the effective sample size D / d. The SE
  is itself estimated from B buckets (B - 1 degrees of freedom), so with z = 1.96 the
  coverage of clustered rates is a little below 95 % (about 94 % with 32 buckets). Pass
  the t quantile with B - 1 degrees of freedom as `z` (2.040 for B = 32, 1.998 for
  B = 64) when that matters. The interval never comes out narrower than the Wilson
  interval of the totals.
- With very few users (fewer than B) the estimate is rough; with data in fewer than two
  buckets nothing can be said about between-user variation and the standard error is
  infinite (the interval is [0, 1]).
- Changing B (or the hash) breaks the sums across the change, like re-binning a histogram.

Reference: A. Deng, U. Knoblich and J. Lu, "Applying the Delta Method in Metric Analytics:
A Practical Guide with Novel Ideas", KDD 2018 (arXiv:1803.06336).
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.metrics.stats import Z_95, wilson_interval

BUCKETS = 32
"""Default number of user buckets B.

32 gives the standard error 31 degrees of freedom, enough for a usable interval, while
keeping two small integer arrays per window x segment x rate. 64 buckets make the standard
error's own estimate about 30 % less noisy (relative sd 1 / sqrt(2 (B - 1)): 13 % -> 9 %) at
twice the storage. B must be the same for every set of sums that are ever merged.
"""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def user_bucket(user_key: str | bytes, buckets: int = BUCKETS) -> int:
    """The bucket (0 .. buckets - 1) of a user key: blake2b with an 8-byte digest, modulo B.

    The digest is read as an unsigned big-endian 64-bit integer. The result is the same in
    every process, on every machine and in every Python version (unlike `hash()`, which is
    salted per process). A `str` is hashed as its UTF-8 bytes.

    In the pipeline the user key is the event's `user_id`, which is already a pseudonymous
    HMAC-SHA256 hex string (pipelines.privacy.pseudonym); it is hashed again here so that
    the buckets are uniform whatever the form of the key. 2**64 is a multiple of any
    power-of-two B, so the buckets are exactly uniform for B = 32 or 64 (and within
    B / 2**64 of uniform otherwise).
    """
    _check_buckets(buckets)
    if isinstance(user_key, str):
        data = user_key.encode("utf-8")
    elif isinstance(user_key, bytes | bytearray | memoryview):
        data = bytes(user_key)
    else:
        msg = f"a user key must be str or bytes, got {type(user_key).__name__}"
        raise TypeError(msg)
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def user_buckets(user_keys: Iterable[str | bytes], buckets: int = BUCKETS) -> IntArray:
    """`user_bucket` of every key of a list, a numpy array or a pyarrow array, as int64.

    A convenience over a Python loop (about a microsecond per key), not a compiled kernel.
    Null keys are an error: drop them first (an event without a user has no cluster).
    """
    _check_buckets(buckets)
    to_pylist = getattr(user_keys, "to_pylist", None)  # pyarrow arrays and chunked arrays
    keys: Iterable[str | bytes] = to_pylist() if callable(to_pylist) else user_keys
    out = [user_bucket(key, buckets) for key in keys]
    return np.asarray(out, dtype=np.int64).reshape(len(out))


@dataclass(frozen=True)
class BucketSums:
    """Numerator and denominator sums per user bucket of one rate (one window x segment, or
    any union of them).

    Both tuples have length B and hold non-negative integers; the numerator's total may not
    exceed the denominator's. `a + b` merges two sets of sums with the same B.
    """

    numerators: tuple[int, ...]
    denominators: tuple[int, ...]

    def __post_init__(self) -> None:
        nums = tuple(_as_count(v, "numerators") for v in self.numerators)
        dens = tuple(_as_count(v, "denominators") for v in self.denominators)
        if len(nums) != len(dens):
            msg = f"numerators and denominators differ in length: {len(nums)} != {len(dens)}"
            raise ValueError(msg)
        _check_buckets(len(nums))
        if sum(nums) > sum(dens):
            msg = f"the numerator total exceeds the denominator total: {sum(nums)} > {sum(dens)}"
            raise ValueError(msg)
        object.__setattr__(self, "numerators", nums)
        object.__setattr__(self, "denominators", dens)

    @classmethod
    def of_arrays(cls, numerators: npt.ArrayLike, denominators: npt.ArrayLike) -> BucketSums:
        """From two integer arrays, checked with numpy (far cheaper than element by element
        for the many segments of a window): same length, non-negative, numerator total at
        most the denominator's.
        """
        num = np.asarray(numerators)
        den = np.asarray(denominators)
        if (
            num.ndim != 1
            or num.shape != den.shape
            or num.dtype.kind not in "iu"
            or den.dtype.kind not in "iu"
        ):
            return cls(tuple(np.asarray(num).tolist()), tuple(np.asarray(den).tolist()))
        _check_buckets(len(num))
        if (num < 0).any() or (den < 0).any():
            msg = "numerators and denominators must be non-negative"
            raise ValueError(msg)
        if int(num.sum()) > int(den.sum()):
            msg = f"the numerator total exceeds the denominator total: {num.sum()} > {den.sum()}"
            raise ValueError(msg)
        out = object.__new__(cls)
        object.__setattr__(out, "numerators", tuple(num.tolist()))
        object.__setattr__(out, "denominators", tuple(den.tolist()))
        return out

    @classmethod
    def empty(cls, buckets: int = BUCKETS) -> BucketSums:
        _check_buckets(buckets)
        return cls((0,) * buckets, (0,) * buckets)

    @classmethod
    def from_events(
        cls,
        bucket_ids: npt.ArrayLike,
        numerators: npt.ArrayLike,
        denominators: npt.ArrayLike,
        buckets: int = BUCKETS,
    ) -> BucketSums:
        """Sums per bucket of per-event (or per-user) numerators and denominators.

        `bucket_ids` come from `user_bucket`/`user_buckets`; numerators may be booleans
        (a flag per event) or non-negative integers, denominators non-negative integers
        (usually 1 per event).
        """
        _check_buckets(buckets)
        ids = _int_vector(bucket_ids, "bucket_ids")
        num = _int_vector(numerators, "numerators")
        den = _int_vector(denominators, "denominators")
        if not len(ids) == len(num) == len(den):
            msg = (
                "bucket_ids, numerators and denominators differ in length: "
                f"{len(ids)}, {len(num)}, {len(den)}"
            )
            raise ValueError(msg)
        if len(ids) and (ids.min() < 0 or ids.max() >= buckets):
            msg = f"bucket ids must lie in [0, {buckets})"
            raise ValueError(msg)
        if (num < 0).any() or (den < 0).any():
            msg = "numerators and denominators must be non-negative"
            raise ValueError(msg)
        num_b = np.zeros(buckets, dtype=np.int64)
        den_b = np.zeros(buckets, dtype=np.int64)
        np.add.at(num_b, ids, num)
        np.add.at(den_b, ids, den)
        return cls(tuple(num_b.tolist()), tuple(den_b.tolist()))

    def __add__(self, other: object) -> BucketSums:
        if not isinstance(other, BucketSums):
            return NotImplemented
        if self.buckets != other.buckets:
            msg = f"cannot merge sums over {self.buckets} and {other.buckets} buckets"
            raise ValueError(msg)
        return BucketSums(
            tuple(a + b for a, b in zip(self.numerators, other.numerators, strict=True)),
            tuple(a + b for a, b in zip(self.denominators, other.denominators, strict=True)),
        )

    @property
    def buckets(self) -> int:
        return len(self.numerators)

    @property
    def numerator(self) -> int:
        """The numerator's total over all buckets."""
        return sum(self.numerators)

    @property
    def denominator(self) -> int:
        """The denominator's total over all buckets."""
        return sum(self.denominators)


CounterBuckets = Mapping[str, "Sequence[int] | npt.NDArray[np.int64]"]
"""Per-bucket sums of several counters of one window x segment: counter id -> B sums."""


def encode_counter_buckets(sums: CounterBuckets) -> bytes:
    """The stored form of per-bucket counter sums (segment_window_agg.bucket_sums):
    zlib-compressed JSON ``{"buckets": B, "sums": {counter: [B ints]}}``, counters whose
    sums are all 0 left out. (A NULL in the table means "not kept": rows counted before
    migration 10.)

    Raises ValueError when the counters do not all have the same number of buckets or hold
    negative or non-integer sums.
    """
    kept: dict[str, list[int]] = {}
    width: int | None = None
    for counter, values in sorted(sums.items()):
        row = [_as_count(v, counter) for v in (np.asarray(values).tolist())]
        if width is None:
            width = len(row)
            _check_buckets(width)
        elif len(row) != width:
            msg = f"counter {counter!r} has {len(row)} buckets, others {width}"
            raise ValueError(msg)
        if any(row):
            kept[counter] = row
    text = json.dumps({"buckets": width or BUCKETS, "sums": kept}, separators=(",", ":"))
    return zlib.compress(text.encode("ascii"), 6)


def decode_counter_buckets(blob: bytes | None) -> dict[str, IntArray]:
    """The sums `encode_counter_buckets` stored: counter id -> int64 array of B sums
    (counters absent from the blob are all 0; {} for None).
    """
    if blob is None:
        return {}
    found = json.loads(zlib.decompress(bytes(blob)).decode("ascii"))
    width = int(found["buckets"])
    out = {k: np.asarray(v, dtype=np.int64) for k, v in found["sums"].items()}
    if any(len(v) != width for v in out.values()):
        msg = f"stored bucket sums do not all have {width} buckets"
        raise ValueError(msg)
    return out


def read_counter_buckets(blob: bytes | None) -> dict[str, IntArray] | None:
    """`decode_counter_buckets` for the readers of the warehouse: None (unknown, so the
    rate falls back to Wilson's interval) for a NULL or for a blob that is not a valid
    stored form, which must not stop the alert rules or the report.
    """
    if blob is None:
        return None
    try:
        found = decode_counter_buckets(blob)
    except (ValueError, TypeError, KeyError, AttributeError, zlib.error):
        return None
    if any(v.ndim != 1 or (v < 0).any() for v in found.values()):
        return None
    return found


def add_counter_buckets(*parts: CounterBuckets | None) -> dict[str, IntArray]:
    """Element-wise sum of per-bucket counter sums (None and missing counters count as 0)."""
    out: dict[str, IntArray] = {}
    for part in parts:
        if not part:
            continue
        for counter, values in part.items():
            arr = np.asarray(values, dtype=np.int64)
            found = out.get(counter)
            if found is None:
                out[counter] = arr.copy()
            elif len(found) != len(arr):
                msg = f"cannot add sums over {len(found)} and {len(arr)} buckets ({counter})"
                raise ValueError(msg)
            else:
                found += arr
    return out


def rate_buckets(sums: CounterBuckets, numerator: str, denominator: str) -> BucketSums:
    """The `BucketSums` of one rate from per-bucket counter sums (a counter absent from
    `sums` is 0 in every bucket; B is that of the counters present, else `BUCKETS`).
    """
    widths = {len(v) for v in sums.values()}
    if len(widths) > 1:
        msg = f"the counters' sums have different numbers of buckets: {sorted(widths)}"
        raise ValueError(msg)
    width = widths.pop() if widths else BUCKETS

    def of(counter: str) -> tuple[int, ...]:
        found = sums.get(counter)
        return (0,) * width if found is None else tuple(np.asarray(found, np.int64).tolist())

    return BucketSums(of(numerator), of(denominator))


def ratio_standard_error(num_b: npt.ArrayLike, den_b: npt.ArrayLike) -> float:
    """Delta-method standard error of R = sum(num_b) / sum(den_b), buckets as clusters.

    SE^2 = B / (B - 1) * sum_b (num_b - R * den_b)^2 / D^2 with D = sum(den_b), i.e.
    (1 / (B * Dbar^2)) * (1 / (B - 1)) * sum_b (num_b - R * den_b)^2.

    Edge cases:
    - zero total denominator: the rate is undefined and the result is nan (not an error: an
      empty window x segment is normal);
    - fewer than two buckets with a positive denominator: inf. The estimator measures the
      disagreement between buckets and needs at least two with data; with one the formula
      would give 0 (the single bucket agrees with itself), claiming certainty from what may
      be a single user;
    - empty buckets (0 / 0) are kept and count in B. The B buckets are a fixed partition
      of the user population and a bucket that drew no active user is one of the B
      replicates, as likely as any other outcome; its residual num_b - R * den_b is 0, so
      it adds nothing to the sum of squares but it does count in B / (B - 1). Dropping
      empty buckets would make B depend on the data and bias the estimate.

    Raises ValueError for arrays of different lengths, no buckets, negative or non-finite
    values, or a numerator total above the denominator total.
    """
    num, den = _bucket_vectors(num_b, den_b)
    return _standard_error(num, den)


def robust_interval(
    num_b: npt.ArrayLike, den_b: npt.ArrayLike, z: float = Z_95
) -> tuple[float, float]:
    """Cluster-robust interval of the rate: Wilson's interval at the effective sample size.

    The design effect d = max(1, SE^2 / (R (1 - R) / D)) says how many events count as one
    independent event; the interval is Wilson's for the rate R on D / d events (Kish's
    effective sample size). With independent events (d = 1) it is exactly the Wilson
    interval of the totals, so small counts keep Wilson's good coverage; clustering only
    widens it. (A plain R +- z * SE would be narrower than Wilson on the low side for small
    counts even without any clustering.)

    (0.0, 1.0) when the total denominator is 0 (as `wilson_interval`) or when fewer than
    two buckets hold data (infinite SE). The totals must be whole numbers (counts), as the
    Wilson interval needs; same validation as `ratio_standard_error` otherwise.
    """
    if not (math.isfinite(z) and z > 0):
        msg = f"z must be a positive number, got {z}"
        raise ValueError(msg)
    num, den = _bucket_vectors(num_b, den_b)
    total_num, total_den = float(num.sum()), float(den.sum())
    if not (total_num.is_integer() and total_den.is_integer()):
        msg = f"the totals must be whole counts, got {total_num}/{total_den}"
        raise ValueError(msg)
    wilson = wilson_interval(int(total_num), int(total_den), z)
    if total_den == 0:
        return wilson
    se = _standard_error(num, den)
    if not math.isfinite(se):
        return (0.0, 1.0)
    rate = total_num / total_den
    binomial = rate * (1.0 - rate) / total_den
    if binomial == 0 or se * se <= binomial:
        return wilson
    n = total_den * binomial / (se * se)  # the effective sample size D / d
    z2 = z * z
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (min(wilson[0], max(0.0, centre - half)), max(wilson[1], min(1.0, centre + half)))


def design_effect(num_b: npt.ArrayLike, den_b: npt.ArrayLike) -> float:
    """Robust variance over binomial variance: SE^2 / (R * (1 - R) / D).

    About 1 when events are independent (whatever the number of events per user), larger
    when users differ in their rates and some users contribute many events: the interval is
    sqrt(design effect) times wider than a binomial one. The "effective number of
    independent events" is D / design effect.

    nan when the total denominator is 0; inf when fewer than two buckets hold data. When
    R is 0 or 1 the binomial variance is 0: the result is 1.0 if the robust variance is 0
    too (nothing varies) and inf otherwise.
    """
    num, den = _bucket_vectors(num_b, den_b)
    total_den = float(den.sum())
    if total_den == 0:
        return math.nan
    se = _standard_error(num, den)
    rate = float(num.sum()) / total_den
    binomial = rate * (1.0 - rate) / total_den
    robust = se * se
    if binomial == 0:
        return 1.0 if robust == 0 else math.inf
    return robust / binomial


def design_effects(num_b: npt.ArrayLike, den_b: npt.ArrayLike) -> FloatArray:
    """`design_effect` of each row of two (n, B) arrays at once, floored at 1: how many
    times the variance of each rate exceeds the binomial one because its events come from
    users (1 when they behave as independent events or the rate is 0 or 1; inf when fewer
    than two buckets hold events; 1 for a row without events).
    """
    num = np.asarray(num_b, dtype=np.float64)
    den = np.asarray(den_b, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 2:
        msg = f"need two (n, B) arrays of the same shape, got {num.shape} and {den.shape}"
        raise ValueError(msg)
    buckets = num.shape[1]
    total_num, total_den = num.sum(axis=1), den.sum(axis=1)
    out = np.ones(num.shape[0])
    has = total_den > 0
    rate = np.divide(total_num, total_den, out=np.zeros_like(total_num), where=has)
    residual = num - rate[:, None] * den
    robust = (
        np.divide(
            buckets / (buckets - 1) * np.einsum("ij,ij->i", residual, residual),
            total_den**2,
            out=np.zeros_like(total_num),
            where=has,
        )
        if buckets > 1
        else np.full(num.shape[0], np.inf)
    )
    binomial = np.divide(rate * (1 - rate), total_den, out=np.zeros_like(total_num), where=has)
    varies = has & (binomial > 0)
    out[varies] = np.maximum(1.0, robust[varies] / binomial[varies])
    few = has & (np.count_nonzero(den > 0, axis=1) < 2) & (total_num > 0) & (total_num < total_den)
    out[few] = np.inf
    return out


def top_bucket_share(num_b: npt.ArrayLike) -> float:
    """Share of the numerator in its largest bucket: 1 / B when spread evenly, 1.0 when all
    of it sits in one bucket (one user, or a few who share a bucket); 0.0 when the numerator
    is 0.

    Raises ValueError for an empty, non-1-D, negative or non-finite array.
    """
    num = _float_vector(num_b, "num_b")
    _check_buckets(len(num))
    total = float(num.sum())
    return 0.0 if total == 0 else float(num.max()) / total


def _standard_error(num: FloatArray, den: FloatArray) -> float:
    total_den = float(den.sum())
    if total_den == 0:
        return math.nan
    if int(np.count_nonzero(den > 0)) < 2:
        return math.inf
    buckets = len(num)
    rate = float(num.sum()) / total_den
    residuals = num - rate * den
    squares = float(np.dot(residuals, residuals))
    return math.sqrt(buckets / (buckets - 1) * squares) / total_den


def _bucket_vectors(num_b: npt.ArrayLike, den_b: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    num = _float_vector(num_b, "num_b")
    den = _float_vector(den_b, "den_b")
    if len(num) != len(den):
        msg = f"num_b and den_b differ in length: {len(num)} != {len(den)}"
        raise ValueError(msg)
    _check_buckets(len(num))
    if num.sum() > den.sum():
        msg = f"the numerator total exceeds the denominator total: {num.sum()} > {den.sum()}"
        raise ValueError(msg)
    return num, den


def _float_vector(values: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        msg = f"{name} must be one-dimensional, got shape {arr.shape}"
        raise ValueError(msg)
    if not np.isfinite(arr).all():
        msg = f"{name} must be finite"
        raise ValueError(msg)
    if (arr < 0).any():
        msg = f"{name} must be non-negative"
        raise ValueError(msg)
    return arr


def _int_vector(values: npt.ArrayLike, name: str) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        msg = f"{name} must be one-dimensional, got shape {arr.shape}"
        raise ValueError(msg)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            msg = f"{name} must hold whole numbers"
            raise ValueError(msg)
    elif arr.dtype.kind not in "biu" and arr.size:
        msg = f"{name} must hold integers or booleans, got dtype {arr.dtype}"
        raise ValueError(msg)
    return arr.astype(np.int64)


def _as_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{name} must hold integers, got {value!r}"
        raise ValueError(msg)
    if value < 0:
        msg = f"{name} must be non-negative, got {value}"
        raise ValueError(msg)
    return int(value)


def _check_buckets(buckets: int) -> None:
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        msg = f"need a positive whole number of buckets, got {buckets!r}"
        raise ValueError(msg)
