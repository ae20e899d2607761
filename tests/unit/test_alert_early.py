"""Early evaluation fires a segment on an open window only when the evidence is conclusive.

Expected firing decisions are checked against `rate_exceeds` called directly with the
reference rate and `v_opt` the rule should use, or against hand-computed references; the
interplay with the closed-window evaluator is checked by running `evaluate` afterwards.
"""

import math
from datetime import UTC, datetime, timedelta

import pytest
from scipy.stats import binomtest

from pipelines.alerting.early import can_fire_early, early_reference, evaluate_early
from pipelines.alerting.errors import RuleError
from pipelines.alerting.evaluate import AlertState, OpenWindow, SegmentWindow, evaluate
from pipelines.alerting.loader import parse_rules
from pipelines.alerting.model import EARLY_ALPHA, EARLY_BY_SEVERITY, Change, Drift, Rule, Threshold
from pipelines.alerting.sequential import rate_exceeds

T0 = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
DE = (("locale", "de-DE"),)
FR = (("locale", "fr-FR"),)
THRESHOLD = 1 / EARLY_ALPHA


def rule(**overrides) -> Rule:
    fields = {
        "name": "HarmfulOutputRateHigh",
        "metric": "violation_rate",
        "by": ("locale",),
        "severity": "sev2",
        "owner": "trust-safety-oncall",
        "runbook": "runbooks/harmful-output-rate.md",
        "summary": "{numerator}/{denominator} in {segment}, windows {windows}",
        "threshold": Threshold(above=0.02),
        "min_events": 1,
    }
    fields.update(overrides)
    return Rule(**fields)


def window(i: int) -> datetime:
    return T0 + i * STEP


def ow(counts, segment=DE, **extra) -> OpenWindow:
    return OpenWindow(segment, counts[0], counts[1], **extra)


def fires(r: Rule, open_window: OpenWindow, states=None) -> bool:
    _, transitions = evaluate_early(r, window(1), [open_window], states or {})
    return bool(transitions)


def e_value(x, n, p0, typical) -> float:
    return rate_exceeds(x, n, p0, alpha=EARLY_ALPHA, v_opt=typical * p0 * (1 - p0)).e_value


def scipy_wilson(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


# --- YAML ----------------------------------------------------------------------------------

RULE_YAML = """\
  - name: {name}
    metric: violation_rate
    by: [locale]
    condition:
      threshold: {{above: 0.02}}
    severity: {severity}
    owner: trust-safety-oncall
    runbook: runbooks/harmful-output-rate.md
    summary: "{{segment}}"
"""


def rules_yaml(*rules: tuple[str, str, str | None]) -> str:
    """`rules`: (name, severity, the `early:` line's value or None for no line)."""
    out = ["rules:"]
    for name, severity, early in rules:
        text = RULE_YAML.format(name=name, severity=severity)
        if early is not None:
            text += f"    early: {early}\n"
        out.append(text.rstrip("\n"))
    return "\n".join(out) + "\n"


def test_yaml_early_defaults_by_severity():
    text = rules_yaml(*((f"Rule{s}", s, None) for s in ("sev1", "sev2", "sev3", "sev4")))
    loaded = {r.severity: r.early for r in parse_rules(text)}
    assert loaded == {"sev1": True, "sev2": True, "sev3": False, "sev4": False}
    assert dict(EARLY_BY_SEVERITY) == loaded


def test_rules_built_in_code_get_the_severity_default_and_keep_an_explicit_value():
    assert rule(severity="sev1").early is True
    assert rule(severity="sev3").early is False
    assert rule(severity="sev3", early=True).early is True
    assert rule(severity="sev1", early=False).early is False
    # Equality sees the resolved value: leaving it out equals writing the default.
    assert rule(severity="sev2") == rule(severity="sev2", early=True)
    assert rule(severity="sev2") != rule(severity="sev2", early=False)


def test_yaml_early_explicit_values_override_the_default():
    text = rules_yaml(
        ("Paged", "sev1", "false"), ("Ticket", "sev4", "true"), ("OptedIn", "sev3", "yes")
    )
    paged, ticket, opted_in = parse_rules(text)
    assert (paged.early, ticket.early, opted_in.early) == (False, True, True)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"true"', "must be true or false, got 'true'"),
        ("1", "must be true or false, got 1 (an integer)"),
        ("", "must be true or false, got nothing (null)"),
        ("[true]", "must be a single value, got a list"),
    ],
)
def test_yaml_early_non_boolean_is_an_error_naming_rule_field_and_line(value, reason):
    text = rules_yaml(("Fine", "sev2", None), ("InjectionSuccess", "sev1", value))
    with pytest.raises(RuleError) as info:
        parse_rules(text, "alerts/rules/safety.yaml")
    err = info.value
    assert (err.path, err.rule, err.field) == (
        "alerts/rules/safety.yaml",
        "InjectionSuccess",
        "early",
    )
    assert err.line == text.splitlines().index(f"    early: {value}") + 1
    assert str(err) == (
        f"alerts/rules/safety.yaml:{err.line}: rule InjectionSuccess: field early: {reason}"
    )


# --- the any-event case (reference 0) ----------------------------------------------------


def redaction_rule(**overrides) -> Rule:
    fields = {
        "name": "RedactionFailures",
        "metric": "redaction_failure_rate",
        "threshold": Threshold(above=0.0),
        "min_events": 1,
        "severity": "sev1",
        "summary": "{numerator} of {denominator} in {segment}",
    }
    fields.update(overrides)
    return rule(**fields)


def test_any_event_rule_fires_at_the_first_event():
    r = redaction_rule()
    states, transitions = evaluate_early(r, window(1), [ow((1, 1))], {})
    (t,) = transitions
    assert (t.from_status, t.to_status, t.early, t.evidence) == (
        "inactive",
        "firing",
        True,
        math.inf,
    )
    assert (t.numerator, t.denominator, t.value) == (1, 1, 1.0)
    assert states[DE].status == "firing"


def test_any_event_rule_does_not_fire_without_an_event():
    assert not fires(redaction_rule(), ow((0, 5000)))


def test_any_event_rule_keeps_the_volume_guard():
    r = redaction_rule(min_events=5)
    assert not fires(r, ow((1, 4)))
    assert fires(r, ow((1, 5)))


# --- threshold rules ---------------------------------------------------------------------


def test_threshold_fires_clearly_above_the_limit():
    counts = (30, 200)
    assert e_value(*counts, 0.02, 200) >= THRESHOLD  # 15 % against a 2 % limit
    _, (t,) = evaluate_early(rule(), window(1), [ow(counts, typical_denominator=200)], {})
    assert t.evidence == pytest.approx(e_value(*counts, 0.02, 200), rel=1e-12)


def test_threshold_does_not_fire_at_a_rate_equal_to_the_limit():
    # 2 % of 1,000 against a 2 % limit: no evidence at all, however the window is looked at.
    assert not fires(rule(), ow((20, 1000), typical_denominator=1000))
    assert not fires(rule(), ow((200, 10000), typical_denominator=10000))


def test_threshold_respects_min_events_on_the_running_denominator():
    counts = (30, 200)
    assert fires(rule(min_events=200), ow(counts, typical_denominator=200))
    assert not fires(rule(min_events=201), ow(counts, typical_denominator=200))


def test_injection_success_two_of_thirteen_does_not_fire_early():
    r = rule(name="InjectionSuccess", severity="sev1", min_events=10)
    # Independently: the evidence of 2 successes in 13 against 2 %, at v_opt from
    # min_events (no typical size known) and from a typical window of 13, is short of 1,000.
    assert e_value(2, 13, 0.02, 10) < THRESHOLD
    assert e_value(2, 13, 0.02, 13) < THRESHOLD
    assert not fires(r, ow((2, 13)))
    assert not fires(r, ow((2, 13), typical_denominator=13))
    # The closed window does fire on it (Wilson lower bound 4.3 % > 2 %): early is stricter.
    _, closed = evaluate(r, window(1), [SegmentWindow(DE, 2, 13)], {})
    assert [t.to_status for t in closed] == ["firing"]


# --- change rules and combinations -------------------------------------------------------


CHANGE_UP = Change(max_q=0.001, direction="up", min_difference=0.01)


def test_change_up_tests_against_baseline_plus_min_difference():
    r = rule(threshold=None, change=CHANGE_UP)
    assert early_reference(r, 0.05) == pytest.approx(0.06)
    # 150 of 2,000 (7.5 %) is conclusive against 5 % but not against 5 % + 1 point.
    assert e_value(150, 2000, 0.05, 2000) >= THRESHOLD > e_value(150, 2000, 0.06, 2000)
    assert not fires(r, ow((150, 2000), baseline_rate=0.05, typical_denominator=2000))
    # 170 of 2,000 is conclusive against 6 %.
    assert e_value(170, 2000, 0.06, 2000) >= THRESHOLD
    assert fires(r, ow((170, 2000), baseline_rate=0.05, typical_denominator=2000))


def test_change_up_without_baseline_never_fires_early():
    r = rule(threshold=None, change=CHANGE_UP)
    assert early_reference(r, None) is None
    assert not fires(r, ow((900, 1000), typical_denominator=1000))


@pytest.mark.parametrize("direction", ["down", "any"])
def test_change_down_or_any_is_not_evaluated_early(direction):
    r = rule(threshold=None, change=Change(max_q=0.001, direction=direction))
    assert early_reference(r, 0.05) is None
    assert not can_fire_early(r)
    assert not fires(r, ow((900, 1000), baseline_rate=0.05, typical_denominator=1000))


def test_match_all_uses_the_largest_reference():
    r = rule(change=Change(max_q=0.001, direction="up"), match="all")
    assert early_reference(r, 0.05) == 0.05  # max(threshold 0.02, baseline 0.05)
    assert early_reference(r, 0.01) == 0.02  # max(threshold 0.02, baseline 0.01)
    # 70 of 1,000 is conclusive against 2 % but not against 5 %.
    assert e_value(70, 1000, 0.02, 1000) >= THRESHOLD > e_value(70, 1000, 0.05, 1000)
    assert not fires(r, ow((70, 1000), baseline_rate=0.05, typical_denominator=1000))
    # Without a baseline the change cannot be evaluated, so neither can the rule.
    assert early_reference(r, None) is None
    assert not fires(r, ow((900, 1000), typical_denominator=1000))


def test_match_any_uses_the_smallest_evaluable_reference():
    r = rule(change=Change(max_q=0.001, direction="up"), match="any")
    assert early_reference(r, 0.05) == 0.02
    assert fires(r, ow((70, 1000), baseline_rate=0.05, typical_denominator=1000))
    # The change needs a baseline; without one the threshold alone counts.
    assert early_reference(r, None) == 0.02
    assert fires(r, ow((70, 1000), typical_denominator=1000))
    # A drift condition cannot be evaluated early but does not stop the others under `any`.
    with_drift = rule(drift=Drift("outcome", "psi", above=0.25), match="any")
    assert early_reference(with_drift, None) == 0.02


PSI = Drift("outcome", "psi", above=0.25)


@pytest.mark.parametrize(
    "r",
    [
        rule(threshold=None, drift=PSI),
        rule(metric="telemetry_completeness", threshold=Threshold(below=0.98)),
        rule(threshold=Threshold(below=0.98), drift=PSI, match="any"),
        rule(drift=PSI, match="all"),
    ],
    ids=["drift-only", "below", "below-or-drift", "threshold-and-drift"],
)
def test_rules_without_an_evaluable_condition_are_never_evaluated_early(r):
    assert r.early  # sev2: early is on, yet nothing can be tested
    assert early_reference(r, 0.01) is None
    assert not can_fire_early(r)
    states = {FR: AlertState(r.name, FR, last_window=window(0))}
    new_states, transitions = evaluate_early(
        r, window(1), [ow((1000, 1000)), ow((0, 1000), FR)], states
    )
    assert transitions == []
    assert new_states == states


def test_a_reference_of_one_or_more_is_never_exceeded():
    r = rule(threshold=None, change=Change(max_q=0.001, direction="up", min_difference=0.5))
    assert early_reference(r, 0.6) == pytest.approx(1.1)
    assert not fires(r, ow((1000, 1000), baseline_rate=0.6, typical_denominator=1000))


# --- which segments are looked at --------------------------------------------------------


def test_early_false_rules_are_left_alone():
    r = rule(early=False)
    assert not can_fire_early(r)
    states = {DE: AlertState(r.name, DE, last_window=window(0))}
    new_states, transitions = evaluate_early(r, window(1), [ow((900, 1000))], states)
    assert transitions == []
    assert new_states == states
    assert fires(rule(early=True), ow((900, 1000)))  # the same window fires an early rule


def test_firing_segments_are_left_alone():
    r = rule()
    firing = AlertState(
        r.name,
        DE,
        "firing",
        true_windows=3,
        started_at=window(-2),
        firing_since=window(-2),
        last_window=window(0),
    )
    new_states, transitions = evaluate_early(r, window(1), [ow((900, 1000))], {DE: firing})
    assert transitions == []
    assert new_states[DE] is firing


def test_a_window_already_evaluated_closed_is_left_alone():
    r = rule()
    for last in (window(1), window(2)):
        state = AlertState(r.name, DE, last_window=last)
        new_states, transitions = evaluate_early(r, window(1), [ow((900, 1000))], {DE: state})
        assert transitions == []
        assert new_states[DE] is state


def test_early_firing_only_completes_a_for_streak():
    r = rule(for_windows=2)
    # Inactive: this window would be the first true one of two; no early firing, no pending.
    assert not fires(r, ow((900, 1000)), {DE: AlertState(r.name, DE, last_window=window(0))})
    pending = AlertState(
        r.name, DE, "pending", true_windows=1, started_at=window(0), last_window=window(0)
    )
    states, (t,) = evaluate_early(r, window(1), [ow((900, 1000))], {DE: pending})
    assert (t.from_status, t.to_status, t.windows) == ("pending", "firing", 2)
    assert states[DE].started_at == window(0)  # the streak's start is kept


def test_returned_states_are_the_given_ones_plus_those_that_fired():
    r = rule()
    quiet = AlertState(r.name, FR, last_window=window(0))
    states, transitions = evaluate_early(
        r, window(1), [ow((900, 1000)), ow((0, 1000), FR)], {FR: quiet}
    )
    assert list(states) == [DE, FR]
    assert states[FR] is quiet
    assert [t.segment for t in transitions] == [DE]
    # A segment with no state that does not fire gets none.
    states, transitions = evaluate_early(r, window(1), [ow((0, 1000), FR)], {})
    assert (states, transitions) == ({}, [])


# --- the state and transition of an early firing -----------------------------------------


def test_early_firing_state_and_transition():
    r = rule(description="baseline {baseline:.1%}, q {q_value}, since {window_start:%H:%M}")
    before = AlertState(r.name, DE, true_windows=0, last_window=window(0))
    counts = (90, 1000)
    states, (t,) = evaluate_early(
        r, window(1), [ow(counts, baseline_rate=0.01, typical_denominator=1000)], {DE: before}
    )
    assert states[DE] == AlertState(
        r.name,
        DE,
        "firing",
        true_windows=0,
        false_windows=0,
        started_at=window(1),
        firing_since=window(1),
        last_window=window(0),
    )
    assert (t.rule, t.segment, t.window_start, t.severity) == (r.name, DE, window(1), "sev2")
    assert (t.from_status, t.to_status, t.firing_since) == ("inactive", "firing", window(1))
    assert (t.numerator, t.denominator, t.baseline_rate) == (90, 1000, 0.01)
    assert t.value == pytest.approx(0.09)
    assert (t.lower, t.upper) == pytest.approx(scipy_wilson(*counts), rel=1e-9)
    assert (t.q_value, t.difference, t.drift_value) == (None, None, None)
    assert t.early is True
    assert t.evidence == pytest.approx(e_value(*counts, 0.02, 1000), rel=1e-12)
    assert t.windows == 1  # the open window counts as true
    assert t.summary == "90/1000 in de-DE, windows 1"
    assert t.description == "baseline 1.0%, q n/a, since 14:05"


def test_closed_window_transitions_are_not_early():
    _, (t,) = evaluate(rule(), window(1), [SegmentWindow(DE, 900, 1000)], {})
    assert (t.early, t.evidence) == (False, None)


# --- interplay with the closed evaluation of the same window -----------------------------


def fire_early(r: Rule) -> dict:
    states, _ = evaluate(r, window(0), [SegmentWindow(DE, 0, 1000)], {})
    states, transitions = evaluate_early(r, window(1), [ow((900, 1000))], states)
    assert [(t.to_status, t.early) for t in transitions] == [("firing", True)]
    return states


def test_closed_window_true_after_early_firing_keeps_firing_without_a_transition():
    r = rule()
    states, transitions = evaluate(r, window(1), [SegmentWindow(DE, 950, 1000)], fire_early(r))
    assert transitions == []
    after = states[DE]
    assert (after.status, after.true_windows, after.firing_since) == ("firing", 1, window(1))
    assert (after.started_at, after.last_window) == (window(1), window(1))
    # Looking again at later batches of the same window, or at the closed window, does nothing.
    for w in (window(1), window(0)):
        again, none = evaluate_early(r, w, [ow((1000, 1000))], states)
        assert (again, none) == (states, [])


def test_closed_window_false_after_early_firing_resolves_without_grace():
    r = rule(keep_firing_for=0)
    states, transitions = evaluate(r, window(1), [SegmentWindow(DE, 0, 1000)], fire_early(r))
    assert [(t.from_status, t.to_status, t.early) for t in transitions] == [
        ("firing", "resolved", False)
    ]
    assert transitions[0].firing_since == window(1)
    assert states[DE] == AlertState(r.name, DE, last_window=window(1))


def test_closed_window_false_after_early_firing_uses_the_grace_period():
    r = rule(keep_firing_for=1)
    states, transitions = evaluate(r, window(1), [SegmentWindow(DE, 0, 1000)], fire_early(r))
    assert transitions == []
    assert (states[DE].status, states[DE].false_windows) == ("firing", 1)
    states, transitions = evaluate(r, window(2), [SegmentWindow(DE, 0, 1000)], states)
    assert [t.to_status for t in transitions] == ["resolved"]
    assert states[DE].status == "inactive"


def test_an_earlier_window_closing_after_an_early_page_changes_only_its_last_window():
    # Fired early on window 1 while window 0 was still open; window 0 then closes.
    r = rule(keep_firing_for=0)
    fired, early = evaluate_early(r, window(1), [ow((900, 1000))], {})
    assert [t.early for t in early] == [True]
    states, transitions = evaluate(r, window(0), [SegmentWindow(DE, 0, 1000)], fired)
    assert transitions == []
    assert states[DE] == AlertState(
        r.name, DE, status="firing", started_at=window(1), firing_since=window(1),
        last_window=window(0),
    )  # fmt: skip
    # Its traffic absent from window 0: the same.
    absent, none = evaluate(r, window(0), [], fired)
    assert (absent, none) == (states, [])
    # A true earlier window counts as for any firing alert, and the alert's own window still
    # decides: false there resolves it.
    states, transitions = evaluate(r, window(0), [SegmentWindow(DE, 950, 1000)], fired)
    assert transitions == [] and states[DE].true_windows == 1
    states, transitions = evaluate(r, window(1), [SegmentWindow(DE, 0, 1000)], states)
    assert [t.to_status for t in transitions] == ["resolved"]


# --- v_opt and buckets -------------------------------------------------------------------


def test_v_opt_comes_from_the_typical_denominator_not_the_open_window():
    counts, p0 = (55, 1000), 0.03
    r = rule(threshold=Threshold(above=p0), min_events=30)
    # 55 of 1,000 against 3 % crosses 1,000 only when the test is tuned for ~1,000 events.
    assert e_value(*counts, p0, 1000) >= THRESHOLD
    assert e_value(*counts, p0, 30) < THRESHOLD  # min_events: the fallback
    assert e_value(*counts, p0, 20000) < THRESHOLD
    _, (t,) = evaluate_early(r, window(1), [ow(counts, typical_denominator=1000)], {})
    assert t.evidence == pytest.approx(e_value(*counts, p0, 1000), rel=1e-12)
    # Unknown typical size: max(min_events, 1); the open window's own 1,000 is not used.
    assert not fires(r, ow(counts))
    assert not fires(r, ow(counts, typical_denominator=0))
    assert not fires(r, ow(counts, typical_denominator=20000))


def test_buckets_are_passed_to_the_test():
    counts = (30, 200)
    spread = ([1] * 30 + [0] * 10, [5] * 40)  # 40 users' buckets, 1 violation in 5 events each
    one_user = ([30, 0, 0, 0], [50, 50, 50, 50])  # every violation from one bucket
    for buckets in (spread, one_user):
        direct = rate_exceeds(
            *counts, 0.02, alpha=EARLY_ALPHA, v_opt=200 * 0.02 * 0.98, buckets=buckets
        )
        window_ = ow(counts, typical_denominator=200, buckets=buckets)
        assert fires(rule(), window_) is direct.fired
    assert fires(rule(), ow(counts, typical_denominator=200, buckets=spread))
    assert not fires(rule(), ow(counts, typical_denominator=200, buckets=one_user))
    with pytest.raises(ValueError, match="do not match"):
        evaluate_early(rule(), window(1), [ow(counts, buckets=([1], [1]))], {})


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window_start", "inputs", "states", "message"),
    [
        (datetime(2026, 11, 2, 14, 0), [], {}, "timezone-aware"),
        (T0, [OpenWindow((("region", "eu"),), 1, 10)], {}, "does not match by"),
        (T0, [ow((1, 10)), ow((2, 10))], {}, "given twice"),
        (T0, [], {DE: AlertState("Other", DE)}, "filed under"),
        (T0, [], {DE: AlertState("HarmfulOutputRateHigh", FR)}, "filed under"),
        (T0, [ow((11, 10))], {}, "numerator"),
        (T0, [ow((-1, 10))], {}, "numerator"),
        (T0, [ow((1, 10), baseline_rate=1.5)], {}, "baseline_rate"),
        (T0, [ow((1, 10), baseline_rate=math.nan)], {}, "baseline_rate"),
        (T0, [ow((1, 10), typical_denominator=-1)], {}, "typical_denominator"),
    ],
)
def test_invalid_arguments_raise(window_start, inputs, states, message):
    with pytest.raises(ValueError, match=message):
        evaluate_early(rule(), window_start, inputs, states)


def test_invalid_arguments_raise_even_for_rules_that_cannot_fire_early():
    with pytest.raises(ValueError, match="given twice"):
        evaluate_early(rule(early=False), T0, [ow((1, 10)), ow((2, 10))], {})


def test_rule_with_an_unknown_severity_needs_an_explicit_early():
    with pytest.raises(ValueError, match="early"):
        rule(severity="sev9")
    assert rule(severity="sev9", early=False).early is False
