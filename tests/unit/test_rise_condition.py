"""The `rise` condition: the rate shown to be more than `factor` x the segment's baseline.

The p-value is checked against scipy's exact binomial test of the conditional count, the
level against Poisson draws at the null's edge, and the rule's verdict against those.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, poisson

from pipelines.alerting.early import can_fire_early, early_evidence, early_reference
from pipelines.alerting.errors import RuleError
from pipelines.alerting.evaluate import OpenWindow, SegmentWindow, measure
from pipelines.alerting.loader import load_rules, parse_rules
from pipelines.alerting.model import Rise, Rule, Threshold
from pipelines.metrics.buckets import BucketSums
from pipelines.metrics.stats import rate_ratio_p_value, wilson_interval

SEG = (("locale", "de-DE"),)


def rule(**overrides) -> Rule:
    fields = {
        "name": "HarmfulOutputRise",
        "metric": "violation_rate",
        "by": ("locale",),
        "severity": "sev2",
        "owner": "trust-safety-oncall",
        "runbook": "runbooks/HarmfulOutputRateHigh.md",
        "summary": "{segment}",
        "rise": Rise(factor=3.0, alpha=1e-4),
        "min_events": 1,
    }
    fields.update(overrides)
    return Rule(**fields)


# --- the statistic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "n", "y", "m", "factor"),
    [
        (5, 100, 10, 10_000, 2.0),
        (1, 50, 0, 20_000, 3.0),
        (12, 400, 300, 80_000, 1.5),
        (3, 16, 2, 32_000, 5.0),
        (40, 1000, 40, 1000, 1.0),
    ],
)
def test_p_value_is_the_exact_binomial_test_of_the_conditional_count(x, n, y, m, factor):
    p0 = factor * n / (factor * n + m)
    expected = binomtest(x, x + y, p0, alternative="greater").pvalue
    assert rate_ratio_p_value(x, n, y, m, factor) == pytest.approx(expected, rel=1e-9)


def test_nothing_to_test_is_a_p_value_of_one_and_bad_counts_are_refused():
    assert rate_ratio_p_value(0, 100, 5, 1000, 2.0) == 1.0
    assert rate_ratio_p_value(3, 100, 0, 0, 2.0) == 1.0
    with pytest.raises(ValueError, match="numerator <= denominator"):
        rate_ratio_p_value(5, 4, 0, 10)
    with pytest.raises(ValueError, match="factor"):
        rate_ratio_p_value(1, 4, 0, 10, 0.0)


def test_an_empty_short_baseline_makes_no_single_event_conclusive_but_a_long_one_does():
    # 0 events in 200 baseline events says the rate is below ~1.5 %, not that it is 0.
    assert rate_ratio_p_value(1, 100, 0, 200, 2.0) >= 0.5
    assert rate_ratio_p_value(3, 100, 0, 2_000_000, 2.0) < 1e-6


def test_the_level_holds_at_the_edge_of_the_null():
    """Draws with the current rate exactly `factor` x the baseline's: rejections <= alpha."""
    rng = np.random.default_rng(7)
    factor, alpha, draws = 2.0, 0.01, 20_000
    n, m, rate = 500, 50_000, 0.004
    x = rng.poisson(factor * rate * n, draws)
    y = rng.poisson(rate * m, draws)
    rejected = sum(
        rate_ratio_p_value(int(a), n, int(b), m, factor) <= alpha for a, b in zip(x, y, strict=True)
    )
    # Binomial tolerance of the simulation (3 SE above alpha).
    assert rejected / draws <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / draws)
    # And it has teeth: at 3x the factor it rejects most of the time.
    x = rng.poisson(3 * factor * rate * n, 2000)
    y = rng.poisson(rate * m, 2000)
    power = np.mean(
        [
            rate_ratio_p_value(int(a), n, int(b), m, factor) <= alpha
            for a, b in zip(x, y, strict=True)
        ]
    )
    assert power > 0.5


def test_effective_counts_weaken_the_test_as_the_design_effect_grows():
    r = Rise(factor=2.0, alpha=0.001)
    base = (20, 10_000)
    ps = [r.p_value(12, 500, base, d) for d in (1.0, 2.0, 4.0)]
    assert ps == sorted(ps) and ps[0] < ps[-1]
    assert r.p_value(12, 500, base, float("inf")) == 1.0
    assert r.p_value(12, 500, None) is None
    assert ps[1] == pytest.approx(rate_ratio_p_value(6, 250, 20, 10_000, 2.0))


# --- the rule ----------------------------------------------------------------------------------


def test_measure_fires_exactly_when_the_p_value_is_at_most_alpha():
    r = rule(rise=Rise(factor=3.0, alpha=1e-4))
    base = (50, 100_000)  # 0.05 %
    for x in range(0, 12):
        window = SegmentWindow(SEG, x, 1000, baseline_counts=base)
        p0 = 3.0 * 1000 / (3.0 * 1000 + 100_000)
        p = binomtest(x, x + 50, p0, alternative="greater").pvalue if x else 1.0
        assert measure(r, window).condition == (p <= 1e-4), x
    # No baseline: false.
    assert not measure(r, SegmentWindow(SEG, 50, 1000)).condition


def test_clustered_events_need_more_evidence_unless_the_rule_counts_events():
    # 10 violations of 1,000 events against a 0.05 % baseline: conclusive from 10 users...
    spread = BucketSums(tuple([1] * 10 + [0] * 22), tuple([31] * 24 + [32] * 8))
    # ...not from one user who sent them all.
    one = BucketSums(tuple([10] + [0] * 31), tuple([31] * 24 + [32] * 8))
    base = (50, 100_000)
    r = rule()
    assert measure(r, SegmentWindow(SEG, 10, 1000, buckets=spread, baseline_counts=base)).condition
    assert not measure(r, SegmentWindow(SEG, 10, 1000, buckets=one, baseline_counts=base)).condition
    counts_events = rule(concentrated=True)
    window = SegmentWindow(SEG, 10, 1000, buckets=one, baseline_counts=base)
    assert measure(counts_events, window).condition


def test_rise_and_threshold_combine_with_match():
    base = (50, 100_000)
    window = SegmentWindow(SEG, 10, 1000, baseline_counts=base)  # 1 %: a rise, below 5 %
    both = rule(threshold=Threshold(above=0.05))
    assert not measure(both, window).condition
    assert measure(rule(threshold=Threshold(above=0.05), match="any"), window).condition


def test_early_reference_is_factor_times_the_baselines_upper_bound():
    r = rule(rise=Rise(factor=3.0, alpha=1e-4))
    upper = wilson_interval(50, 100_000)[1]
    assert early_reference(r, 0.0005, (50, 100_000)) == pytest.approx(3.0 * upper)
    assert early_reference(r, 0.0005, None) is None
    assert can_fire_early(r)
    # An open window fires once the anytime-valid test clears 3x the bound...
    many = OpenWindow(SEG, 30, 1000, baseline_rate=0.0005, baseline_counts=(50, 100_000))
    assert early_evidence(r, many) is not None
    # ...not on a couple of events, nor without a baseline's counts.
    few = OpenWindow(SEG, 2, 1000, baseline_rate=0.0005, baseline_counts=(50, 100_000))
    assert early_evidence(r, few) is None
    assert early_evidence(r, OpenWindow(SEG, 30, 1000, baseline_rate=0.0005)) is None


# --- the YAML ----------------------------------------------------------------------------------

YAML = """\
rules:
  - name: HarmfulOutputRise
    metric: {metric}
    by: stored
    condition:
      rise: {rise}
    horizons: [5 minutes, 1 hour]
    severity: sev2
    owner: trust-safety-oncall
    runbook: runbooks/HarmfulOutputRateHigh.md
    summary: "{{value:.2%}} in {{segment}}"
"""


def test_rise_is_read_with_its_factor_and_alpha_and_allows_horizons():
    (r,) = parse_rules(YAML.format(metric="violation_rate", rise="{factor: 3, alpha: 1e-6}"))
    assert r.rise == Rise(factor=3.0, alpha=1e-6)
    assert r.horizons == (timedelta(minutes=5), timedelta(hours=1))


@pytest.mark.parametrize(
    ("metric", "rise", "reason"),
    [
        ("violation_rate", "{factor: 0.5, alpha: 0.001}", "at least 1"),
        ("violation_rate", "{factor: 3, alpha: 0}", "greater than 0"),
        ("violation_rate", "{factor: 3}", "missing"),
        ("violation_rate", "{factor: 3, alpha: 0.01, q: 1}", "unknown key"),
    ],
)
def test_rise_mistakes_are_named(tmp_path: Path, metric, rise, reason):
    path = tmp_path / "r.yaml"
    path.write_text(YAML.format(metric=metric, rise=rise))
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert info.value.field.startswith("condition.rise")
    assert reason in info.value.reason


def test_rise_needs_a_baseline_so_the_poisson_bound_is_not_met_by_noise():
    """On a segment at its baseline rate for a simulated week of windows, a 3x rise at
    alpha 1e-4 fires in at most about alpha x windows (here: none expected)."""
    rng = np.random.default_rng(11)
    r = rule(rise=Rise(factor=3.0, alpha=1e-4))
    base = (200, 400_000)
    fired = 0
    for x in poisson.rvs(0.0005 * 150, size=2016, random_state=rng):
        fired += measure(r, SegmentWindow(SEG, int(x), 150, baseline_counts=base)).condition
    assert fired <= 1
    assert T0.tzinfo is UTC


T0 = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)


# --- over horizons -----------------------------------------------------------------------------


def test_a_rise_over_an_hour_sums_the_windows_against_the_latest_baseline():
    """RecentWindows: the hour's counts, the latest window's baseline counts, and the
    shorter horizon confirmed only while its own rate is above factor x baseline."""
    from pipelines.alerting.inputs import RecentWindows, WindowData
    from pipelines.segments import SEGMENT_DIMENSIONS

    step = timedelta(minutes=5)
    values = {d: "x" for d in SEGMENT_DIMENSIONS} | {"locale": "de-DE"}
    full = tuple(values[d] for d in SEGMENT_DIMENSIONS)
    r = rule(rise=Rise(factor=3.0, alpha=1e-6), horizons=(step, timedelta(hours=1)))
    base = (40, 100_000)  # 0.04 %
    recent = RecentWindows([r], step)
    verdicts = []
    # 12 windows of 40 events: 2 violations in each of the first 11 (5 %), none in the last.
    for i in range(12):
        w = T0 + i * step
        row = values | {"events": 40, "violations": 2 if i < 11 else 0, "bucket_sums": None}
        test = {
            "baseline_numerator": base[0] + i,  # the baseline moves on: the latest one counts
            "baseline_denominator": base[1] + 40 * i,
            "q_value": None,
            "difference": None,
        }
        recent.add(w, WindowData(w, [row], {("violation_rate", full): test}, {}))
        (got,) = recent.inputs(r, w)
        assert (got.numerator, got.denominator) == (2 * min(i + 1, 11), 40 * (i + 1))
        assert got.baseline_counts == (base[0] + i, base[1] + 40 * i)
        latest_rate = row["violations"] / 40
        assert got.confirmed == (latest_rate * got.baseline_counts[1] > 3 * got.baseline_counts[0])
        p = binomtest(
            got.numerator,
            got.numerator + got.baseline_counts[0],
            3 * got.denominator / (3 * got.denominator + got.baseline_counts[1]),
            alternative="greater",
        ).pvalue
        verdicts.append(measure(r, got).condition)
        assert verdicts[-1] == (p <= 1e-6 and got.confirmed), i
    # It fires once the hour holds enough evidence, and stops with the clean last window.
    assert verdicts[0] is False and True in verdicts and verdicts[-1] is False


def test_a_new_low_volume_segment_harmful_from_its_first_window_pages_within_the_hour():
    """HarmfulOutputSustained's shape: threshold 2 % with its own min_events 100 or a rise,
    over [5 minutes, 1 hour]. A new segment (no baseline) of 14 events a window, 9 %
    harmful from its first window: no window reaches 100 events, but the hour does; the
    shorter horizon confirms on its own few events (point estimate past the limit)."""
    from pipelines.alerting.inputs import RecentWindows, WindowData
    from pipelines.segments import SEGMENT_DIMENSIONS

    step = timedelta(minutes=5)
    values = {d: "x" for d in SEGMENT_DIMENSIONS} | {"locale": "de-DE"}
    r = rule(
        match="any",
        threshold=Threshold(above=0.02, min_events=100),
        rise=Rise(factor=2.0, alpha=1e-6),
        horizons=(step, timedelta(hours=1)),
    )
    harmful = [1, 2, 1, 1, 2, 0, 1, 2, 1, 1, 2, 1]  # of 14 events each (~9 %); none in 6
    recent = RecentWindows([r], step)
    fired_at = None
    for i, k in enumerate(harmful):
        w = T0 + i * step
        row = values | {"events": 14, "violations": k, "bucket_sums": None}
        recent.add(w, WindowData(w, [row], {}, {}))
        (got,) = recent.inputs(r, w)
        hour_k, hour_n = sum(harmful[: i + 1]), 14 * (i + 1)
        assert (got.numerator, got.denominator) == (hour_k, hour_n)
        assert got.confirmed == (k > 0)  # the latest window's own rate past 2 %
        low = binomtest(hour_k, hour_n).proportion_ci(method="wilson").low
        expected = hour_n >= 100 and low > 0.02 and k > 0
        assert measure(r, got).condition == expected, i
        if expected and fired_at is None:
            fired_at = i
    assert fired_at is not None and fired_at < 12  # within the hour


# --- a threshold with its own volume guard, beside a rise ------------------------------------


def test_a_threshold_min_events_guards_the_threshold_only():
    """`match: any` of a rise (no guard) and a policy limit that needs 100 events."""
    r = rule(match="any", threshold=Threshold(above=0.05, min_events=100))
    no_history = None
    # 20 % of 60 events: the limit's Wilson bound clears 5 %, but 60 < 100 events...
    small = SegmentWindow(SEG, 12, 60, baseline_counts=no_history)
    assert wilson_interval(12, 60)[0] > 0.05
    assert not measure(r, small).condition
    # ...and at 120 events it fires without any baseline.
    assert measure(r, SegmentWindow(SEG, 24, 120)).condition
    # The rise fires on 60 events when the history says it is far above normal.
    assert measure(r, SegmentWindow(SEG, 12, 60, baseline_counts=(40, 100_000))).condition
    # Early: the limit is no reference until the open window holds 100 events.
    assert early_reference(r, None, None, 60) is None
    assert early_reference(r, None, None, 100) == 0.05
    assert early_reference(r, 0.0004, (40, 100_000), 60) == pytest.approx(
        3.0 * wilson_interval(40, 100_000)[1]
    )


def test_threshold_min_events_is_read_from_the_yaml(tmp_path: Path):
    text = YAML.replace(
        "      rise: {rise}\n", "      threshold: {{above: 0.05, min_events: 100}}\n"
    )
    (r,) = parse_rules(text.format(metric="violation_rate", rise=""))
    assert r.threshold == Threshold(above=0.05, min_events=100)
    path = tmp_path / "r.yaml"
    path.write_text(text.replace("100", "0").format(metric="violation_rate", rise=""))
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert info.value.field == "condition.threshold.min_events"


def test_a_rate_that_gets_worse_as_it_falls_rises_in_its_shortfall():
    """telemetry_completeness: the incomplete records (denominator - numerator) are tested."""
    r = rule(metric="telemetry_completeness", rise=Rise(factor=3.0, alpha=1e-6))
    base = (99_700, 100_000)  # 0.3 % incomplete
    for incomplete in (3, 10, 20):
        window = SegmentWindow(SEG, 1000 - incomplete, 1000, baseline_counts=base)
        p0 = 3.0 * 1000 / (3.0 * 1000 + 100_000)
        p = binomtest(incomplete, incomplete + 300, p0, alternative="greater").pvalue
        assert measure(r, window).condition == (p <= 1e-6), incomplete
    assert measure(r, SegmentWindow(SEG, 960, 1000, baseline_counts=base)).condition
    assert early_reference(r, 0.997, base) is None  # not tested early


def test_evidence_events_counts_every_event_whoever_sent_it():
    one = BucketSums(tuple([10] + [0] * 31), tuple([31] * 24 + [32] * 8))
    base = (50, 100_000)
    window = SegmentWindow(SEG, 10, 1000, buckets=one, baseline_counts=base)
    assert not measure(rule(), window).condition  # users: one actor's ten events are one
    assert measure(rule(evidence="events"), window).condition  # events: ten events
    # The interval is Wilson's too.
    assert (measure(rule(evidence="events"), window).lower,) == (wilson_interval(10, 1000)[0],)
    (r,) = parse_rules(
        YAML.format(metric="violation_rate", rise="{factor: 3, alpha: 1e-6}").replace(
            "    severity: sev2\n", "    severity: sev2\n    evidence: events\n"
        )
    )
    assert r.evidence == "events"


def test_an_open_window_at_or_below_its_reference_never_fires_and_the_shortcut_agrees():
    """The shortcut in early_evidence (no test at or below p0) against the test itself."""
    from pipelines.alerting.sequential import rate_exceeds

    r = rule(threshold=Threshold(above=0.05), rise=None)
    for x, n in [(5, 100), (0, 10), (50, 1000), (2, 40)]:
        assert x <= 0.05 * n
        assert early_evidence(r, OpenWindow(SEG, x, n, typical_denominator=100)) is None
        full = rate_exceeds(x, n, 0.05, alpha=0.001, v_opt=100 * 0.05 * 0.95)
        assert not full.fired and full.log_e <= 1e-12


def test_a_limit_until_the_baseline_gives_way_to_the_rise_once_there_is_history():
    """RefusalSpike-like: 8 % limit for new segments; with history only a doubling fires."""
    r = rule(
        metric="refusal_rate",
        match="any",
        threshold=Threshold(above=0.08, min_events=100, until_baseline=2000),
        rise=Rise(factor=2.0, alpha=1e-6),
    )
    noisy = (20, 150)  # 13.3 %: lower bound above 8 %
    assert wilson_interval(*noisy)[0] > 0.08
    # A new segment (no baseline, or a short one): the limit decides.
    assert measure(r, SegmentWindow(SEG, *noisy)).condition
    assert measure(r, SegmentWindow(SEG, *noisy, baseline_counts=(150, 1500))).condition
    # A segment whose normal is ~10 % over a long history: not a doubling, no page...
    history = (2000, 20_000)
    assert not measure(r, SegmentWindow(SEG, *noisy, baseline_counts=history)).condition
    # ...while a doubling of it is.
    assert measure(r, SegmentWindow(SEG, 75, 150, baseline_counts=history)).condition
    # Early, the limit is no reference once the history is long enough.
    assert early_reference(r, 0.1, history, 150) == pytest.approx(
        2.0 * wilson_interval(*history)[1]
    )
    assert early_reference(r, 0.1, (150, 1500), 150) == 0.08


def test_a_shorter_horizon_of_a_falling_rate_is_confirmed_by_its_shortfall():
    from pipelines.alerting.inputs import RecentWindows, WindowData
    from pipelines.segments import SEGMENT_DIMENSIONS

    step = timedelta(minutes=5)
    values = {d: "x" for d in SEGMENT_DIMENSIONS} | {"locale": "de-DE"}
    full = tuple(values[d] for d in SEGMENT_DIMENSIONS)
    r = rule(
        metric="telemetry_completeness",
        rise=Rise(factor=3.0, alpha=1e-6),
        horizons=(step, timedelta(minutes=15)),
    )
    base = (99_700, 100_000)  # 0.3 % incomplete
    recent = RecentWindows([r], step)
    for i, complete in enumerate((985, 985, 999)):  # 1.5 %, 1.5 %, then 0.1 % incomplete
        w = T0 + i * step
        row = values | {"events_seen": 1000, "telemetry_complete": complete, "bucket_sums": None}
        test = {
            "baseline_numerator": base[0],
            "baseline_denominator": base[1],
            "q_value": None,
            "difference": None,
        }
        recent.add(w, WindowData(w, [row], {("telemetry_completeness", full): test}, {}))
        (got,) = recent.inputs(r, w)
        # Confirmed while the latest window's shortfall is above 3 x 0.3 %.
        assert got.confirmed == ((1000 - complete) / 1000 > 3 * 0.003), i


def test_a_threshold_only_rule_with_until_baseline_reads_the_baseline():
    """No rise, no change: the rate test is still read, or the limit would never give way."""
    from pipelines.alerting.engine import bind_rules
    from pipelines.alerting.inputs import WindowData, rule_inputs
    from pipelines.errors import ConfigError
    from pipelines.segments import SEGMENT_DIMENSIONS

    values = {d: "x" for d in SEGMENT_DIMENSIONS} | {"locale": "de-DE"}
    full = tuple(values[d] for d in SEGMENT_DIMENSIONS)
    r = rule(
        metric="refusal_rate",
        rise=None,
        threshold=Threshold(above=0.08, min_events=100, until_baseline=2000),
    )
    row = values | {"events": 150, "refusals": 20, "bucket_sums": None}

    def verdict(baseline_events: int) -> bool:
        test = {
            "baseline_numerator": baseline_events // 10,
            "baseline_denominator": baseline_events,
            "q_value": None,
            "difference": None,
        }
        (got,) = rule_inputs(r, WindowData(T0, [row], {("refusal_rate", full): test}, {}))
        assert got.baseline_counts == (baseline_events // 10, baseline_events)
        return measure(r, got).condition

    assert verdict(500) and not verdict(5000)
    # It needs the stored segments, as a rise does.
    with pytest.raises(ConfigError, match="until_baseline"):
        bind_rules([r], ["locale", "product_surface"])
