"""Fixed-bin distributions: bins follow the contract, binning clips, quantiles stay in their bin."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.metrics.distributions import (
    DISTRIBUTIONS,
    Distribution,
    distribution,
    histogram_quantile,
)

CONTRACT = Path(__file__).resolve().parents[2] / "schemas" / "interaction_event" / "v1.json"
NUMERIC = tuple(d for d in DISTRIBUTIONS if d.kind == "numeric")
NOT_NUMERIC = tuple(d for d in DISTRIBUTIONS if d.kind != "numeric")
LATENCY = next(d for d in DISTRIBUTIONS if d.id == "latency_ms")
SCORE = next(d for d in DISTRIBUTIONS if d.id == "score_hate")


def _contract() -> dict:
    return json.loads(CONTRACT.read_text(encoding="utf-8"))["properties"]


def ref_bins(edges, xs) -> np.ndarray:
    """Reference binning: [e_i, e_{i+1}), values outside the edges clipped to the end bins."""
    e = np.asarray(edges, dtype=float)
    idx = np.searchsorted(e, np.asarray(xs, dtype=float), side="right") - 1
    return np.clip(idx, 0, len(e) - 2)


def ref_histogram(edges, xs) -> list[int]:
    return np.bincount(ref_bins(edges, xs), minlength=len(edges) - 1).tolist()


# --- bins ------------------------------------------------------------------------------------


def test_ids_are_unique_and_lookup_works():
    ids = [d.id for d in DISTRIBUTIONS]
    assert len(set(ids)) == len(ids)
    for d in DISTRIBUTIONS:
        assert distribution(d.id) is d
    with pytest.raises(KeyError, match="latency_ms"):
        distribution("no_such_distribution")


@pytest.mark.parametrize("d", NUMERIC, ids=lambda d: d.id)
def test_numeric_edges_are_finite_and_strictly_increasing(d):
    edges = np.asarray(d.edges, dtype=float)
    assert len(edges) >= 2
    assert np.all(np.isfinite(edges))
    assert np.all(np.diff(edges) > 0), d.edges
    assert d.bins == len(edges) - 1
    assert d.values == ()


@pytest.mark.parametrize("d", NOT_NUMERIC, ids=lambda d: d.id)
def test_categorical_values_are_unique(d):
    assert len(d.values) > 0
    assert len(set(d.values)) == len(d.values)
    assert d.bins == len(d.values)
    assert d.edges == ()


def test_categorical_values_are_the_contract_enums_in_order():
    c = _contract()
    expected = {
        "outcome": c["request"]["properties"]["outcome"]["enum"],
        "moderation_action": c["moderation"]["properties"]["action"]["enum"],
        "refusal_style": c["refusal"]["properties"]["style"]["enum"],
    }
    for did, enum in expected.items():
        assert list(distribution(did).values) == enum, did


def test_flagged_category_is_none_then_the_contract_categories():
    enum = _contract()["moderation"]["properties"]["flagged_categories"]["items"]["enum"]
    d = distribution("flagged_category")
    assert d.kind == "multi"
    assert d.values[0] == "none"
    assert list(d.values[1:]) == enum


def test_score_distributions_cover_the_contract_score_range_per_category():
    scores = _contract()["moderation"]["properties"]["scores"]["properties"]
    for category, spec in scores.items():
        d = distribution(f"score_{category}")
        assert d.kind == "numeric"
        assert (d.edges[0], d.edges[-1]) == (spec["minimum"], spec["maximum"])


def test_latency_edges_grow_by_about_15_percent_from_10_ms_to_120_s():
    e = np.asarray(LATENCY.edges)
    assert e[0] == 0.0 and e[1] == 10.0
    assert e[-2] < 120_000 <= e[-1]
    ratios = e[2:] / e[1:-1]
    # Rounded to 3 significant digits, so each step is 15 % give or take the rounding.
    assert np.all(np.abs(ratios - 1.15) < 0.01), ratios


# --- bin_of ----------------------------------------------------------------------------------


def test_bin_of_hand_computed_values():
    last = LATENCY.bins - 1
    assert LATENCY.bin_of(-5) == 0
    assert LATENCY.bin_of(0) == 0
    assert LATENCY.bin_of(9.999) == 0
    assert LATENCY.bin_of(10) == 1
    assert LATENCY.bin_of(11.4) == 1
    assert LATENCY.bin_of(11.5) == 2
    assert LATENCY.bin_of(LATENCY.edges[-1]) == last
    assert LATENCY.bin_of(1e12) == last
    assert SCORE.bin_of(0.0) == 0
    assert SCORE.bin_of(0.049) == 0
    assert SCORE.bin_of(0.05) == 1
    assert SCORE.bin_of(0.5) == 10
    assert SCORE.bin_of(0.96) == 19
    assert SCORE.bin_of(1.0) == 19  # the top edge is clipped into the last bin
    assert SCORE.bin_of("0.5") == 10  # accepts what float() accepts


def _probe_values(edges, rng) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    span = e[-1] - e[0]
    return np.concatenate(
        [
            e,  # exact edges
            np.nextafter(e, -np.inf),  # just below each edge
            np.nextafter(e, np.inf),  # just above each edge
            (e[:-1] + e[1:]) / 2,
            e[0] - rng.uniform(1e-9, span, 20),  # below the first edge
            e[-1] + rng.uniform(0, span, 20),  # above the last edge
            rng.uniform(e[0], e[-1], 300),
        ]
    )


@pytest.mark.parametrize("d", NUMERIC, ids=lambda d: d.id)
def test_bin_of_numeric_matches_reference_binning(d):
    rng = np.random.default_rng(7)
    xs = _probe_values(d.edges, rng)
    expected = ref_bins(d.edges, xs)
    got = np.array([d.bin_of(float(x)) for x in xs])
    mismatches = [
        (float(x), int(g), int(w)) for x, g, w in zip(xs, got, expected, strict=True) if g != w
    ]
    assert mismatches == []


@settings(max_examples=200, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=True, width=64))
def test_bin_of_latency_matches_reference_for_any_float(x):
    assert LATENCY.bin_of(x) == int(ref_bins(LATENCY.edges, [x])[0])


def test_bin_of_categorical_is_the_index_in_the_contract_enum():
    enum = _contract()["request"]["properties"]["outcome"]["enum"]
    d = distribution("outcome")
    for i, value in enumerate(enum):
        assert d.bin_of(value) == i
    with pytest.raises(ValueError):
        d.bin_of("not_an_outcome")


def test_bin_of_multi_is_the_index_in_values():
    categories = _contract()["moderation"]["properties"]["flagged_categories"]["items"]["enum"]
    d = distribution("flagged_category")
    assert d.bin_of("none") == 0
    for i, category in enumerate(categories, start=1):
        assert d.bin_of(category) == i


def test_bin_labels():
    assert LATENCY.bin_label(0) == "[0, 10)"
    assert LATENCY.bin_label(1) == "[10, 11.5)"
    assert SCORE.bin_label(19) == "[0.95, 1)"
    assert distribution("outcome").bin_label(2) == "blocked"


# --- points ----------------------------------------------------------------------------------


@pytest.mark.parametrize("d", NUMERIC, ids=lambda d: d.id)
def test_points_are_bin_midpoints(d):
    e = np.asarray(d.edges, dtype=float)
    points = np.asarray(d.points())
    assert points.shape == (d.bins,)
    np.testing.assert_allclose(points, (e[:-1] + e[1:]) / 2, rtol=1e-12)
    assert np.all((e[:-1] < points) & (points < e[1:]))


@pytest.mark.parametrize("d", NOT_NUMERIC, ids=lambda d: d.id)
def test_points_are_a_value_error_for_unordered_bins(d):
    with pytest.raises(ValueError, match=d.id):
        d.points()
    assert d.ordered is False


# --- histogram_quantile ----------------------------------------------------------------------

QS = (0.0, 0.5, 0.95, 0.99, 1.0)


def _assert_within_order_statistic_bins(d: Distribution, xs: np.ndarray, q: float) -> None:
    """The estimate lies between the lower edge of the bin of the lower order statistic and
    the upper edge of the bin of the upper one that numpy's linear quantile interpolates.
    """
    s = np.sort(xs)
    h = q * (len(s) - 1)
    lo_stat, hi_stat = s[math.floor(h)], s[math.ceil(h)]
    b_lo, b_hi = (int(b) for b in ref_bins(d.edges, [lo_stat, hi_stat]))
    est = histogram_quantile(d, ref_histogram(d.edges, xs), q)
    assert est is not None
    assert d.edges[b_lo] <= est <= d.edges[b_hi + 1], (q, est, lo_stat, hi_stat)
    # And the exact quantile is within the same span, clipped values aside.
    exact = float(np.quantile(xs, q))
    if d.edges[0] <= exact < d.edges[-1]:
        assert abs(est - exact) <= d.edges[b_hi + 1] - d.edges[b_lo]


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 2000),
    seed=st.integers(0, 2**32 - 1),
    median_ms=st.floats(5.0, 50_000.0),
    sigma=st.floats(0.05, 2.5),
)
def test_latency_quantile_stays_in_the_bins_of_its_order_statistics(n, seed, median_ms, sigma):
    xs = np.random.default_rng(seed).lognormal(math.log(median_ms), sigma, n)
    for q in QS:
        _assert_within_order_statistic_bins(LATENCY, xs, q)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2000), seed=st.integers(0, 2**32 - 1))
def test_score_quantile_stays_in_the_bins_of_its_order_statistics(n, seed):
    xs = np.random.default_rng(seed).beta(0.5, 3.0, n)
    for q in QS:
        _assert_within_order_statistic_bins(SCORE, xs, q)


def test_quantile_of_a_fixed_lognormal_sample():
    xs = np.random.default_rng(20240501).lognormal(math.log(800.0), 0.8, 50_000)
    counts = ref_histogram(LATENCY.edges, xs)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(xs, q))
        est = histogram_quantile(LATENCY, counts, q)
        # With 50k values a bin holds many, so the estimate is within one 15 % bin.
        assert est == pytest.approx(exact, rel=0.15)


@pytest.mark.parametrize("c", [1, 2, 3, 4, 9, 100])
def test_values_spread_evenly_in_one_bin_give_numpys_quantile_exactly(c):
    # Linear interpolation inside a bin places its c values at lo + width * j / (c + 1);
    # for values that really sit there the estimate is numpy's linear quantile.
    d = Distribution("t", "test", "numeric", "x", edges=(0.0, 10.0))
    xs = np.array([10.0 * j / (c + 1) for j in range(1, c + 1)])
    for q in np.linspace(0, 1, 21):
        assert histogram_quantile(d, [c], float(q)) == pytest.approx(np.quantile(xs, q))


def test_quantile_skips_empty_bins():
    d = Distribution("t", "test", "numeric", "x", edges=(0.0, 10.0, 20.0, 30.0))
    first = histogram_quantile(d, [0, 0, 5], 0.0)
    last = histogram_quantile(d, [5, 0, 0], 1.0)
    assert first is not None and 20.0 <= first < 30.0
    assert last is not None and 0.0 <= last < 10.0


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(
        st.floats(-1_000.0, 200_000.0),
        st.sampled_from(LATENCY.edges),
    ),
    n=st.integers(1, 1000),
    q=st.floats(0.0, 1.0),
)
def test_one_value_repeated_gives_an_estimate_in_its_bin(value, n, q):
    b = int(ref_bins(LATENCY.edges, [value])[0])
    counts = [0] * LATENCY.bins
    counts[b] = n
    est = histogram_quantile(LATENCY, counts, q)
    assert est is not None
    assert LATENCY.edges[b] <= est < LATENCY.edges[b + 1]


def test_empty_histogram_has_no_quantile():
    assert histogram_quantile(LATENCY, [0] * LATENCY.bins, 0.5) is None


@pytest.mark.parametrize("q", [-0.01, 1.01, -1.0, 2.0, math.nan, math.inf])
def test_quantile_outside_unit_interval_is_a_value_error(q):
    with pytest.raises(ValueError, match="quantile"):
        histogram_quantile(LATENCY, [1] * LATENCY.bins, q)


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_number_of_counts_is_a_value_error(delta):
    with pytest.raises(ValueError, match="bins"):
        histogram_quantile(LATENCY, [1] * (LATENCY.bins + delta), 0.5)


@pytest.mark.parametrize("d", NOT_NUMERIC, ids=lambda d: d.id)
def test_quantile_of_unordered_bins_is_a_value_error(d):
    with pytest.raises(ValueError, match="no quantiles"):
        histogram_quantile(d, [1] * d.bins, 0.5)
