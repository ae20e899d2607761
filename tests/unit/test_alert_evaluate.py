"""The evaluator walks hand-written window timelines to the statuses written out beside them.

Timelines are tables: one row per window, giving the input and the expected status and
transition. Wilson bounds are checked against scipy's, not against pipelines.metrics.stats.
"""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from pipelines.alerting.evaluate import AlertState, SegmentWindow, Transition, evaluate
from pipelines.alerting.model import Change, Drift, Rule, Threshold
from pipelines.segments import segment_label

T0 = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
DE = (("locale", "de-DE"),)
FR = (("locale", "fr-FR"),)

# Inputs that make `above: 0.01` plainly true and plainly false at 1,000 events.
HIGH = (500, 1000)
LOW = (0, 1000)


def rule(**overrides) -> Rule:
    fields = {
        "name": "HarmfulOutputRateHigh",
        "metric": "violation_rate",
        "by": ("locale",),
        "severity": "sev2",
        "owner": "trust-safety-oncall",
        "runbook": "runbooks/harmful-output-rate.md",
        "summary": "{segment}",
        "threshold": Threshold(above=0.01),
        "min_events": 1,
    }
    fields.update(overrides)
    return Rule(**fields)


def window(i: int) -> datetime:
    return T0 + i * STEP


def sw(segment, counts, **stats) -> SegmentWindow:
    return SegmentWindow(segment, counts[0], counts[1], **stats)


def run(r: Rule, timeline, states=None):
    """Evaluate windows 0, 1, ... of `timeline` (each a list of inputs) in order.

    Returns per window the states after it and its transitions as (segment, from, to).
    """
    states = dict(states or {})
    out = []
    for i, inputs in enumerate(timeline):
        states, transitions = evaluate(r, window(i), inputs, states)
        out.append((states, [(t.segment, t.from_status, t.to_status) for t in transitions]))
    return out


def check_single(r: Rule, table, segment=DE):
    """`table` rows: (input counts or None for absent, expected status, expected transition)."""
    timeline = [[] if counts is None else [sw(segment, counts)] for counts, _, _ in table]
    for i, ((states, transitions), (_, status, transition)) in enumerate(
        zip(run(r, timeline), table, strict=True)
    ):
        got = states[segment].status if segment in states else "inactive"
        assert got == status, f"window {i}: status {got}, expected {status}"
        expected = [] if transition is None else [(segment, *transition)]
        assert transitions == expected, f"window {i}"


def scipy_wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


# --- threshold ---------------------------------------------------------------------------


def test_threshold_above_tests_the_lower_bound_not_the_point_estimate():
    r = rule(threshold=Threshold(above=0.10))
    few, many = (2, 8), (250, 1000)  # point rates 25 % and 25 %, both above 10 %
    few_low, _ = scipy_wilson(*few)
    many_low, _ = scipy_wilson(*many)
    assert few_low < 0.10 < many_low  # the premise, from scipy: few events leave it uncertain

    states, transitions = evaluate(r, T0, [sw(DE, few), sw(FR, many)], {})
    assert states[DE].status == "inactive"
    assert states[FR].status == "firing"
    (t,) = transitions
    assert (t.segment, t.from_status, t.to_status) == (FR, "inactive", "firing")
    assert t.value == 0.25
    assert t.lower == pytest.approx(many_low, rel=1e-9)
    assert t.upper == pytest.approx(scipy_wilson(*many)[1], rel=1e-9)


def test_threshold_below_tests_the_upper_bound():
    r = rule(metric="telemetry_completeness", threshold=Threshold(below=0.98))
    low_complete, nearly = (960, 1000), (979, 1000)  # both point rates below 98 %
    assert scipy_wilson(*low_complete)[1] < 0.98 < scipy_wilson(*nearly)[1]

    states, transitions = evaluate(r, T0, [sw(DE, low_complete), sw(FR, nearly)], {})
    assert (states[DE].status, states[FR].status) == ("firing", "inactive")
    assert [(t.segment, t.to_status) for t in transitions] == [(DE, "firing")]
    assert transitions[0].upper == pytest.approx(scipy_wilson(*low_complete)[1], rel=1e-9)


def test_min_events_guard():
    r = rule(min_events=200)
    check_single(
        r,
        [
            # counts      status      transition
            ((150, 199), "inactive", None),  # 75 % but below the volume guard
            ((150, 200), "firing", ("inactive", "firing")),
            ((150, 199), "inactive", ("firing", "resolved")),  # too few events: false again
        ],
    )


# --- for / keep_firing_for ---------------------------------------------------------------


def test_for_three_windows_with_an_interruption():
    check_single(
        rule(for_windows=3),
        [
            # counts status      transition
            (HIGH, "pending", ("inactive", "pending")),
            (HIGH, "pending", None),
            (LOW, "inactive", ("pending", "inactive")),  # the streak breaks
            (HIGH, "pending", ("inactive", "pending")),
            (HIGH, "pending", None),
            (HIGH, "firing", ("pending", "firing")),  # third consecutive true window
            (HIGH, "firing", None),
            (LOW, "inactive", ("firing", "resolved")),
        ],
    )


def test_for_one_fires_in_the_first_true_window():
    check_single(
        rule(for_windows=1),
        [
            (LOW, "inactive", None),
            (HIGH, "firing", ("inactive", "firing")),
            (LOW, "inactive", ("firing", "resolved")),
        ],
    )


def test_keep_firing_for_two_windows():
    check_single(
        rule(keep_firing_for=2),
        [
            # counts status     transition
            (HIGH, "firing", ("inactive", "firing")),
            (LOW, "firing", None),  # 1st false window: grace
            (HIGH, "firing", None),  # true again: the grace restarts
            (LOW, "firing", None),
            (LOW, "firing", None),  # 2nd false window: still within keep_firing_for
            (LOW, "inactive", ("firing", "resolved")),  # 3rd: resolved
            (LOW, "inactive", None),
        ],
    )


def test_state_records_the_streak_and_firing_time():
    r = rule(for_windows=2, keep_firing_for=1)
    timeline = [[sw(DE, HIGH)], [sw(DE, HIGH)], [sw(DE, HIGH)], [sw(DE, LOW)], [sw(DE, LOW)]]
    states = [s[DE] for s, _ in run(r, timeline)]
    assert states[0] == AlertState(r.name, DE, "pending", 1, 0, window(0), None, window(0))
    assert states[1] == AlertState(r.name, DE, "firing", 2, 0, window(0), window(1), window(1))
    assert states[2] == AlertState(r.name, DE, "firing", 3, 0, window(0), window(1), window(2))
    assert states[3] == AlertState(r.name, DE, "firing", 0, 1, None, window(1), window(3))
    assert states[4] == AlertState(r.name, DE, "inactive", 0, 0, None, None, window(4))


# --- match, change, drift ----------------------------------------------------------------

# threshold above 10 % and a significant increase; each input makes one, both or none true.
ONLY_THRESHOLD = {"counts": (300, 1000), "q_value": 0.5, "difference": 0.01}
ONLY_CHANGE = {"counts": (30, 1000), "q_value": 0.001, "difference": 0.02}
BOTH = {"counts": (300, 1000), "q_value": 0.001, "difference": 0.2}
NEITHER = {"counts": (30, 1000), "q_value": 0.5, "difference": 0.0}


@pytest.mark.parametrize(
    ("match", "case", "fires"),
    [
        ("all", ONLY_THRESHOLD, False),
        ("all", ONLY_CHANGE, False),
        ("all", BOTH, True),
        ("all", NEITHER, False),
        ("any", ONLY_THRESHOLD, True),
        ("any", ONLY_CHANGE, True),
        ("any", BOTH, True),
        ("any", NEITHER, False),
    ],
)
def test_match_any_and_all(match, case, fires):
    r = rule(
        match=match, threshold=Threshold(above=0.10), change=Change(max_q=0.01, direction="up")
    )
    stats = {k: v for k, v in case.items() if k != "counts"}
    states, _ = evaluate(r, T0, [sw(DE, case["counts"], **stats)], {})
    assert (states[DE].status == "firing") is fires


@pytest.mark.parametrize(
    ("direction", "min_difference", "q_value", "difference", "fires"),
    [
        ("up", 0.0, 0.001, 0.02, True),
        ("up", 0.0, 0.001, -0.02, False),  # significant, but the wrong way
        ("up", 0.0, 0.02, 0.02, False),  # q above max_q
        ("up", 0.0, 0.01, 0.02, True),  # q = max_q counts
        ("up", 0.03, 0.001, 0.02, False),  # smaller than min_difference
        ("up", 0.02, 0.001, 0.02, True),  # equal to min_difference counts
        ("down", 0.0, 0.001, -0.02, True),
        ("down", 0.0, 0.001, 0.02, False),
        ("any", 0.0, 0.001, 0.02, True),
        ("any", 0.0, 0.001, -0.02, True),
        ("any", 0.03, 0.001, -0.02, False),
        ("any", 0.0, None, None, False),  # no rate-test row
        ("up", 0.0, 0.001, None, False),
    ],
)
def test_change_with_direction(direction, min_difference, q_value, difference, fires):
    r = rule(
        threshold=None,
        change=Change(max_q=0.01, direction=direction, min_difference=min_difference),
    )
    window_input = sw(DE, (20, 1000), q_value=q_value, difference=difference)
    states, _ = evaluate(r, T0, [window_input], {})
    assert (states[DE].status == "firing") is fires


@pytest.mark.parametrize(
    ("drift", "value", "fires"),
    [
        (Drift("outcome", "psi", above=0.25), 0.30, True),
        (Drift("outcome", "psi", above=0.25), 0.25, False),  # strictly above
        (Drift("outcome", "psi", above=0.25), None, False),  # insufficient data / no row
        (Drift("latency_ms", "ks_p_value", below=0.001), 0.0001, True),
        (Drift("latency_ms", "ks_p_value", below=0.001), 0.01, False),
    ],
)
def test_drift_condition(drift, value, fires):
    r = rule(threshold=None, drift=drift)
    states, _ = evaluate(r, T0, [sw(DE, (0, 1000), drift_value=value)], {})
    assert (states[DE].status == "firing") is fires


def test_volume_guard_applies_to_change_and_drift_too():
    r = rule(threshold=None, drift=Drift("outcome", "psi", above=0.25), min_events=100)
    states, _ = evaluate(r, T0, [sw(DE, (0, 99), drift_value=0.9)], {})
    assert states[DE].status == "inactive"


# --- replay, absence, determinism --------------------------------------------------------


def test_replayed_window_changes_nothing():
    r = rule(for_windows=2)
    inputs = [sw(DE, HIGH), sw(FR, HIGH)]
    s0, t0 = evaluate(r, window(0), inputs, {})
    s1, t1 = evaluate(r, window(1), inputs, s0)
    assert [t.to_status for t in t0] == ["pending", "pending"]
    assert [t.to_status for t in t1] == ["firing", "firing"]

    again, transitions = evaluate(r, window(1), inputs, s1)  # the same window again
    assert (again, transitions) == (s1, [])
    older, transitions = evaluate(r, window(0), [sw(DE, LOW)], s1)  # an older one
    assert (older, transitions) == (s1, [])


def test_replay_is_per_segment():
    r = rule()
    s0, _ = evaluate(r, window(1), [sw(DE, HIGH)], {})
    # FR was not evaluated at window 1, so window 1 is new for FR but old for DE.
    s1, transitions = evaluate(r, window(1), [sw(DE, LOW), sw(FR, HIGH)], s0)
    assert [(t.segment, t.to_status) for t in transitions] == [(FR, "firing")]
    assert s1[DE] == s0[DE]


def test_absent_segment_counts_as_false_and_resolves():
    r = rule(keep_firing_for=1, summary="{value:.1%} of {denominator} in {segment}")
    check_single(
        r,
        [
            # counts status      transition
            (HIGH, "firing", ("inactive", "firing")),
            (None, "firing", None),  # traffic stopped: 1st false window, grace
            (None, "inactive", ("firing", "resolved")),
            (None, "inactive", None),
        ],
    )
    after_grace = run(r, [[sw(DE, HIGH)], []])[-1][0]
    _, (resolved,) = evaluate(r, window(2), [], after_grace)
    assert resolved.value is None and resolved.numerator is None
    assert resolved.summary == "n/a of n/a in de-DE"
    assert resolved.firing_since == window(0)


def test_absent_pending_segment_goes_inactive():
    check_single(
        rule(for_windows=3),
        [(HIGH, "pending", ("inactive", "pending")), (None, "inactive", ("pending", "inactive"))],
    )


def test_absent_inactive_state_is_kept_as_it_is():
    r = rule()
    old = AlertState(r.name, DE, last_window=window(0))
    states, transitions = evaluate(r, window(1), [], {DE: old})
    assert states == {DE: old} and transitions == []


def test_outputs_are_sorted_by_segment():
    r = rule(by=("product_surface", "locale"))
    segs = [
        (("product_surface", "search"), ("locale", "de-DE")),
        (("product_surface", "chat"), ("locale", "fr-FR")),
        (("product_surface", "chat"), ("locale", "de-DE")),
    ]
    states, transitions = evaluate(r, T0, [sw(s, HIGH) for s in segs], {})
    assert list(states) == sorted(segs)
    assert [t.segment for t in transitions] == sorted(segs)


def test_invalid_inputs_are_refused():
    r = rule()
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(r, datetime(2026, 11, 2), [], {})
    with pytest.raises(ValueError, match="does not match by"):
        evaluate(r, T0, [sw((("region", "eu"),), HIGH)], {})
    with pytest.raises(ValueError, match="given twice"):
        evaluate(r, T0, [sw(DE, HIGH), sw(DE, LOW)], {})
    with pytest.raises(ValueError, match="filed under"):
        evaluate(r, T0, [], {FR: AlertState(r.name, DE, "firing")})


# --- templates ---------------------------------------------------------------------------


def test_templates_render_the_window_values():
    r = rule(
        by=("product_surface", "model_version", "locale"),
        threshold=Threshold(above=0.001),
        change=Change(max_q=0.01, direction="up"),
        summary="Harmful output rate {value:.2%} in {segment}",
        description=(
            "{rule} ({severity}): {metric} {numerator}/{denominator} "
            "[{lower:.4f}, {upper:.4f}] vs baseline {baseline:.2%}, q={q_value:.2g}, "
            "{windows} window(s) from {window_start:%Y-%m-%d %H:%M}; model {model_version}"
        ),
    )
    seg = (("product_surface", "chat"), ("model_version", "atlas-l-2026.10.2"), ("locale", "de-DE"))
    inputs = [sw(seg, (12, 800), q_value=0.0004, difference=0.01, baseline_rate=0.005)]
    _, (t,) = evaluate(r, T0, inputs, {})
    lo, hi = scipy_wilson(12, 800)
    assert t.summary == "Harmful output rate 1.50% in chat / atlas-l-2026.10.2 / de-DE"
    assert t.description == (
        f"HarmfulOutputRateHigh (sev2): violation_rate 12/800 [{lo:.4f}, {hi:.4f}] vs baseline "
        "0.50%, q=0.0004, 1 window(s) from 2026-11-02 14:00; model atlas-l-2026.10.2"
    )
    assert (t.baseline_rate, t.q_value, t.difference) == (0.005, 0.0004, 0.01)


def test_all_traffic_segment():
    r = rule(by=(), summary="{segment}: baseline {baseline:.1%}")
    _, (t,) = evaluate(r, T0, [sw((), HIGH)], {})
    assert t.summary == "all traffic: baseline n/a"
    assert segment_label(()) == "all traffic"


# --- property: the state machine against a plain loop -------------------------------------


def reference(conditions, for_windows, keep_firing_for):
    """Per window: status after it, and 'fire' / 'resolve' / None. None input = absent."""
    out = []
    firing = False
    run_length = 0
    false_run = 0
    for c in conditions:
        true = c is True
        run_length = run_length + 1 if true else 0
        event = None
        if firing:
            false_run = 0 if true else false_run + 1
            if false_run > keep_firing_for:
                firing, event = False, "resolve"
        elif run_length >= for_windows:
            firing, false_run, event = True, 0, "fire"
        status = "firing" if firing else ("pending" if run_length else "inactive")
        out.append((status, event))
    return out


@settings(max_examples=300, deadline=None)
@given(
    conditions=st.lists(st.sampled_from([True, False, None]), max_size=40),
    for_windows=st.integers(1, 5),
    keep_firing_for=st.integers(0, 3),
)
def test_state_machine_matches_a_reference_loop(conditions, for_windows, keep_firing_for):
    r = rule(by=(), for_windows=for_windows, keep_firing_for=keep_firing_for)
    states: dict = {}
    fired, resolved = 0, 0
    expected = reference(conditions, for_windows, keep_firing_for)
    for i, (c, (status, event)) in enumerate(zip(conditions, expected, strict=True)):
        inputs = [] if c is None else [sw((), HIGH if c else LOW)]
        states, transitions = evaluate(r, window(i), inputs, states)
        got = states[()].status if () in states else "inactive"
        assert got == status, i
        kinds = [t.to_status for t in transitions]
        fired += kinds.count("firing")
        resolved += kinds.count("resolved")
        assert ("firing" in kinds) == (event == "fire"), i
        assert ("resolved" in kinds) == (event == "resolve"), i
        if event == "fire":
            # exactly the for-th consecutive true window
            assert all(x is True for x in conditions[i - for_windows + 1 : i + 1])
            assert i - for_windows < 0 or conditions[i - for_windows] is not True
        assert resolved <= fired
        assert all(isinstance(t, Transition) and t.window_start == window(i) for t in transitions)


# --- concentration (one actor) and the cluster-robust interval ---------------------------


def _sums(violations: dict[int, int], events: dict[int, int]):
    from pipelines.metrics.buckets import BucketSums

    return BucketSums(
        tuple(violations.get(b, 0) for b in range(32)), tuple(events.get(b, 0) for b in range(32))
    )


SPREAD_EVENTS = dict.fromkeys(range(32), 30)  # 960 events, 30 per bucket


@pytest.mark.parametrize(
    ("violations", "events", "expected"),
    [
        # 12 of 15 violations in bucket 3, which holds 30 / 960 = 3 % of the traffic.
        ({3: 12, 4: 1, 5: 1, 6: 1}, SPREAD_EVENTS, True),
        # Spread over 15 buckets.
        ({b: 1 for b in range(15)}, SPREAD_EVENTS, False),
        # Concentrated, but 9 violations are below CONCENTRATION_MIN (10).
        ({3: 9}, SPREAD_EVENTS, False),
        # Half of the violations in one bucket, but that bucket is most of the traffic.
        ({3: 12, 4: 3}, {**SPREAD_EVENTS, 3: 2000}, False),
        # Exactly half the violations in a bucket with exactly 20 % of the traffic: both
        # limits are inclusive.
        ({0: 10, 1: 10}, {0: 200, 1: 800}, True),
    ],
)
def test_concentrated_is_one_bucket_holding_the_numerator_but_not_the_traffic(
    violations, events, expected
) -> None:
    from pipelines.alerting.evaluate import concentrated

    assert concentrated(_sums(violations, events)) is expected


def test_concentrated_rules_split_one_actor_from_a_regression() -> None:
    from pipelines.alerting.evaluate import measure

    abuse = rule(name="ConcentratedAbuse", concentrated=True, threshold=Threshold(above=0.005))
    regression = rule(concentrated=False, threshold=Threshold(above=0.005))
    plain = rule(threshold=Threshold(above=0.005))
    one_actor = _sums({3: 40, 4: 1, 5: 1}, SPREAD_EVENTS)
    many = _sums({b: 2 for b in range(21)}, SPREAD_EVENTS)
    for sums, fires_abuse in ((one_actor, True), (many, False)):
        window = sw(DE, (sums.numerator, sums.denominator), buckets=sums)
        assert measure(abuse, window).condition is fires_abuse
        assert measure(regression, window).condition is not fires_abuse
    # Unknown buckets: never "one actor"; a rule that ignores concentration is unaffected.
    unknown = sw(DE, (42, 960))
    assert measure(abuse, unknown).condition is False
    assert measure(regression, unknown).condition is True
    assert measure(plain, unknown).condition is True


def test_interval_widens_for_clustered_events_and_is_wilson_otherwise() -> None:
    import numpy as np

    from pipelines.alerting.evaluate import interval

    lo, hi = (binomtest(42, 960).proportion_ci(0.95, method="wilson")[i] for i in (0, 1))
    independent = sw(DE, (42, 960))
    assert interval(independent) == pytest.approx((lo, hi), abs=1e-12)
    clustered = _sums({3: 40, 4: 1, 5: 1}, SPREAD_EVENTS)
    low, high = interval(sw(DE, (42, 960), buckets=clustered))
    # Wilson's interval on the effective sample size, the design effect from the delta method
    # with the 32 buckets as clusters, computed here directly.
    num = np.asarray(clustered.numerators, float)
    den = np.asarray(clustered.denominators, float)
    r = num.sum() / den.sum()
    se2 = 32 / 31 * np.sum((num - r * den) ** 2) / den.sum() ** 2
    n = den.sum() * (r * (1 - r) / den.sum()) / se2
    z = 1.959963984540054
    centre = (r + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(r * (1 - r) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((centre - half, centre + half), rel=1e-9)
    assert high - low > 2 * (hi - lo)
