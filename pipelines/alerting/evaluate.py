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
  state becomes inactive; a true window inside that grace period keeps it firing.

A segment absent from the window's inputs (its traffic stopped) has a false window when its
state is pending or firing. Windows must be evaluated in ascending order, each one once:
a window that is not after a segment's `last_window` leaves that segment's state as it is
and produces no transition, so replaying a window (after a crash, or a backfill that
overlaps) never transitions twice. "Consecutive" means consecutive evaluations: the caller
evaluates every closed window, in order, including those where a segment is absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from pipelines.alerting.rules import Rule, render_template
from pipelines.metrics.stats import wilson_interval

Segment = tuple[tuple[str, str], ...]  # ((dimension, value), ...) in the rule's `by` order
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


@dataclass(frozen=True)
class Measured:
    """A segment's window through the rule: the rate with its interval, and the verdict."""

    value: float | None
    lower: float
    upper: float
    condition: bool


def measure(rule: Rule, window: SegmentWindow) -> Measured:
    """The rate's point estimate and Wilson 95 % interval, and whether the condition holds."""
    lower, upper = wilson_interval(window.numerator, window.denominator)
    value = window.numerator / window.denominator if window.denominator else None
    results = []
    if rule.threshold is not None:
        results.append(rule.threshold.holds(lower, upper))
    if rule.change is not None:
        results.append(rule.change.holds(window.q_value, window.difference))
    if rule.drift is not None:
        results.append(rule.drift.holds(window.drift_value))
    combined = all(results) if rule.match == "all" else any(results)
    return Measured(value, lower, upper, window.denominator >= rule.min_events and combined)


def segment_label(segment: Segment) -> str:
    """``chat / atlas-l-2026.10.2 / de-DE``, or ``all traffic`` for the empty segment."""
    return " / ".join(value for _, value in segment) or "all traffic"


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
    if window_start.tzinfo is None:
        msg = f"window_start must be timezone-aware (UTC), got {window_start}"
        raise ValueError(msg)
    by_segment: dict[Segment, SegmentWindow] = {}
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
        measured = None if window is None else measure(rule, window)
        after, to_status = _step(
            rule, before, window_start, measured is not None and measured.condition
        )
        new_states[seg] = after
        if to_status is not None:
            transitions.append(
                _transition(rule, seg, window_start, before, after, to_status, window, measured)
            )
    return new_states, transitions


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


def _transition(
    rule: Rule,
    segment: Segment,
    window_start: datetime,
    before: AlertState,
    after: AlertState,
    to_status: TransitionTo,
    window: SegmentWindow | None,
    measured: Measured | None,
) -> Transition:
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
        "windows": after.true_windows,
        "severity": rule.severity,
    }
    return Transition(
        rule=rule.name,
        segment=segment,
        window_start=window_start,
        from_status=before.status,
        to_status=to_status,
        severity=rule.severity,
        windows=after.true_windows,
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
    return _transition(rule, state.segment, window_start, state, state, "firing", window, measured)
