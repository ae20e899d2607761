"""Drift statistics agree with independent references (scipy, hand sums) on the same data."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import jensenshannon
from scipy.stats import (
    binomtest,
    chi2_contingency,
    false_discovery_control,
    ks_2samp,
    kstwobign,
    norm,
    wasserstein_distance,
)

from pipelines.drift.stats import (
    DistributionDrift,
    chi2_homogeneity,
    compare_distributions,
    compare_distributions_rows,
    doubling_test,
    js_distance,
    ks_binned,
    psi,
    wasserstein_binned,
)
from pipelines.metrics.rate_tests import (
    INSUFFICIENT,
    OK,
    benjamini_hochberg,
    two_proportion_test,
    two_proportion_tests,
)

REL = 1e-9
ABS = 1e-12


@st.composite
def count_pairs(draw):
    k = draw(st.integers(2, 40))
    # Clipping a range that starts below 0 makes ~1 in 4 bins empty on purpose: empty bins
    # are where the edge cases live.
    vec = (
        hnp.arrays(np.int64, k, elements=st.integers(-150, 500))
        .map(lambda a: np.maximum(a, 0))
        .filter(lambda a: a.sum() > 0)
    )
    return draw(vec), draw(vec)


@st.composite
def counts_with_points(draw):
    c, b = draw(count_pairs())
    gaps = draw(st.lists(st.floats(0.01, 100.0), min_size=c.size, max_size=c.size))
    return c, b, np.cumsum(gaps)


def _reference_psi(current, baseline, epsilon):
    # Plain-Python restatement of the contract, independent of the numpy implementation.
    p = [x / sum(current) or epsilon for x in current]
    q = [x / sum(baseline) or epsilon for x in baseline]
    return sum((pi - qi) * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _table_without_empty_bins(current, baseline):
    table = np.vstack([current, baseline])
    return table[:, table.sum(axis=0) > 0]


# --- PSI ----------------------------------------------------------------------------------


def test_psi_two_bins_by_hand():
    # p = (1/4, 3/4), q = (1/2, 1/2):
    # (1/4 - 1/2) ln(1/2) + (3/4 - 1/2) ln(3/2) = 1/4 ln 2 + 1/4 ln 3/2 = 1/4 ln 3
    assert psi([1, 3], [1, 1]) == pytest.approx(0.25 * math.log(3), rel=REL)


def test_psi_of_identical_distributions_is_zero():
    assert psi([5, 0, 7, 2], [5, 0, 7, 2]) == 0.0
    assert psi([1, 2, 3], [10, 20, 30]) == pytest.approx(0.0, abs=ABS)


def test_psi_empty_bin_uses_epsilon_without_renormalising():
    # current shares (0, 1) become (1e-4, 1): the second share is NOT scaled down to 1 - 1e-4.
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert psi([0, 10], [5, 5]) == pytest.approx(expected, rel=REL)
    assert psi([0, 10], [5, 5], epsilon=1e-2) == pytest.approx(
        (1e-2 - 0.5) * math.log(1e-2 / 0.5) + 0.5 * math.log(2), rel=REL
    )
    assert math.isfinite(psi([0, 10], [10, 0]))


@settings(max_examples=200, deadline=None)
@given(count_pairs())
def test_psi_matches_reference_formula(pair):
    c, b = pair
    value = psi(c, b)
    assert type(value) is float
    assert value == pytest.approx(_reference_psi(c.tolist(), b.tolist(), 1e-4), rel=REL, abs=ABS)
    assert value >= -ABS


# --- Jensen-Shannon ----------------------------------------------------------------------


def test_js_distance_extremes():
    assert js_distance([3, 0, 1], [6, 0, 2]) == pytest.approx(0.0, abs=1e-7)
    assert js_distance([4, 0], [0, 9]) == pytest.approx(1.0, rel=REL)


@settings(max_examples=200, deadline=None)
@given(count_pairs())
def test_js_distance_matches_scipy(pair):
    c, b = pair
    value = js_distance(c, b)
    assert type(value) is float
    assert 0.0 <= value <= 1.0
    # abs tolerance: sqrt amplifies rounding near 0 (sqrt(1e-16) = 1e-8).
    assert value == pytest.approx(float(jensenshannon(c, b, base=2)), rel=REL, abs=1e-7)


# --- chi-square --------------------------------------------------------------------------


def test_chi2_drops_bins_empty_in_both_rows():
    with_empty = chi2_homogeneity([10, 0, 20, 5], [12, 0, 15, 9])
    without = chi2_homogeneity([10, 20, 5], [12, 15, 9])
    assert with_empty == without
    assert with_empty[1] == 2


def test_chi2_with_fewer_than_two_bins_is_no_evidence():
    assert chi2_homogeneity([0, 7, 0], [0, 3, 0]) == (0.0, 0, 1.0)
    assert chi2_homogeneity([4], [9]) == (0.0, 0, 1.0)


@settings(max_examples=200, deadline=None)
@given(count_pairs())
def test_chi2_matches_scipy_contingency(pair):
    c, b = pair
    statistic, dof, p_value = chi2_homogeneity(c, b)
    assert (type(statistic), type(dof), type(p_value)) == (float, int, float)
    ref = chi2_contingency(_table_without_empty_bins(c, b), correction=False)
    assert dof == ref.dof
    assert statistic == pytest.approx(ref.statistic, rel=REL, abs=ABS)
    assert p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=ABS)


# --- Kolmogorov-Smirnov ------------------------------------------------------------------


def test_ks_known_values():
    d, p = ks_binned([10, 0], [0, 10])
    assert d == 1.0
    assert p < 1e-4
    assert ks_binned([3, 4, 5], [6, 8, 10]) == (0.0, 1.0)


def test_ks_single_observation_each_side_is_no_evidence():
    # scipy's asymptotic formula gives NaN here (effective size rounds to 0).
    assert ks_binned([1, 0], [0, 1]) == (1.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(count_pairs())
def test_ks_matches_scipy_on_samples_at_bin_positions(pair):
    c, b = pair
    d, p = ks_binned(c, b)
    assert (type(d), type(p)) == (float, float)
    points = np.arange(c.size, dtype=float)
    with np.errstate(divide="ignore"):  # scipy divides by 0 in the n = m = 1 case below
        ref = ks_2samp(np.repeat(points, c), np.repeat(points, b), method="asymp")
    assert d == pytest.approx(float(ref.statistic), rel=REL, abs=ABS)
    n, m = int(c.sum()), int(b.sum())
    e = n * m / (n + m)
    if round(e) < 1:
        assert p == 1.0
        return
    # Stephens' corrected asymptotic formula, evaluated on scipy's own statistic...
    root = np.sqrt(e)
    expected = float(kstwobign.sf((root + 0.12 + 0.11 / root) * float(ref.statistic)))
    assert p == pytest.approx(min(max(expected, 0.0), 1.0), rel=REL, abs=ABS)
    # ...stays close to scipy's finite-n asymptotic p-value once the samples are not tiny
    # (at 4 against 6 events, e = 2.4, the two approximations differ by 0.055).
    if e >= 10:
        assert abs(p - float(ref.pvalue)) <= 0.035


# --- Wasserstein -------------------------------------------------------------------------


def test_wasserstein_moves_all_mass_between_points():
    assert wasserstein_binned([5, 0, 0], [0, 0, 2], [1.0, 2.0, 4.5]) == pytest.approx(3.5)
    assert wasserstein_binned([1, 2], [2, 4], [0.0, 1.0]) == 0.0


@settings(max_examples=200, deadline=None)
@given(counts_with_points())
def test_wasserstein_matches_scipy(data):
    c, b, points = data
    value = wasserstein_binned(c, b, points)
    assert type(value) is float
    ref = wasserstein_distance(points, points, c, b)
    assert value == pytest.approx(float(ref), rel=REL, abs=1e-9)


# --- compare_distributions ---------------------------------------------------------------


def test_compare_ordered_with_points_reports_everything():
    c, b, pts = [30, 50, 20], [25, 45, 30], [0.5, 1.5, 2.5]
    res = compare_distributions(c, b, ordered=True, points=pts)
    chi2_stat, chi2_dof, chi2_p = chi2_homogeneity(c, b)
    assert res == DistributionDrift(
        status=OK,
        current_n=100,
        baseline_n=100,
        psi=psi(c, b),
        js_distance=js_distance(c, b),
        chi2_statistic=chi2_stat,
        chi2_dof=chi2_dof,
        chi2_p_value=chi2_p,
        ks_statistic=ks_binned(c, b)[0],
        ks_p_value=ks_binned(c, b)[1],
        wasserstein=wasserstein_binned(c, b, pts),
        doubling_p_value=doubling_test(c, b),
    )
    assert type(res.current_n) is int


def test_compare_passes_epsilon_to_psi():
    res = compare_distributions([0, 10], [5, 5], ordered=False, epsilon=1e-2)
    assert res.psi == psi([0, 10], [5, 5], epsilon=1e-2)


def test_compare_ordered_without_points_has_no_wasserstein():
    res = compare_distributions([3, 4], [4, 3], ordered=True)
    assert res.ks_statistic is not None and res.ks_p_value is not None
    assert res.wasserstein is None


def test_compare_categorical_has_no_ks_or_wasserstein():
    res = compare_distributions([3, 4, 0], [4, 3, 1], ordered=False)
    assert res.status == OK
    assert res.psi is not None and res.js_distance is not None and res.chi2_p_value is not None
    assert (res.ks_statistic, res.ks_p_value, res.wasserstein) == (None, None, None)


@pytest.mark.parametrize(
    ("current", "baseline", "min_count"),
    [([2, 3], [40, 60], 10), ([40, 60], [2, 3], 10), ([0, 0], [4, 5], 1), ([0, 0], [4, 5], 0)],
)
def test_compare_insufficient_data_has_no_statistics(current, baseline, min_count):
    res = compare_distributions(current, baseline, ordered=True, points=[0, 1], min_count=min_count)
    assert res.status == INSUFFICIENT
    assert (res.current_n, res.baseline_n) == (sum(current), sum(baseline))
    stats_fields = (
        res.psi,
        res.js_distance,
        res.chi2_statistic,
        res.chi2_dof,
        res.chi2_p_value,
        res.ks_statistic,
        res.ks_p_value,
        res.wasserstein,
    )
    assert stats_fields == (None,) * 8


def test_compare_at_exactly_min_count_is_sufficient():
    assert compare_distributions([4, 6], [5, 5], ordered=False, min_count=10).status == OK


def test_compare_validates_even_when_insufficient():
    with pytest.raises(ValueError, match="same bins"):
        compare_distributions([0, 0], [1, 2, 3], ordered=False, min_count=100)
    with pytest.raises(ValueError, match="strictly increasing"):
        compare_distributions([1, 1], [1, 1], ordered=True, points=[1, 1], min_count=100)


def test_compare_rejects_points_for_categorical_bins():
    with pytest.raises(ValueError, match="ordered"):
        compare_distributions([1, 2], [2, 1], ordered=False, points=[0.0, 1.0])


# --- two-proportion test -----------------------------------------------------------------


@st.composite
def proportion_samples(draw):
    n1 = draw(st.integers(1, 10_000))
    n2 = draw(st.integers(1, 10_000))
    return draw(st.integers(0, n1)), n1, draw(st.integers(0, n2)), n2


@settings(max_examples=200, deadline=None)
@given(proportion_samples())
def test_two_proportion_z_squared_is_pearson_chi2(sample):
    x1, n1, x2, n2 = sample
    res = two_proportion_test(x1, n1, x2, n2)
    assert res.status == OK
    assert res.difference == pytest.approx(x1 / n1 - x2 / n2, rel=REL, abs=ABS)
    assert res.z is not None and res.p_value is not None
    if x1 + x2 in (0, n1 + n2):
        assert (res.z, res.p_value) == (0.0, 1.0)
        return
    ref = chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    assert res.z**2 == pytest.approx(ref.statistic, rel=1e-8, abs=ABS)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
    assert np.sign(res.z) == np.sign(x1 / n1 - x2 / n2)


def test_two_proportion_direction_and_fields():
    res = two_proportion_test(30, 100, 10, 100)
    assert res.z is not None and res.z > 0
    assert res.difference == pytest.approx(0.2)
    assert (res.current_successes, res.current_trials) == (30, 100)
    assert (res.baseline_successes, res.baseline_trials) == (10, 100)
    lower = two_proportion_test(10, 100, 30, 100)
    assert lower.z == pytest.approx(-res.z) and lower.p_value == pytest.approx(res.p_value)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(0, 50, 0, 80), (50, 50, 80, 80)])
def test_two_proportion_without_variance_is_no_evidence(x1, n1, x2, n2):
    res = two_proportion_test(x1, n1, x2, n2)
    assert (res.status, res.difference, res.z, res.p_value) == (OK, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("n1", "n2", "min_trials"), [(0, 10, 1), (10, 0, 1), (0, 10, 0), (9, 50, 10), (50, 9, 10)]
)
def test_two_proportion_insufficient_trials(n1, n2, min_trials):
    res = two_proportion_test(0, n1, 0, n2, min_trials=min_trials)
    assert res.status == INSUFFICIENT
    assert (res.difference, res.z, res.p_value) == (None, None, None)
    assert (res.current_trials, res.baseline_trials) == (n1, n2)


@pytest.mark.parametrize(
    "args", [(3, 2, 1, 5), (1, 5, 6, 5), (-1, 5, 1, 5), (1, 5, -1, 5), (0, -1, 0, 5)]
)
def test_two_proportion_rejects_impossible_counts(args):
    with pytest.raises(ValueError, match="successes <= trials"):
        two_proportion_test(*args)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "d1", "d2"),
    [
        (60, 1000, 40, 1000, 3.0, 2.0),
        (60, 1000, 400, 10_000, 1.0, 5.5),
        (3, 40, 90, 700, 12.0, 1.0),
        (500, 2000, 300, 2000, 1.7, 40.0),
    ],
)
def test_two_proportion_widens_the_variance_of_each_side_by_its_design_effect(
    x1, n1, x2, n2, d1, d2
):
    res = two_proportion_test(x1, n1, x2, n2, current_design_effect=d1, baseline_design_effect=d2)
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (d1 / n1 + d2 / n2))
    assert res.status == OK
    assert res.z == pytest.approx(z, rel=1e-12)
    assert res.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    assert res.difference == pytest.approx(x1 / n1 - x2 / n2, rel=REL, abs=ABS)
    # The same through the row-wise form, position by position.
    (row,) = two_proportion_tests(
        [x1], [n1], [x2], [n2], current_design_effects=[d1], baseline_design_effects=[d2]
    )
    assert row == res


@settings(max_examples=100, deadline=None)
@given(proportion_samples())
def test_two_proportion_with_unit_design_effects_is_the_plain_test(sample):
    x1, n1, x2, n2 = sample
    plain = two_proportion_test(x1, n1, x2, n2)
    assert (
        two_proportion_test(x1, n1, x2, n2, current_design_effect=1.0, baseline_design_effect=1.0)
        == plain
    )
    (row,) = two_proportion_tests(
        [x1], [n1], [x2], [n2], current_design_effects=[1], baseline_design_effects=[1]
    )
    assert row == plain


def test_two_proportion_with_an_infinite_design_effect_on_either_side_is_no_evidence():
    assert two_proportion_test(300, 1000, 10, 1000).p_value < 1e-50
    for kwargs in (
        {"baseline_design_effect": math.inf},
        {"current_design_effect": math.inf},
        {"current_design_effect": 2.0, "baseline_design_effect": math.inf},
    ):
        res = two_proportion_test(300, 1000, 10, 1000, **kwargs)
        assert (res.status, res.z, res.p_value) == (OK, 0.0, 1.0)
        assert res.difference == pytest.approx(0.29)


@pytest.mark.parametrize("bad", [math.nan, 0.5, 0.0, -1.0])
@pytest.mark.parametrize("side", ["current_design_effect", "baseline_design_effect"])
def test_two_proportion_rejects_a_design_effect_below_one_or_nan(side, bad):
    with pytest.raises(ValueError, match="design effect >= 1"):
        two_proportion_test(5, 50, 5, 50, **{side: bad})
    rows = f"{side}s"
    with pytest.raises(ValueError, match="design effect >= 1"):
        two_proportion_tests([5, 5], [50, 50], [5, 5], [50, 50], **{rows: [1.0, bad]})
    with pytest.raises(ValueError, match="design effect >= 1"):
        two_proportion_tests([5, 5], [50, 50], [5, 5], [50, 50], **{rows: [1.0]})


# --- Benjamini-Hochberg ------------------------------------------------------------------


def test_bh_by_hand_with_none_preserved():
    # m = 3, sorted 0.01, 0.03, 0.04 -> p * m / rank = 0.03, 0.045, 0.04; step-up takes the
    # running minimum from the top, so the 0.03 inherits 0.04.
    assert benjamini_hochberg([0.01, None, 0.04, 0.03, None]) == pytest.approx(
        [0.03, None, 0.04, 0.04, None]
    )
    assert benjamini_hochberg([]) == []
    assert benjamini_hochberg([None, None]) == [None, None]
    assert benjamini_hochberg([0.9, 0.8]) == [0.9, 0.9]
    assert benjamini_hochberg([1.0, 0.5]) == [1.0, 1.0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), max_size=40))
def test_bh_matches_scipy(ps):
    q = benjamini_hochberg(ps)
    assert [v is None for v in q] == [p is None for p in ps]
    present = [p for p in ps if p is not None]
    if not present:
        return
    ref = false_discovery_control(present, method="bh")
    got = [v for v in q if v is not None]
    assert all(type(v) is float for v in got)
    assert got == pytest.approx(ref.tolist(), rel=REL, abs=ABS)


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "baseline", "match"),
    [
        ([1, 2], [1, 2, 3], "same bins"),
        ([1, -2], [1, 2], "non-negative integer"),
        ([1, 2.5], [1, 2], "non-negative integer"),
        ([1, float("nan")], [1, 2], "non-negative integer"),
        ([], [], "non-empty 1-D"),
        ([[1, 2]], [[1, 2]], "non-empty 1-D"),
        ([0, 0], [1, 2], "positive total"),
        ([1, 2], [0, 0], "positive total"),
    ],
)
@pytest.mark.parametrize(
    "fn",
    [
        psi,
        js_distance,
        chi2_homogeneity,
        ks_binned,
        lambda c, b: wasserstein_binned(c, b, list(range(len(c)))),
    ],
)
def test_bad_counts_are_rejected(fn, current, baseline, match):
    with pytest.raises(ValueError, match=match):
        fn(current, baseline)


@pytest.mark.parametrize("epsilon", [0.0, -1e-4])
def test_psi_rejects_non_positive_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        psi([1, 2], [2, 1], epsilon=epsilon)


@pytest.mark.parametrize(
    ("points", "match"),
    [
        ([0.0, 0.0, 1.0], "strictly increasing"),
        ([2.0, 1.0, 3.0], "strictly increasing"),
        ([0.0, float("inf"), 1.0], "strictly increasing"),
        ([0.0, 1.0], "one value per bin"),
    ],
)
def test_wasserstein_rejects_bad_points(points, match):
    with pytest.raises(ValueError, match=match):
        wasserstein_binned([1, 2, 3], [3, 2, 1], points)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bh_rejects_invalid_p_values(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.1, None, bad])


def test_integer_dtype_inputs_are_accepted():
    c = np.array([3, 5, 2], dtype=np.int64)
    b = np.array([4, 4, 2], dtype=np.uint32)
    assert psi(c, b) == pytest.approx(psi(c.tolist(), b.tolist()), rel=REL)
    res = two_proportion_test(np.int64(3), np.int64(10), np.int32(5), np.int32(10))
    assert type(res.current_trials) is int
    assert all(type(v) is float for v in (res.difference, res.z, res.p_value))


def test_two_proportion_rejects_fractional_counts():
    with pytest.raises(TypeError):
        two_proportion_test(2.5, 10, 1, 10)


# --- many pairs at once ------------------------------------------------------------------


@st.composite
def count_matrices(draw):
    """(rows x bins) current and baseline counts; some rows small or empty on one side."""
    rows = draw(st.integers(1, 12))
    k = draw(st.integers(1, 25))
    cells = hnp.arrays(np.int64, (rows, k), elements=st.integers(-60, 200)).map(
        lambda a: np.maximum(a, 0)
    )
    return draw(cells), draw(cells)


def _check_against_scipy(res, c, b, *, ordered, points, min_count, epsilon=1e-4):
    assert (res.current_n, res.baseline_n) == (int(c.sum()), int(b.sum()))
    assert type(res.current_n) is int and type(res.baseline_n) is int
    if min(c.sum(), b.sum()) < max(min_count, 1):
        assert res.status == INSUFFICIENT
        assert (res.psi, res.chi2_dof, res.ks_p_value, res.wasserstein) == (None,) * 4
        return
    assert res.status == OK
    expected_psi = _reference_psi(c.tolist(), b.tolist(), epsilon)
    assert res.psi == pytest.approx(expected_psi, rel=REL, abs=ABS)
    assert res.js_distance == pytest.approx(float(jensenshannon(c, b, base=2)), rel=REL, abs=1e-7)
    table = _table_without_empty_bins(c, b)
    if table.shape[1] >= 2:
        ref = chi2_contingency(table, correction=False)
        assert (res.chi2_dof, type(res.chi2_dof)) == (ref.dof, int)
        assert res.chi2_statistic == pytest.approx(ref.statistic, rel=REL, abs=ABS)
        assert res.chi2_p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=ABS)
    else:
        assert (res.chi2_statistic, res.chi2_dof, res.chi2_p_value) == (0.0, 0, 1.0)
    if not ordered:
        assert (res.ks_statistic, res.ks_p_value, res.wasserstein) == (None, None, None)
        return
    positions = np.arange(c.size, dtype=float)
    with np.errstate(divide="ignore"):
        ks = ks_2samp(np.repeat(positions, c), np.repeat(positions, b), method="asymp")
    assert res.ks_statistic == pytest.approx(float(ks.statistic), rel=REL, abs=ABS)
    n, m = int(c.sum()), int(b.sum())
    e = n * m / (n + m)
    root = math.sqrt(e)
    expected_p = (
        1.0 if round(e) < 1 else float(kstwobign.sf((root + 0.12 + 0.11 / root) * ks.statistic))
    )
    assert res.ks_p_value == pytest.approx(min(max(expected_p, 0.0), 1.0), rel=REL, abs=ABS)
    if points is None:
        assert res.wasserstein is None
    else:
        ref_w = wasserstein_distance(points, points, c, b)
        assert res.wasserstein == pytest.approx(float(ref_w), rel=REL, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(count_matrices(), st.sampled_from(["categorical", "ordered", "ordered with points"]),
       st.integers(0, 150))  # fmt: skip
def test_every_row_of_compare_distributions_rows_matches_scipy(pair, kind, min_count):
    c, b = pair
    points = np.cumsum(np.linspace(0.5, 3.0, c.shape[1])) if kind == "ordered with points" else None
    results = compare_distributions_rows(
        c, b, ordered=kind != "categorical", points=points, min_count=min_count
    )
    assert len(results) == c.shape[0]
    for res, ci, bi in zip(results, c, b, strict=True):
        _check_against_scipy(
            res, ci, bi, ordered=kind != "categorical", points=points, min_count=min_count
        )


def test_compare_distributions_rows_takes_epsilon_and_allows_zero_rows():
    c = np.array([[0, 10], [4, 6]])
    b = np.array([[5, 5], [5, 5]])
    got = compare_distributions_rows(c, b, ordered=False, epsilon=1e-2)
    assert [r.psi for r in got] == pytest.approx(
        [_reference_psi([0, 10], [5, 5], 1e-2), _reference_psi([4, 6], [5, 5], 1e-2)], rel=REL
    )
    assert compare_distributions_rows(np.zeros((0, 3)), np.zeros((0, 3)), ordered=True) == []


@pytest.mark.parametrize(
    ("current", "baseline", "kwargs", "match"),
    [
        ([1, 2], [1, 2], {}, "2-D"),
        ([[1, 2]], [[1, 2, 3]], {}, "same shape"),
        # A bad row is refused even when it would be insufficient.
        ([[5, 5], [0, -1]], [[5, 5], [1, 1]], {"min_count": 100}, "non-negative integer"),
        ([[5, 5]], [[5, 2.5]], {}, "non-negative integer"),
        ([[5, 5]], [[5, 5]], {"points": [0.0, 1.0]}, "ordered"),
        ([[5, 5]], [[5, 5]], {"epsilon": 0.0}, "epsilon"),
    ],
)
def test_compare_distributions_rows_rejects_bad_input(current, baseline, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_distributions_rows(current, baseline, ordered=False, **kwargs)


@st.composite
def proportion_arrays(draw):
    size = draw(st.integers(1, 30))
    n1 = draw(hnp.arrays(np.int64, size, elements=st.integers(0, 5_000)))
    n2 = draw(hnp.arrays(np.int64, size, elements=st.integers(0, 5_000)))
    # Successes anywhere from none to all, so that pooled proportions of 0 and 1 occur.
    f1 = draw(hnp.arrays(np.float64, size, elements=st.sampled_from([0.0, 0.01, 0.3, 1.0])))
    f2 = draw(hnp.arrays(np.float64, size, elements=st.sampled_from([0.0, 0.02, 0.5, 1.0])))
    return (n1 * f1).astype(np.int64), n1, (n2 * f2).astype(np.int64), n2


@settings(max_examples=150, deadline=None)
@given(proportion_arrays(), st.integers(0, 40))
def test_every_position_of_two_proportion_tests_matches_scipy(arrays, min_trials):
    x1, n1, x2, n2 = arrays
    results = two_proportion_tests(x1, n1, x2, n2, min_trials=min_trials)
    assert len(results) == x1.size
    for res, a, n, b, m in zip(
        results, x1.tolist(), n1.tolist(), x2.tolist(), n2.tolist(), strict=True
    ):
        assert (res.current_successes, res.current_trials) == (a, n)
        assert (res.baseline_successes, res.baseline_trials) == (b, m)
        assert type(res.current_trials) is int
        if min(n, m) < max(min_trials, 1):
            assert res.status == INSUFFICIENT
            assert (res.difference, res.z, res.p_value) == (None, None, None)
            continue
        assert res.status == OK
        assert res.difference == pytest.approx(a / n - b / m, rel=REL, abs=ABS)
        if a + b in (0, n + m):
            assert (res.z, res.p_value) == (0.0, 1.0)
            continue
        ref = chi2_contingency([[a, n - a], [b, m - b]], correction=False)
        assert type(res.z) is float and type(res.p_value) is float
        assert res.z**2 == pytest.approx(ref.statistic, rel=1e-8, abs=ABS)
        assert np.sign(res.z) == np.sign(a / n - b / m)
        assert res.p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)


def test_two_proportion_tests_reject_what_the_single_test_rejects():
    with pytest.raises(ValueError, match=r"baseline: need 0 <= successes <= trials, got 6/5"):
        two_proportion_tests([1, 1], [5, 5], [1, 6], [5, 5])
    with pytest.raises(ValueError, match="one value per test"):
        two_proportion_tests([1], [5], [1, 2], [5, 5])
    with pytest.raises(TypeError):
        two_proportion_tests([1.5], [5], [1], [5])
    assert two_proportion_tests([], [], [], []) == []


# --- doubling test -----------------------------------------------------------------------


def doubling_reference(current: list[int], baseline: list[int]) -> float:
    """Per bin with events now, scipy's exact binomial test of the bin's count among the
    bin's events of both sides, at the share a doubled rate would give the current side."""
    n, m = sum(current), sum(baseline)
    p0 = 2 * n / (2 * n + m)
    ps = [
        binomtest(x, x + y, p0, alternative="greater").pvalue
        for x, y in zip(current, baseline, strict=True)
        if x > 0
    ]
    return min(1.0, min(ps, default=1.0) * len(current))


@settings(max_examples=200, deadline=None)
@given(count_pairs())
def test_doubling_matches_scipy_binomial_tests_per_bin(pair):
    c, b = (list(map(int, v)) for v in pair)
    assert doubling_test(c, b) == pytest.approx(doubling_reference(c, b), rel=1e-7, abs=1e-300)


def test_doubling_a_rare_outcome_that_jumps_is_found_and_one_stray_event_is_not():
    # answered, refused, blocked, safe completion, error: errors almost never happen here.
    baseline = [100_000, 3_000, 200, 500, 30]
    # One error in 46 requests: chi-square calls it a shift, the exact test does not.
    stray = [45, 0, 0, 0, 1]
    assert chi2_homogeneity(stray, baseline)[2] < 1e-8
    assert doubling_test(stray, baseline) > 0.1
    # 6 errors in 46 (13 % against 0.2 %): an outcome shift, at 1e-6.
    assert doubling_test([38, 2, 0, 0, 6], baseline) < 1e-6
    # Nothing now in any bin but the usual one: no evidence.
    assert doubling_test([46, 0, 0, 0, 0], baseline) == 1.0


def test_doubling_keeps_its_level_on_sparse_windows_where_chi_square_does_not():
    """Null simulation: 20,000 windows of 46 requests drawn from the baseline's own shares
    (one of them at twice its share: the test's boundary). The doubling test fires at most
    as often as its level; Pearson's chi-square, on the unchanged shares, far more often."""
    rng = np.random.default_rng(7)
    baseline = np.array([95_500, 3_500, 300, 500, 200])
    shares = baseline / baseline.sum()
    doubled = shares.copy()
    doubled[4] *= 2
    doubled[0] -= shares[4]
    level, sims = 0.01, 20_000
    tolerance = 3 * math.sqrt(level * (1 - level) / sims)
    for probabilities in (shares, doubled):
        windows = rng.multinomial(46, probabilities, size=sims)
        rows = compare_distributions_rows(windows, np.tile(baseline, (sims, 1)), ordered=False)
        fired = np.mean([r.doubling_p_value <= level for r in rows])
        assert fired <= level + tolerance
    rows = compare_distributions_rows(
        rng.multinomial(46, shares, size=sims), np.tile(baseline, (sims, 1)), ordered=False
    )
    assert np.mean([r.chi2_p_value <= level for r in rows]) > 3 * level
