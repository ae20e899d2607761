"""Early evaluation of an open window's latest slices (stream.early_slice): an incident that
starts mid-window is tested without the healthy minutes before it, at a share of the error
level per span (half for the whole window, the rest shared by the shorter spans), with the
whole window's bucket excess as the spans' between-user variance.

Expected decisions come from `rate_exceeds` called directly with the span's counts, the
split level and the scaled `v_opt`; the error control is checked on simulated healthy
windows with prolific users who burst within one slice, looked at after every batch.
"""

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import pipelines.alerting.early as early_module
from pipelines.alerting.early import Span, early_evidence, evaluate_early, spans
from pipelines.alerting.evaluate import OpenWindow
from pipelines.alerting.model import EARLY_ALPHA, Rule, Threshold
from pipelines.alerting.sequential import bucket_excess, rate_exceeds

T0 = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
# With 5 slices: the whole window at EARLY_ALPHA / 2, each of the 4 shorter spans at / 8.
WHOLE_ALPHA, SPAN_ALPHA = EARLY_ALPHA / 2, EARLY_ALPHA / 8
DE = (("locale", "de-DE"),)
P0 = 0.02
TYPICAL = 600


def rule(**overrides) -> Rule:
    fields = {
        "name": "HarmfulOutputRateHigh",
        "metric": "violation_rate",
        "by": ("locale",),
        "severity": "sev2",
        "owner": "trust-safety-oncall",
        "runbook": "runbooks/harmful-output-rate.md",
        "summary": "{numerator}/{denominator} in {segment}",
        "threshold": Threshold(above=P0),
        "min_events": 1,
        "early": True,
    }
    fields.update(overrides)
    return Rule(**fields)


def sliced(nums, dens, **extra) -> OpenWindow:
    return OpenWindow(
        DE, sum(nums), sum(dens), typical_denominator=TYPICAL, slices=(nums, dens), **extra
    )


def span_test(span: Span, **extra):
    """`rate_exceeds` on a shorter span as early evaluation should call it."""
    return rate_exceeds(
        span.numerator,
        span.denominator,
        P0,
        alpha=SPAN_ALPHA,
        v_opt=TYPICAL * span.share * P0 * (1 - P0),
        **extra,
    )


def test_spans_are_the_whole_window_then_its_latest_slices():
    got = spans(sliced([1, 2, 3, 0, 0], [100, 110, 120, 0, 0]))
    assert got == [
        Span(0, 6, 330, 1.0),
        Span(1, 5, 230, 0.8),
        Span(2, 3, 120, 0.6),
        Span(3, 0, 0, 0.4),
        Span(4, 0, 0, 0.2),
    ]


@pytest.mark.parametrize(
    "slices",
    [
        None,  # counted before slices were kept
        ([6], [330]),  # one slice: the window itself
        ([1, 2, 2], [100, 110, 120]),  # do not add up to the counters
        ([1, 2, 3], [100, 110]),  # ragged
        ([1, 9, -4], [100, 5, 225]),  # a slice with more violations than events
    ],
)
def test_without_usable_slices_the_window_is_tested_whole(slices):
    window = OpenWindow(DE, 6, 330, typical_denominator=TYPICAL, slices=slices)
    assert spans(window) == [Span(0, 6, 330, 1.0)]


# Three healthy minutes at 1 %, then an incident at 12 % for the minute so far.
MID_NUMS, MID_DENS = [1, 1, 1, 15, 0], [120, 120, 120, 120, 0]


def test_a_mid_window_rise_fires_on_its_slices_where_the_diluted_window_does_not():
    whole = rate_exceeds(
        sum(MID_NUMS), sum(MID_DENS), P0, alpha=EARLY_ALPHA, v_opt=TYPICAL * P0 * (1 - P0)
    )
    # 18 of 480 (3.75 %) is not conclusive against 2 %, even at the full error level.
    assert not whole.fired
    latest = rate_exceeds(15, 120, P0, alpha=SPAN_ALPHA, v_opt=TYPICAL * 0.4 * P0 * (1 - P0))
    assert latest.fired
    found = early_evidence(rule(), sliced(MID_NUMS, MID_DENS))
    assert found is not None
    e_value, span = found
    assert span == Span(3, 15, 120, 0.4)
    assert e_value == pytest.approx(latest.e_value, rel=1e-12)
    # Without the slices (rows counted before they were kept) the same counts do not fire.
    assert early_evidence(rule(), OpenWindow(DE, 18, 480, typical_denominator=TYPICAL)) is None


def test_each_span_is_tested_at_a_share_of_the_error_level():
    # Counts of the latest slice that a test at the full level passes but one at the
    # span's share does not; then the same for the whole window at its half.
    v_span = TYPICAL * 0.4 * P0 * (1 - P0)
    x = next(
        x for x in range(1, 120) if rate_exceeds(x, 120, P0, alpha=EARLY_ALPHA, v_opt=v_span).fired
    )
    assert not rate_exceeds(x, 120, P0, alpha=SPAN_ALPHA, v_opt=v_span).fired
    assert early_evidence(rule(), sliced([0, 0, 0, x, 0], [0, 0, 0, 120, 0])) is None
    more = next(
        y for y in range(x, 120) if rate_exceeds(y, 120, P0, alpha=SPAN_ALPHA, v_opt=v_span).fired
    )
    assert early_evidence(rule(), sliced([0, 0, 0, more, 0], [0, 0, 0, 120, 0])) is not None

    v_whole = TYPICAL * P0 * (1 - P0)
    flat = [
        x
        for x in range(1, 600)
        if rate_exceeds(x, 600, P0, alpha=EARLY_ALPHA, v_opt=v_whole).fired
        and not rate_exceeds(x, 600, P0, alpha=WHOLE_ALPHA, v_opt=v_whole).fired
    ]
    assert flat  # spread evenly over the 5 slices: no shorter span is more conclusive
    nums = [flat[0] // 5 + (i < flat[0] % 5) for i in range(5)]
    assert early_evidence(rule(), sliced(nums, [120] * 5)) is None
    # Without slices the whole window keeps the full level and fires.
    assert early_evidence(rule(), OpenWindow(DE, flat[0], 600, typical_denominator=TYPICAL))


def test_a_span_below_min_events_is_not_tested():
    r = rule(min_events=200)
    # The whole window has 480 events but is not conclusive; the latest slice alone is,
    # but holds 120 < 200 events.
    assert early_evidence(r, sliced(MID_NUMS, MID_DENS)) is None
    assert early_evidence(rule(min_events=120), sliced(MID_NUMS, MID_DENS)) is not None


def test_shorter_spans_use_the_whole_windows_bucket_excess():
    # The window's violations sit in one bucket (one prolific user): the latest slices are
    # tested with all of the whole window's excess as theirs, and need more evidence.
    x_b = [0] * 32
    n_b = [0] * 32
    for b, (x, n) in enumerate([(1, 120), (1, 120), (1, 120), (15, 120)]):
        x_b[b * 8], n_b[b * 8] = x, n
    excess = bucket_excess(x_b, n_b)
    rate = 18 / 480
    assert excess == pytest.approx(
        32 / 31 * sum((x - rate * n) ** 2 for x, n in zip(x_b, n_b, strict=True))
        - 480 * rate * (1 - rate)
    )
    assert excess > 120 * P0 * (1 - P0)
    reference = rate_exceeds(
        15,
        120,
        P0,
        alpha=SPAN_ALPHA,
        v_opt=TYPICAL * 0.4 * P0 * (1 - P0),
        cluster_excess=excess,
    )
    assert reference.variance == pytest.approx(120 * P0 * (1 - P0) + excess)
    assert not reference.fired
    assert early_evidence(rule(), sliced(MID_NUMS, MID_DENS, buckets=(x_b, n_b))) is None
    # A rule that counts events (evidence: events) ignores the buckets.
    counted = early_evidence(
        rule(evidence="events"), sliced(MID_NUMS, MID_DENS, buckets=(x_b, n_b))
    )
    assert counted is not None and counted[1].first == 3


def test_spans_reach_into_the_next_window_up_to_one_windows_length():
    window = sliced(
        [1, 2, 3, 4, 5], [10, 20, 30, 40, 50], next_slices=([6, 7, 0, 0, 0], [60, 70, 0, 0, 0])
    )
    assert spans(window) == [
        Span(0, 15, 150, 1.0),
        Span(1, 14 + 6, 140 + 60, 0.8, crosses=True),
        Span(2, 12 + 13, 120 + 130, 0.6, crosses=True),
        Span(3, 9 + 13, 90 + 130, 0.4, crosses=True),
        Span(4, 5 + 13, 50 + 130, 0.2, crosses=True),
    ]
    # Unusable next slices (another slicing, a slice with more violations than events)
    # are left out: the spans stay in their window.
    for bad in (([6, 7], [60, 70]), ([6, 71, 0, 0, 0], [60, 70, 0, 0, 0])):
        own = spans(replace(window, next_slices=bad))
        assert [s.crosses for s in own] == [False] * 5
        assert own[1] == Span(1, 14, 140, 0.8)


# An incident from 4:30 into the window on: 30 healthy and 30 bad seconds in its last
# slice, then a bad first minute of the next window; 2 events a second.
LATE_NUMS, LATE_DENS = [1, 1, 1, 1, 7], [120, 120, 120, 120, 120]
NEXT = ([14, 0, 0, 0, 0], [120, 0, 0, 0, 0])
NEXT_START = T0 + timedelta(minutes=5)


def test_a_late_start_fires_across_the_boundary_in_the_next_window():
    own_only = sliced(LATE_NUMS, LATE_DENS)
    assert early_evidence(rule(), own_only) is None
    across = replace(own_only, next_slices=NEXT)
    found = early_evidence(rule(), across)
    assert found is not None
    e_value, span = found
    reference = span_test(span)
    assert reference.fired and e_value == pytest.approx(reference.e_value, rel=1e-12)
    assert span.crosses and span.first >= 4 - 1
    states, transitions = evaluate_early(rule(), T0, [across], {}, next_start=NEXT_START)
    (t,) = transitions
    # The page is about the next window, where the incident's latest events are: the
    # closing of this one (where it hardly shows) then changes nothing.
    assert t.window_start == t.firing_since == NEXT_START
    assert states[DE].firing_since == states[DE].started_at == NEXT_START
    with pytest.raises(ValueError, match="next_start"):
        evaluate_early(rule(), T0, [across], {})


def test_a_span_across_needs_the_next_windows_buckets():
    buckets = ([0] * 31 + [11], [0] * 31 + [600])  # one user's events: counts are known
    across = replace(sliced(LATE_NUMS, LATE_DENS, buckets=buckets), next_slices=NEXT)
    # Unknown users in the next window: the spans that reach into it are not tested.
    assert early_evidence(rule(evidence="events"), across) is not None
    assert early_evidence(rule(), across) is None
    # Known: both windows' buckets added up give the excess it is tested with.
    spread = ([1] * 11 + [0] * 21, [19] * 31 + [11])
    known = replace(across, buckets=spread, next_buckets=([1] * 14 + [0] * 18, [4] * 30 + [0, 0]))
    union = (
        [a + b for a, b in zip(known.buckets[0], known.next_buckets[0], strict=True)],
        [a + b for a, b in zip(known.buckets[1], known.next_buckets[1], strict=True)],
    )
    found = early_evidence(rule(), known)
    assert found is not None
    e_value, span = found
    assert span.crosses
    reference = span_test(span, cluster_excess=bucket_excess(*union))
    assert e_value == pytest.approx(reference.e_value, rel=1e-12)


def test_the_transition_carries_the_span_that_fired():
    _, transitions = evaluate_early(rule(), T0, [sliced(MID_NUMS, MID_DENS)], {})
    (t,) = transitions
    assert t.early and t.to_status == "firing"
    assert (t.numerator, t.denominator) == (15, 120)
    assert t.value == pytest.approx(15 / 120)
    assert t.summary == "15/120 in de-DE"


def test_cluster_excess_replaces_the_buckets_excess_exactly():
    x_b, n_b = [3, 0, 9, 1], [50, 40, 60, 30]
    via_buckets = rate_exceeds(13, 180, P0, alpha=0.01, v_opt=50.0, buckets=(x_b, n_b))
    via_excess = rate_exceeds(
        13, 180, P0, alpha=0.01, v_opt=50.0, cluster_excess=bucket_excess(x_b, n_b)
    )
    assert via_excess.variance_excess > 0
    assert via_excess.log_e == via_buckets.log_e
    assert via_excess.variance == via_buckets.variance
    with pytest.raises(ValueError, match="not both"):
        rate_exceeds(13, 180, P0, alpha=0.01, v_opt=50.0, buckets=(x_b, n_b),
                     cluster_excess=1.0)  # fmt: skip
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="cluster_excess"):
            rate_exceeds(13, 180, P0, alpha=0.01, v_opt=50.0, cluster_excess=bad)


# --- error control on simulated healthy windows ------------------------------------------

SLICES, BATCHES, BUCKETS = 5, 15, 32
ALPHA = 0.05  # the level the simulation runs at (EARLY_ALPHA is too small to measure)
NULL_P0 = 0.05
NULL_WINDOWS = 2000


def _healthy_windows(rng, windows, p0):
    """Cumulative per-bucket and per-slice (x, n) after each batch, shape (windows, batches, .).

    150 regular users with Poisson(2) events spread over the window and 4 prolific users
    with 40-120 events each, all in one random slice of the window (a burst); each user
    has their own rate, Beta with mean p0 and concentration 8; users are hashed to
    buckets by a random id modulo 32. Events arrive in their slice's batches (3 per slice).
    """
    regular, prolific = 150, 4
    users = regular + prolific
    volume = np.empty((windows, users), np.int64)
    volume[:, :regular] = rng.poisson(2.0, (windows, regular))
    volume[:, regular:] = rng.integers(40, 121, (windows, prolific))
    rates = rng.beta(p0 * 8, (1 - p0) * 8, (windows, users))
    bucket = rng.integers(0, 2**31, (windows, users)) % BUCKETS
    burst = rng.integers(0, SLICES, (windows, users))
    owner = np.repeat(np.arange(windows * users), volume.ravel())
    window, user = owner // users, owner % users
    per_slice = BATCHES // SLICES
    batch = rng.integers(0, BATCHES, owner.size)
    bursting = user >= regular
    batch[bursting] = burst.ravel()[owner[bursting]] * per_slice + rng.integers(
        0, per_slice, int(bursting.sum())
    )
    violation = rng.random(owner.size) < rates.ravel()[owner]

    def cumulative(cells, width):
        index = (window * BATCHES + batch) * width + cells
        size = windows * BATCHES * width
        n = np.bincount(index, minlength=size).reshape(windows, BATCHES, width)
        x = np.bincount(index, weights=violation, minlength=size).reshape(n.shape)
        return np.cumsum(x, axis=1).astype(np.int64), np.cumsum(n, axis=1)

    x_b, n_b = cumulative(bucket.ravel()[owner], BUCKETS)
    x_s, n_s = cumulative(batch // per_slice, SLICES)
    return x_b, n_b, x_s, n_s


@pytest.fixture(scope="module")
def healthy():
    return _healthy_windows(np.random.default_rng(20261127), NULL_WINDOWS, NULL_P0)


def _fired_share(data, *, buckets=True):
    """The share of windows that fire, each looked at after every batch of its own and
    then of the next window (windows in pairs: 0 and 1, 2 and 3, ...), as the job looks
    while the watermark keeps both open."""
    x_b, n_b, x_s, n_s = data
    r = rule(threshold=Threshold(above=NULL_P0))
    last = BATCHES - 1

    def pair(a, b, w, j):
        return (a[w, j].tolist(), b[w, j].tolist())

    fired = 0
    pairs = len(x_b) // 2
    for k in range(pairs):
        w, nxt = 2 * k, 2 * k + 1
        looks = [(j, None) for j in range(BATCHES)] + [(last, j) for j in range(BATCHES)]
        for j, later in looks:
            window = OpenWindow(
                DE,
                int(x_s[w, j].sum()),
                int(n_s[w, j].sum()),
                typical_denominator=620,  # 150 * 2 + 4 * 80 events
                buckets=pair(x_b, n_b, w, j) if buckets else None,
                slices=pair(x_s, n_s, w, j),
                next_slices=None if later is None else pair(x_s, n_s, nxt, later),
                next_buckets=None if later is None or not buckets else pair(x_b, n_b, nxt, later),
            )
            if early_evidence(r, window) is not None:
                fired += 1
                break
    return fired / pairs


def test_healthy_windows_fire_at_most_at_the_error_level_with_spans(healthy, monkeypatch):
    monkeypatch.setattr(early_module, "EARLY_ALPHA", ALPHA)
    tolerance = 3 * math.sqrt(ALPHA * (1 - ALPHA) / (NULL_WINDOWS // 2))
    assert _fired_share(healthy) <= ALPHA + tolerance


def test_spans_need_the_windows_bucket_excess(healthy, monkeypatch):
    # Tested as independent events, the bursts of prolific users make the latest slices
    # look conclusive in far more healthy windows than the error level allows.
    monkeypatch.setattr(early_module, "EARLY_ALPHA", ALPHA)
    tolerance = 3 * math.sqrt(ALPHA * (1 - ALPHA) / (NULL_WINDOWS // 2))
    assert _fired_share(healthy, buckets=False) > ALPHA + tolerance
