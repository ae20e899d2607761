"""Rule evaluation: one rule, one window, the previous states in; new states and transitions out.

Pure: no SQL, no I/O, no clock. The caller reads the window's rows (counters from
segment_window_agg, q-value and difference from segment_window_rate_tests, the drift
statistic from segment_window_drift), turns each segment's into a `SegmentWindow`, passes
the states it persisted, stores the states returned and delivers the transitions.

Per segment, the condition of a window is true when the rate's denominator is at least
`min_events` (volume guard) and the rule's conditions combine to true (`match: all` or
`any`); a condition without its input (no rate-test or drift row: None) is false. The state
machine (docs/alert-rules.md):

- inactive --true--> pending (or --> firing at once when `for` is 1)
- pending  --true, `for` consecutive true windows--> firing
- pending  --false--> inactive
- firing   --false, more than `keep_firing_for` consecutive false windows--> resolved, the
  state becomes inactive; a true window inside that grace period keeps it firing. A false
  window before the one the alert fired in (it fired early on a later, open window while
  this one was still open) changes nothing but `last_window`.

A segment absent from the window's inputs (its traffic stopped) has a false window when its
state is pending or firing. Windows must be evaluated in ascending order, each one once:
a window that is not after a segment's `last_window` leaves that segment's state as it is
and produces no transition, so replaying a window (after a crash, or a backfill that
overlaps) never transitions twice. "Consecutive" means consecutive evaluations: the caller
evaluates every closed window, in order, including those where a segment is absent.

Windows that are still open are evaluated by `pipelines.alerting.early`, on the same
states and with the same transitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, TypeVar

from pipelines.alerting.model import Rule
from pipelines.alerting.templates import render_template
from pipelines.metrics.buckets import BucketSums, design_effects, robust_interval
from pipelines.metrics.catalog import rate
from pipelines.metrics.stats import wilson_interval
from pipelines.segments import Segment, segment_label

Status = Literal["inactive", "pending", "firing"]
TransitionTo = Literal["pending", "firing", "inactive", "resolved"]


@dataclass(frozen=True)
class SegmentWindow:
    """One rule's input for one segment in one window (one row of the caller's query).

    `numerator`/`denominator` are the rate's counters (segment_window_agg, summed over the
    dimensions not in the rule's `by`); `q_value`, `difference` (current - baseline
    proportion) and `baseline_rate` come from the rate's segment_window_rate_tests row,
    `drift_value` is the rule's drift statistic from segment_window_drift. None: no row, or
    a NULL statistic (insufficient data).
    """

    segment: Segment
    numerator: int
    denominator: int
    q_value: float | None = None
    difference: float | None = None
    baseline_rate: float | None = None
    drift_value: float | None = None
    # A rule with `horizons`: the counters are its longest horizon's, and `confirmed` says
    # whether every shorter horizon's rate is past the threshold too (still burning).
    confirmed: bool = True
    # The rate's numerator and denominator per user bucket (adding up to the counters);
    # None when some of the rows were counted before buckets were kept: events are then
    # taken as independent.
    buckets: BucketSums | None = None
    # The baseline's numerator and denominator (the rate test's), for `rise`; None: none.
    baseline_counts: tuple[int, int] | None = None
    # The rate's numerator and denominator per slice of the window (stream.early_slice), in
    # time order, adding up to the counters; None when unknown (counted before they were
    # kept). Read by early evaluation only.
    slices: tuple[Sequence[int], Sequence[int]] | None = None


@dataclass(frozen=True)
class OpenWindow:
    """A segment's running counts in a window that is still open (input of `evaluate_early`).

    `numerator`/`denominator` are the rate's counters so far in the window.
    `baseline_rate` is the segment's baseline from its latest rate test, known before this
    window (None: no baseline; a `change` condition then cannot be evaluated early).
    `typical_denominator` is the segment's denominator in its last closed window (None or 0:
    unknown); it sets where the test is sharpest and must not come from this window.
    `buckets` is ``(numerators, denominators)`` split by user bucket, adding up to the
    counters (None: unavailable, events are then taken as independent).
    `baseline_counts` are the numerator and denominator behind `baseline_rate` (for a
    `rise` condition; None: unknown, and it cannot be evaluated early).
    `slices` is ``(numerators, denominators)`` per slice of the window, in time order,
    adding up to the counters (None: unknown; the window is then tested whole, see
    `spans`). `next_slices` are the same of the window after this one when it is open too
    (None: none yet, or unknown): the window's latest slices are tested together with the
    next window's first ones, up to one window's length; `next_buckets` its per-user-bucket
    sums (None: unknown, and then a span with the next window's events is not tested,
    unless the rule counts events).
    """

    segment: Segment
    numerator: int
    denominator: int
    baseline_rate: float | None = None
    typical_denominator: int | None = None
    buckets: tuple[Sequence[int], Sequence[int]] | None = None
    baseline_counts: tuple[int, int] | None = None
    slices: tuple[Sequence[int], Sequence[int]] | None = None
    next_slices: tuple[Sequence[int], Sequence[int]] | None = None
    next_buckets: tuple[Sequence[int], Sequence[int]] | None = None


@dataclass(frozen=True)
class AlertState:
    """What the caller persists per (rule, segment) between windows.

    `true_windows`: consecutive windows with the condition true, up to `last_window`;
    `false_windows`: consecutive false windows while firing (the `keep_firing_for` grace);
    `started_at`: the first window of the current true streak (None after a false window);
    `firing_since`: the window in which the alert fired (None unless firing);
    `last_window`: the last window evaluated for this segment.
    """

    rule: str
    segment: Segment
    status: Status = "inactive"
    true_windows: int = 0
    false_windows: int = 0
    started_at: datetime | None = None
    firing_since: datetime | None = None
    last_window: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """A change of status of one segment in one window, with the values that caused it.

    `to_status` is ``resolved`` when a firing alert stops (its state becomes inactive). The
    measured values are None when the segment had no input in the window (traffic stopped).
    `windows` is the number of consecutive true windows up to this one.

    `early` is True for a transition to firing made by `evaluate_early` on a window that is
    still open; its values are the running counts so far, `q_value`, `difference` and
    `drift_value` are None, and `windows` counts the open window as true. `evidence` is then
    the e-value that crossed ``1 / EARLY_ALPHA`` (``math.inf`` for a rule whose reference
    rate is 0, where a single event is conclusive); None for closed-window transitions.
    """

    rule: str
    segment: Segment
    window_start: datetime
    from_status: Status
    to_status: TransitionTo
    severity: str
    windows: int
    value: float | None
    lower: float | None
    upper: float | None
    numerator: int | None
    denominator: int | None
    baseline_rate: float | None
    q_value: float | None
    difference: float | None
    drift_value: float | None
    firing_since: datetime | None
    summary: str
    description: str
    early: bool = False
    evidence: float | None = None


@dataclass(frozen=True)
class Measured:
    """A segment's window through the rule: the rate with its interval, and the verdict."""

    value: float | None
    lower: float
    upper: float
    condition: bool


# A numerator is "concentrated" (one actor, not a regression) when at least this many of its
# events...
CONCENTRATION_MIN = 10
# ...and at least this share of them sit in one user bucket...
CONCENTRATION_SHARE = 0.5
# ...which holds at most this share of the denominator's events: the traffic is spread over
# many users and the numerator is not.
CONCENTRATION_TRAFFIC = 0.2


def concentrated(buckets: BucketSums | None) -> bool:
    """Whether one user bucket holds the bulk of the numerator but not of the traffic:
    at least CONCENTRATION_MIN numerator events, CONCENTRATION_SHARE of them in the top
    bucket, which holds at most CONCENTRATION_TRAFFIC of the denominator. False when the
    buckets are unknown or the segment's traffic itself comes from a few users (nothing
    then tells one actor from the rest).
    """
    if buckets is None or buckets.numerator < CONCENTRATION_MIN:
        return False
    top = max(range(buckets.buckets), key=lambda b: buckets.numerators[b])
    share = buckets.numerators[top] / buckets.numerator
    traffic = buckets.denominators[top] / buckets.denominator
    return share >= CONCENTRATION_SHARE and traffic <= CONCENTRATION_TRAFFIC


def interval(window: SegmentWindow | OpenWindow) -> tuple[float, float]:
    """The rate's 95 % interval: cluster-robust over user buckets when they are known
    (pipelines.metrics.buckets.robust_interval, never narrower than Wilson), else Wilson.
    """
    b = window.buckets
    if isinstance(b, BucketSums) and b.denominator == window.denominator:
        return robust_interval(b.numerators, b.denominators)
    return wilson_interval(window.numerator, window.denominator)


def counts_events(rule: Rule) -> bool:
    """Whether every event of `rule` is evidence on its own (`evidence: events`, or a rule
    about one actor, `concentrated: true`): Wilson's interval, no design effect.
    """
    return bool(rule.concentrated) or rule.evidence == "events"


def design_effect(window: SegmentWindow) -> float:
    """How many of the window's events count as one independent event (>= 1; inf when they
    may all be one actor's): from its user buckets, 1 when they are unknown.
    """
    b = window.buckets
    if b is None or b.denominator != window.denominator or not b.numerator:
        return 1.0
    return float(design_effects([b.numerators], [b.denominators])[0])


def measure(rule: Rule, window: SegmentWindow, *, exact: bool = True) -> Measured:
    """The rate's point estimate and 95 % interval (`interval`; Wilson's for a rule that
    counts events, `counts_events`), and whether the condition holds.

    With `exact` False the condition is the same but the interval may be Wilson's where
    the robust one was not needed to decide it: the robust interval contains Wilson's, so
    a threshold that Wilson's bound does not cross is not crossed by the robust bound
    either (most segments, most windows: the robust interval costs far more). Callers that
    show the interval (a transition) measure exactly.
    """
    lower, upper = wilson_interval(window.numerator, window.denominator)
    # A rule about one actor (`concentrated: true`) or with `evidence: events` asks whether
    # these events happened, not what the rate of the user population is: its evidence is
    # the events, Wilson's interval.
    if not counts_events(rule) and window.buckets is not None:
        decided = (
            not exact
            and rule.threshold is not None
            and rule.match == "all"
            and not rule.threshold.holds(lower, upper)
        )
        if not decided:
            lower, upper = interval(window)
    value = window.numerator / window.denominator if window.denominator else None
    results = []
    if rule.threshold is not None:
        results.append(
            rule.threshold.applies(window.denominator, window.baseline_counts)
            and rule.threshold.holds(lower, upper)
        )
    if rule.change is not None:
        results.append(rule.change.holds(window.q_value, window.difference))
    if rule.drift is not None:
        results.append(rule.drift.holds(window.drift_value))
    if rule.rise is not None:
        x, n, base = window.numerator, window.denominator, window.baseline_counts
        if not rate(rule.metric).higher_is_worse:
            # A rate that gets worse as it falls (completeness): its shortfall rises.
            x = n - x
            base = None if base is None else (base[1] - base[0], base[1])
        # Clustering only weakens the test: it needs the design effect only when it
        # holds with independent events.
        holds = rule.rise.holds(x, n, base)
        if holds and not counts_events(rule):
            holds = rule.rise.holds(x, n, base, design_effect(window))
        results.append(holds)
    combined = all(results) if rule.match == "all" else any(results)
    if rule.concentrated is not None:
        combined = combined and concentrated(window.buckets) == rule.concentrated
    condition = window.denominator >= rule.min_events and combined and window.confirmed
    return Measured(value, lower, upper, condition)


def evaluate(
    rule: Rule,
    window_start: datetime,
    inputs: Sequence[SegmentWindow],
    states: Mapping[Segment, AlertState],
) -> tuple[dict[Segment, AlertState], list[Transition]]:
    """Advance every segment of `rule` by the window starting at `window_start`.

    Returns the new state of every segment in `inputs` or `states` (a dict in segment
    order; an inactive state of an absent segment is returned unchanged) and the
    transitions, in segment order. Raises ValueError for a naive `window_start`, an input
    whose segment does not name the rule's `by` dimensions in order, a segment given twice,
    or a state of another rule or segment.
    """
    by_segment = index_inputs(rule, window_start, inputs, states)
    new_states: dict[Segment, AlertState] = {}
    transitions: list[Transition] = []
    for seg in sorted(by_segment.keys() | states.keys()):
        before = states.get(seg, AlertState(rule.name, seg))
        window = by_segment.get(seg)
        if (before.last_window is not None and window_start <= before.last_window) or (
            window is None and before.status == "inactive"
        ):
            new_states[seg] = before
            continue
        measured = None if window is None else measure(rule, window, exact=False)
        condition = measured is not None and measured.condition
        if not condition and _fired_later(before, window_start):
            # Fired early on a later window while this one was still open: its own
            # incident had not started here, and this window does not count against it.
            new_states[seg] = replace(before, last_window=window_start)
            continue
        after, to_status = _step(rule, before, window_start, condition)
        new_states[seg] = after
        if to_status is not None:
            measured = None if window is None else measure(rule, window)
            transitions.append(
                build_transition(
                    rule, seg, window_start, before, after, to_status, window, measured
                )
            )
    return new_states, transitions


def _fired_later(state: AlertState, window_start: datetime) -> bool:
    """Whether `state` fires since a window after `window_start` (it fired early there)."""
    return (
        state.status == "firing"
        and state.firing_since is not None
        and window_start < state.firing_since
    )


_Input = TypeVar("_Input", SegmentWindow, OpenWindow)


def index_inputs(
    rule: Rule,
    window_start: datetime,
    inputs: Sequence[_Input],
    states: Mapping[Segment, AlertState],
) -> dict[Segment, _Input]:
    """`inputs` by segment, after the checks shared by `evaluate` and `evaluate_early`."""
    if window_start.tzinfo is None:
        msg = f"window_start must be timezone-aware (UTC), got {window_start}"
        raise ValueError(msg)
    by_segment: dict[Segment, _Input] = {}
    for w in inputs:
        if tuple(d for d, _ in w.segment) != rule.by:
            msg = f"rule {rule.name}: segment {w.segment} does not match by {list(rule.by)}"
            raise ValueError(msg)
        if w.segment in by_segment:
            msg = f"rule {rule.name}: segment {w.segment} given twice"
            raise ValueError(msg)
        by_segment[w.segment] = w
    for seg, state in states.items():
        if state.rule != rule.name or state.segment != seg:
            msg = f"rule {rule.name}: state {state.rule} {state.segment} filed under {seg}"
            raise ValueError(msg)
    return by_segment


def _step(
    rule: Rule, before: AlertState, window_start: datetime, condition: bool
) -> tuple[AlertState, TransitionTo | None]:
    """The state after one window, and the status it moved to (None: no transition)."""
    if condition:
        true_windows = before.true_windows + 1
        after = replace(
            before,
            true_windows=true_windows,
            false_windows=0,
            started_at=before.started_at if before.true_windows else window_start,
            last_window=window_start,
        )
        if before.status == "firing":
            return after, None
        if true_windows >= rule.for_windows:
            return replace(after, status="firing", firing_since=window_start), "firing"
        return replace(after, status="pending"), None if before.status == "pending" else "pending"
    cleared = AlertState(before.rule, before.segment, last_window=window_start)
    if before.status == "firing":
        false_windows = before.false_windows + 1
        if false_windows > rule.keep_firing_for:
            return cleared, "resolved"
        return replace(
            before,
            true_windows=0,
            false_windows=false_windows,
            started_at=None,
            last_window=window_start,
        ), None
    return cleared, "inactive" if before.status == "pending" else None


def build_transition(
    rule: Rule,
    segment: Segment,
    window_start: datetime,
    before: AlertState,
    after: AlertState,
    to_status: TransitionTo,
    window: SegmentWindow | None,
    measured: Measured | None,
    *,
    early: bool = False,
    evidence: float | None = None,
) -> Transition:
    """The transition of `segment` from `before` to `after` in `window_start`, with the
    window's values and the rule's summary and description rendered; `early` and
    `evidence` for a firing on an open window (its window counts as true).
    """
    windows = after.true_windows + 1 if early else after.true_windows
    fields: dict[str, object] = {
        "rule": rule.name,
        "metric": rule.metric,
        "segment": segment_label(segment),
        **dict(segment),
        "value": None if measured is None else measured.value,
        "lower": None if measured is None else measured.lower,
        "upper": None if measured is None else measured.upper,
        "numerator": None if window is None else window.numerator,
        "denominator": None if window is None else window.denominator,
        "baseline": None if window is None else window.baseline_rate,
        "q_value": None if window is None else window.q_value,
        "window_start": window_start,
        "windows": windows,
        "severity": rule.severity,
    }
    return Transition(
        rule=rule.name,
        segment=segment,
        window_start=window_start,
        from_status=before.status,
        to_status=to_status,
        severity=rule.severity,
        windows=windows,
        value=None if measured is None else measured.value,
        lower=None if measured is None else measured.lower,
        upper=None if measured is None else measured.upper,
        numerator=None if window is None else window.numerator,
        denominator=None if window is None else window.denominator,
        baseline_rate=None if window is None else window.baseline_rate,
        q_value=None if window is None else window.q_value,
        difference=None if window is None else window.difference,
        drift_value=None if window is None else window.drift_value,
        firing_since=before.firing_since if to_status == "resolved" else after.firing_since,
        summary=render_template(rule.summary, fields),
        description=render_template(rule.description, fields),
        early=early,
        evidence=evidence,
    )


def still_firing(
    rule: Rule, window_start: datetime, state: AlertState, window: SegmentWindow | None
) -> Transition:
    """A firing segment's values in a window that changed nothing (firing -> firing).

    For re-notifying: a receiver that expires alerts (Alertmanager's `endsAt`) keeps an
    ongoing alert active when it is sent again every window.
    """
    if state.status != "firing":
        msg = f"rule {rule.name}: segment {state.segment} is {state.status}, not firing"
        raise ValueError(msg)
    measured = None if window is None else measure(rule, window)
    return build_transition(
        rule, state.segment, window_start, state, state, "firing", window, measured
    )
