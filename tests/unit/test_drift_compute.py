"""Drift from the stored histograms and counters, against scipy on the same sums.

A warehouse on SQLite gets random histograms and counters for several windows and segments
through the sink; `compute_drift` must then store, for each segment of a window, exactly the
statistics that scipy (or plain numpy) gives on the baseline and current sums that this test
adds up itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sqlalchemy import select

from pipelines.drift.compute import BaselineCache, compute_drift
from pipelines.metrics.catalog import RATES, counter_ids
from pipelines.metrics.distributions import DISTRIBUTIONS, distribution
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.settings import DriftSettings
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.ledger import closed_windows
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
DIMS = ("locale", "model_version")
LOCALES = ("de-DE", "en-US", "fr-FR")
MODELS = ("m-1", "m-2")
WINDOWS = 6
# The numerators drawn as binomials of the events: those of rates over events only. One that
# is also the numerator of a rate over a narrower counter (injection_successes, of
# successful_injection_rate and injection_success_rate) stays 0, so it never exceeds that one.
_OVER_EVENTS = ("events", "events_seen")
_DRAWN_OVER_EVENTS = {r.numerator for r in RATES if r.denominator in _OVER_EVENTS} - {
    r.numerator for r in RATES if r.denominator not in _OVER_EVENTS
}


def _segment(locale: str, model: str) -> dict[str, str]:
    seg = dict.fromkeys(SEGMENT_DIMENSIONS, "*")
    seg.update(locale=locale, model_version=model)
    return seg


def _random_data(seed: int):
    """(window index, locale, model) -> (counters, {distribution id: counts})."""
    rng = np.random.default_rng(seed)
    data = {}
    for w in range(WINDOWS):
        for loc in LOCALES:
            for model in MODELS:
                if rng.random() < 0.15:
                    continue  # some segments are missing from some windows
                events = int(rng.integers(0, 400))
                counters = dict.fromkeys(counter_ids(), 0)
                counters["events"] = counters["events_seen"] = events
                for r in RATES:
                    if r.numerator in _DRAWN_OVER_EVENTS:
                        counters[r.numerator] = int(rng.binomial(events, 0.03 + 0.05 * (w == 5)))
                counters["unflagged_events"] = events - counters["violations"]
                counters["over_refusals"] = int(rng.binomial(counters["unflagged_events"], 0.1))
                hists = {}
                for d in DISTRIBUTIONS:
                    p = rng.dirichlet(np.ones(d.bins) * 0.7)
                    hists[d.id] = rng.multinomial(events, p)
                data[w, loc, model] = (counters, hists)
    return data


def _load(engine, data) -> None:
    sink = WarehouseSink(engine)
    for batch, w in enumerate(range(WINDOWS)):
        start = T0 + timedelta(minutes=5 * w)
        aggs, hist_rows = [], []
        for (wi, loc, model), (counters, hists) in data.items():
            if wi != w:
                continue
            key = {"window_start": start, "dimension_set": ",".join(DIMS), **_segment(loc, model)}
            aggs.append(
                {
                    **key,
                    "window_end": start + timedelta(minutes=5),
                    **counters,
                    "users_sketch": None,
                }
            )
            for dist, counts in hists.items():
                hist_rows += [
                    {**key, "distribution": dist, "bin": b, "count": int(n)}
                    for b, n in enumerate(counts)
                    if n
                ]
        sink.commit(
            BatchResult(
                query_id="q",
                batch_id=batch,
                topic="t",
                started_at=start,
                input_rows=1,
                late_rows=0,
                aggregated_rows=1,
                watermark_before=None,
                watermark_after=None,
                offsets=[OffsetRange("t", 0, batch * 10, batch * 10 + 9, 10)],
                aggregates=aggs,
                histograms=hist_rows,
            )
        )


@pytest.fixture
def warehouse(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    migrate(engine)
    data = _random_data(seed=7)
    _load(engine, data)
    return engine, data


def _compute(engine, windows, settings):
    sink = WarehouseSink(engine)
    with engine.begin() as conn:
        return compute_drift(conn, sink.tables, windows, dimensions=DIMS, settings=settings, now=T0)


def _rows(engine, table):
    sink = WarehouseSink(engine)
    t = getattr(sink.tables, table)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t)).mappings()]


def _sums(data, windows, segment_of):
    """Sum counters and histograms over `windows` per (locale, model) of `segment_of`."""
    counters: dict = {}
    hists: dict = {}
    for (w, loc, model), (c, h) in data.items():
        if w not in windows:
            continue
        seg = segment_of(loc, model)
        if seg is None:
            continue
        acc = counters.setdefault(seg, dict.fromkeys(counter_ids(), 0))
        for k, v in c.items():
            acc[k] += v
        hacc = hists.setdefault(
            seg, {d.id: np.zeros(d.bins, dtype=np.int64) for d in DISTRIBUTIONS}
        )
        for k, v in h.items():
            hacc[k] += v
    return counters, hists


def _expected_psi(c, b, eps=1e-4):
    p, q = c / c.sum(), b / b.sum()
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return float(np.sum((p - q) * np.log(p / q)))


def _check_distribution_row(row, cur, base, min_events):
    d = distribution(row["distribution"])
    assert row["current_n"] == int(cur.sum()) and row["baseline_n"] == int(base.sum())
    if cur.sum() < min_events or base.sum() < min_events:
        assert row["status"] == "insufficient_data"
        assert row["psi"] is None and row["chi2_p_value"] is None
        assert row["doubling_p_value"] is None
        return
    assert row["status"] == "ok"
    assert row["psi"] == pytest.approx(_expected_psi(cur, base), rel=1e-9)
    assert row["js_distance"] == pytest.approx(jensenshannon(cur, base, base=2), abs=1e-9)
    keep = (cur + base) > 0
    table = np.vstack([cur[keep], base[keep]])
    if keep.sum() >= 2:
        chi2 = stats.chi2_contingency(table, correction=False)
        assert row["chi2_statistic"] == pytest.approx(chi2.statistic, rel=1e-9)
        assert row["chi2_p_value"] == pytest.approx(chi2.pvalue, rel=1e-8, abs=1e-300)
    # Some bin's share more than doubled: scipy's binomial tail per bin, x the bins.
    n, m = int(cur.sum()), int(base.sum())
    tails = [
        stats.binom.sf(x - 1, x + y, 2 * n / (2 * n + m))
        for x, y in zip(cur.tolist(), base.tolist(), strict=True)
        if x > 0
    ]
    assert row["doubling_p_value"] == pytest.approx(
        min(1.0, min(tails) * len(cur)), rel=1e-7, abs=1e-300
    )
    if d.ordered:
        points = np.array(d.points())
        ks = stats.ks_2samp(np.repeat(points, cur), np.repeat(points, base), method="asymp")
        assert row["ks_statistic"] == pytest.approx(ks.statistic, rel=1e-9)
        root = np.sqrt(cur.sum() * base.sum() / (cur.sum() + base.sum()))
        expected_p = stats.kstwobign.sf((root + 0.12 + 0.11 / root) * ks.statistic)
        assert row["ks_p_value"] == pytest.approx(expected_p, rel=1e-8, abs=1e-300)
        assert abs(row["ks_p_value"] - ks.pvalue) <= 0.035
        w = stats.wasserstein_distance(points, points, cur, base)
        assert row["wasserstein"] == pytest.approx(w, rel=1e-9, abs=1e-12)
    else:
        assert row["ks_statistic"] is None and row["wasserstein"] is None


def test_trailing_baseline_statistics_equal_scipy_on_the_summed_histograms(warehouse):
    engine, data = warehouse
    settings = DriftSettings(lookback="15 minutes", min_events=30)
    run = _compute(engine, [T0 + timedelta(minutes=25)], settings)
    assert run.windows == 1
    cur_counts, cur_hists = _sums(data, {5}, lambda loc, m: (loc, m))
    base_counts, base_hists = _sums(data, {2, 3, 4}, lambda loc, m: (loc, m))
    drift = _rows(engine, "drift")
    assert {(r["locale"], r["model_version"]) for r in drift} == set(cur_counts)
    assert len(drift) == len(cur_counts) * len(DISTRIBUTIONS)
    empty = {d.id: np.zeros(d.bins, dtype=np.int64) for d in DISTRIBUTIONS}
    for row in drift:
        seg = (row["locale"], row["model_version"])
        assert row["baseline"] == "trailing 15 minutes"
        _check_distribution_row(
            row,
            cur_hists[seg][row["distribution"]],
            base_hists.get(seg, empty)[row["distribution"]],
            settings.min_events,
        )


def test_rate_tests_equal_scipy_and_q_values_are_bh_across_the_windows_segments(warehouse):
    engine, data = warehouse
    settings = DriftSettings(lookback="1 day", min_events=30)
    _compute(engine, [T0 + timedelta(minutes=25)], settings)
    cur, _ = _sums(data, {5}, lambda loc, m: (loc, m))
    base, _ = _sums(data, {0, 1, 2, 3, 4}, lambda loc, m: (loc, m))
    rows = _rows(engine, "rate_tests")
    assert len(rows) == len(cur) * len(RATES)
    by_rate: dict = {}
    for row in rows:
        seg = (row["locale"], row["model_version"])
        r = next(x for x in RATES if x.id == row["rate_id"])
        x1, n1 = cur[seg][r.numerator], cur[seg][r.denominator]
        b = base.get(seg, dict.fromkeys(counter_ids(), 0))
        x2, n2 = b[r.numerator], b[r.denominator]
        assert (row["current_numerator"], row["current_denominator"]) == (x1, n1)
        assert (row["baseline_numerator"], row["baseline_denominator"]) == (x2, n2)
        if n1 < 30 or n2 < 30:
            assert row["status"] == "insufficient_data" and row["p_value"] is None
            assert row["q_value"] is None
            continue
        assert row["difference"] == pytest.approx(x1 / n1 - x2 / n2, abs=1e-12)
        if 0 < x1 + x2 < n1 + n2:
            table = [[x1, n1 - x1], [x2, n2 - x2]]
            expected = stats.chi2_contingency(table, correction=False).pvalue
            assert row["p_value"] == pytest.approx(expected, rel=1e-8, abs=1e-300)
        else:
            assert row["p_value"] == 1.0
        by_rate.setdefault(row["rate_id"], []).append(row)
    assert by_rate, "no rate had enough data on both sides"
    for rate_rows in by_rate.values():
        expected_q = stats.false_discovery_control([r["p_value"] for r in rate_rows], method="bh")
        assert [r["q_value"] for r in rate_rows] == pytest.approx(list(expected_q), rel=1e-9)


def test_pinned_period_and_reference_segment_choose_the_baseline(warehouse):
    engine, data = warehouse
    settings = DriftSettings(
        baseline="pinned",
        pinned_from=T0,
        pinned_to=T0 + timedelta(minutes=10),
        reference_segment={"model_version": "m-1"},
        min_events=1,
    )
    _compute(engine, [T0 + timedelta(minutes=20)], settings)
    base_counts, base_hists = _sums(data, {0, 1}, lambda loc, m: (loc, m) if m == "m-1" else None)
    cur_counts, cur_hists = _sums(data, {4}, lambda loc, m: (loc, m))
    drift = _rows(engine, "drift")
    assert drift
    for row in drift:
        seg = (row["locale"], row["model_version"])
        ref = (row["locale"], "m-1")
        assert row["baseline"] == "pinned 2026-11-20T00:00Z..2026-11-20T00:10Z of model_version=m-1"
        expected_base = base_hists[ref][row["distribution"]] if ref in base_hists else None
        assert row["baseline_n"] == (int(expected_base.sum()) if expected_base is not None else 0)
        assert row["current_n"] == int(cur_hists[seg][row["distribution"]].sum())


def test_recomputing_replaces_rows_and_gives_the_same_result(warehouse):
    engine, _ = warehouse
    settings = DriftSettings(lookback="1 day")
    windows = [T0 + timedelta(minutes=5 * w) for w in range(WINDOWS)]
    _compute(engine, windows, settings)
    first = sorted(
        _rows(engine, "drift"),
        key=lambda r: (r["window_start"], r["locale"], r["model_version"], r["distribution"]),
    )
    _compute(engine, windows, settings)
    second = sorted(
        _rows(engine, "drift"),
        key=lambda r: (r["window_start"], r["locale"], r["model_version"], r["distribution"]),
    )
    assert first == second
    # The first window has no history: everything is insufficient, nothing is NaN.
    firsts = [r for r in first if r["window_start"].replace(tzinfo=UTC) == T0]
    assert firsts and all(r["status"] == "insufficient_data" for r in firsts)
    for r in first:
        for k in ("psi", "js_distance", "chi2_p_value", "ks_p_value", "wasserstein"):
            assert r[k] is None or np.isfinite(r[k])


def test_closed_windows_are_those_a_watermark_move_passes(warehouse):
    engine, _ = warehouse
    sink = WarehouseSink(engine)
    with engine.connect() as conn:
        got = closed_windows(
            conn,
            sink.tables,
            ",".join(DIMS),
            after=T0 + timedelta(minutes=10),
            watermark=T0 + timedelta(minutes=20),
        )
    # Windows end at start + 5 min: ends in (10, 20] are the windows starting at 10 and 15.
    assert got == [T0 + timedelta(minutes=10), T0 + timedelta(minutes=15)]


@pytest.mark.parametrize("lookback", ["10 minutes", "1 day"])
def test_a_sliding_cache_gives_the_rows_of_a_full_recomputation(warehouse, lookback):
    engine, _ = warehouse
    settings = DriftSettings(lookback=lookback, min_events=30)
    windows = [T0 + timedelta(minutes=5 * w) for w in range(WINDOWS)]

    def key(r):
        return (r["window_start"], r["locale"], r["model_version"], r.get("distribution"))

    for w in windows:  # no cache: every baseline read in full
        _compute(engine, [w], settings)
    full = sorted(_rows(engine, "drift"), key=key)
    full_tests = sorted(_rows(engine, "rate_tests"), key=lambda r: (*key(r), r["rate_id"]))

    cache = BaselineCache()
    sink = WarehouseSink(engine)
    for w in windows:  # one window at a time, as the job closes them
        with engine.begin() as conn:
            compute_drift(
                conn, sink.tables, [w], dimensions=DIMS, settings=settings, now=T0, cache=cache
            )
    assert sorted(_rows(engine, "drift"), key=key) == full
    assert sorted(_rows(engine, "rate_tests"), key=lambda r: (*key(r), r["rate_id"])) == (
        full_tests
    )


def _check_window(engine, data, w, base_windows, min_events, reference=lambda loc, m: (loc, m)):
    """Every drift and rate-test row of window `w` against scipy on the sums this test adds
    up: the window's, and over `base_windows` those of each segment's `reference`."""
    start = T0 + timedelta(minutes=5 * w)
    cur_counts, cur_hists = _sums(data, {w}, lambda loc, m: (loc, m))
    base_counts, base_hists = _sums(data, set(base_windows), lambda loc, m: (loc, m))
    empty_hists = {d.id: np.zeros(d.bins, dtype=np.int64) for d in DISTRIBUTIONS}
    empty_counts = dict.fromkeys(counter_ids(), 0)

    def of_window(table):
        return [r for r in _rows(engine, table) if r["window_start"].replace(tzinfo=UTC) == start]

    drift = of_window("drift")
    assert len(drift) == len(cur_counts) * len(DISTRIBUTIONS)
    for row in drift:
        seg = (row["locale"], row["model_version"])
        ref = reference(*seg)
        _check_distribution_row(
            row,
            cur_hists[seg][row["distribution"]],
            base_hists.get(ref, empty_hists)[row["distribution"]],
            min_events,
        )
    tests = of_window("rate_tests")
    assert len(tests) == len(cur_counts) * len(RATES)
    by_rate: dict = {}
    for row in tests:
        seg = (row["locale"], row["model_version"])
        r = next(x for x in RATES if x.id == row["rate_id"])
        b = base_counts.get(reference(*seg), empty_counts)
        x1, n1 = cur_counts[seg][r.numerator], cur_counts[seg][r.denominator]
        x2, n2 = b[r.numerator], b[r.denominator]
        assert (row["current_numerator"], row["current_denominator"]) == (x1, n1)
        assert (row["baseline_numerator"], row["baseline_denominator"]) == (x2, n2)
        if n1 < min_events or n2 < min_events:
            assert row["status"] == "insufficient_data" and row["q_value"] is None
            continue
        if 0 < x1 + x2 < n1 + n2:
            table = [[x1, n1 - x1], [x2, n2 - x2]]
            expected = stats.chi2_contingency(table, correction=False).pvalue
            assert row["p_value"] == pytest.approx(expected, rel=1e-8, abs=1e-300)
        else:
            assert row["p_value"] == 1.0
        by_rate.setdefault(row["rate_id"], []).append(row)
    for rate_rows in by_rate.values():
        expected_q = stats.false_discovery_control([r["p_value"] for r in rate_rows], method="bh")
        assert [r["q_value"] for r in rate_rows] == pytest.approx(list(expected_q), rel=1e-9)


@pytest.mark.parametrize("calls", [[[0, 1], [2, 3, 4], [5]], [[0, 1, 2, 3, 4, 5]], [[3], [4, 5]]])
@pytest.mark.parametrize("lookback", [2, 4])
def test_windows_closed_several_at_a_time_equal_scipy_on_their_trailing_sums(
    warehouse, calls, lookback
):
    # A lookback of 2 windows: each window also drops one from its baseline.
    engine, data = warehouse
    settings = DriftSettings(lookback=f"{5 * lookback} minutes", min_events=30)
    cache = BaselineCache()
    sink = WarehouseSink(engine)
    for call in calls:
        with engine.begin() as conn:
            run = compute_drift(
                conn,
                sink.tables,
                [T0 + timedelta(minutes=5 * w) for w in call],
                dimensions=DIMS,
                settings=settings,
                now=T0,
                cache=cache,
            )
        assert run.windows == len(call)
    for w in (w for call in calls for w in call):
        _check_window(engine, data, w, range(max(0, w - lookback), w), settings.min_events)


def test_a_pinned_baseline_of_another_segment_gives_scipy_on_its_sums(warehouse):
    engine, data = warehouse
    settings = DriftSettings(
        baseline="pinned",
        pinned_from=T0,
        pinned_to=T0 + timedelta(minutes=10),
        reference_segment={"model_version": "m-2"},
        min_events=20,
    )
    _compute(engine, [T0 + timedelta(minutes=5 * w) for w in (5, 2, 3)], settings)
    for w in (2, 3, 5):
        _check_window(engine, data, w, {0, 1}, 20, reference=lambda loc, m: (loc, "m-2"))


def test_windows_further_apart_than_the_lookback_get_their_own_baselines(warehouse):
    engine, data = warehouse
    settings = DriftSettings(lookback="5 minutes", min_events=10)
    _compute(engine, [T0 + timedelta(minutes=5 * w) for w in (1, 3, 5)], settings)
    for w in (1, 3, 5):
        _check_window(engine, data, w, {w - 1}, 10)


def test_retired_distributions_and_bins_outside_a_distribution_are_ignored(warehouse):
    engine, data = warehouse
    sink = WarehouseSink(engine)
    start = T0 + timedelta(minutes=25)
    loc, model = next((loc, m) for (w, loc, m) in sorted(data) if w == 5)
    key = {"window_start": start, "dimension_set": ",".join(DIMS), **_segment(loc, model)}
    outcome = distribution("outcome")
    stray = [
        {**key, "distribution": "retired_metric", "bin": 0, "count": 500},
        {**key, "distribution": "outcome", "bin": outcome.bins, "count": 500},
        {**key, "distribution": "outcome", "bin": -1, "count": 500},
    ]
    with engine.begin() as conn:
        conn.execute(sink.tables.hist.insert(), stray)
    settings = DriftSettings(lookback="1 day", min_events=30)
    _compute(engine, [start], settings)
    assert {r["distribution"] for r in _rows(engine, "drift")} == {d.id for d in DISTRIBUTIONS}
    _check_window(engine, data, 5, range(5), settings.min_events)


def test_windows_in_any_order_and_repeated_give_the_rows_of_sorted_windows(warehouse):
    engine, _ = warehouse
    settings = DriftSettings(lookback="10 minutes")
    windows = [T0 + timedelta(minutes=5 * w) for w in range(WINDOWS)]

    def key(r):
        return (r["window_start"], r["locale"], r["model_version"], r["distribution"])

    in_order = _compute(engine, windows, settings)
    expected = sorted(_rows(engine, "drift"), key=key)
    shuffled = [windows[i] for i in (4, 1, 5, 0, 3, 2, 4)]
    run = _compute(engine, shuffled, settings)
    assert sorted(_rows(engine, "drift"), key=key) == expected
    assert run.windows == len(shuffled)
    # A window listed twice counts its segments twice, as each listing is computed.
    per_window = {r["window_start"]: 0 for r in expected}
    for r in _rows(engine, "rate_tests"):
        if r["rate_id"] == RATES[0].id:
            per_window[r["window_start"]] += 1
    assert in_order.segments == sum(per_window.values())
    assert run.segments == in_order.segments + per_window[windows[4].replace(tzinfo=None)]
