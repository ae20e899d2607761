"""Early evaluation: firing on a window that is still open, from its running counts.

After every micro-batch the caller may also pass a window that is still open, with its
running counts (`OpenWindow`), to `evaluate_early` (docs/alert-rules.md "Early firing on
open windows"). A rule with `early` set moves a segment that is not firing
straight to firing when an anytime-valid test (pipelines.alerting.sequential.rate_exceeds,
at level `EARLY_ALPHA`) shows that the rate is above the rule's reference (`early_reference`).
Nothing else: it never produces pending, inactive or resolved, and leaves the counters and
`last_window` alone, so the closed evaluation of the same window still runs later and is the
one that keeps the alert firing or resolves it.

Pure, as `pipelines.alerting.evaluate`, whose states, inputs and transitions it shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from pipelines.alerting.evaluate import (
    AlertState,
    Measured,
    OpenWindow,
    SegmentWindow,
    Transition,
    build_transition,
    concentrated,
    counts_events,
    index_inputs,
)
from pipelines.alerting.model import EARLY_ALPHA, Rule
from pipelines.alerting.sequential import bucket_excess, rate_exceeds
from pipelines.metrics.buckets import BucketSums
from pipelines.metrics.catalog import rate
from pipelines.metrics.stats import wilson_interval
from pipelines.segments import Segment


@dataclass(frozen=True)
class Span:
    """What early evaluation tests of an open window: its slices from `first` on (0: the
    whole window so far) and, for ``first >= 1``, the next window's first `first` slices;
    their counts; the share of the window's length its own slices make (which sets the
    test's tuning, fixed before the data); and whether it holds events of the next window.
    """

    first: int
    numerator: int
    denominator: int
    share: float
    crosses: bool = False


def early_reference(
    rule: Rule,
    baseline_rate: float | None,
    baseline_counts: tuple[int, int] | None = None,
    denominator: int | None = None,
) -> float | None:
    """The rate ``p0`` that an open window must be shown to exceed for `rule` to fire early.

    None when the rule's conditions cannot be evaluated early (whatever `rule.early` says).
    A condition's reference: `threshold: {above: L}` gives ``L``; `change` with direction
    `up` gives ``baseline_rate + min_difference`` (not evaluable without a baseline); a
    `below` threshold, a `change` down or any, and `drift` are not evaluable; `rise` gives
    `Rise.reference` of `baseline_counts` (not evaluable without them). A threshold with
    its own `min_events` is not evaluable while `denominator` (the open window's, when
    given) is below it, nor one with `until_baseline` once `baseline_counts` reach it. With
    `match: all` every condition must be evaluable and the reference is the largest (a rate
    above it is above each one); with `match: any` the evaluable ones count and the
    reference is the smallest (None if none is evaluable).
    """
    references: list[float | None] = []
    if rule.threshold is not None:
        out = denominator is not None and not rule.threshold.applies(denominator, baseline_counts)
        references.append(None if out else rule.threshold.above)  # None for `below`
    if rule.change is not None:
        if rule.change.direction == "up" and baseline_rate is not None:
            references.append(baseline_rate + rule.change.min_difference)
        else:
            references.append(None)
    if rule.drift is not None:
        references.append(None)
    if rule.rise is not None:
        # The shortfall of a rate that gets worse as it falls is not tested early.
        shortfall = not rate(rule.metric).higher_is_worse
        references.append(None if shortfall else rule.rise.reference(baseline_counts))
    known = [r for r in references if r is not None]
    if rule.match == "all":
        return max(known) if known and len(known) == len(references) else None
    return min(known) if known else None


def can_fire_early(rule: Rule) -> bool:
    """Whether `rule` may ever fire on an open window: `early` set, and a condition that can
    be evaluated early given some baseline. A caller can skip open windows for other rules.
    """
    # A rule with horizons sums closed windows: it is evaluated when a window closes.
    return bool(rule.early) and not rule.horizons and early_reference(rule, 0.0, (0, 1)) is not None


def _check_open(rule: Rule, window: OpenWindow) -> None:
    problem = None
    if not 0 <= window.numerator <= window.denominator:
        problem = f"need 0 <= numerator <= denominator, got {window.numerator}/{window.denominator}"
    elif window.baseline_rate is not None and not 0.0 <= window.baseline_rate <= 1.0:
        problem = f"baseline_rate {window.baseline_rate} is not between 0 and 1"
    elif window.typical_denominator is not None and window.typical_denominator < 0:
        problem = f"typical_denominator {window.typical_denominator} is negative"
    if problem is not None:
        msg = f"rule {rule.name}: segment {window.segment}: {problem}"
        raise ValueError(msg)


# The share of EARLY_ALPHA spent on the whole window when it has slices; the rest is shared
# equally by its shorter spans. Half: an incident that fills the window (it started before
# it) keeps most of its speed, one that starts mid-window gains the spans.
WHOLE_WINDOW_SHARE = 0.5


def _slice_sums(
    slices: tuple[Sequence[int], Sequence[int]] | None,
) -> tuple[list[int], list[int]] | None:
    """Per-slice sums as two lists of ints, or None unless they are usable: at least two
    slices, as many numerators as denominators, each ``0 <= x <= n``.
    """
    if slices is None:
        return None
    nums, dens = (list(map(int, v)) for v in slices)
    if (
        len(nums) < 2
        or len(dens) != len(nums)
        or any(not 0 <= x <= n for x, n in zip(nums, dens, strict=True))
    ):
        return None
    return nums, dens


def spans(window: OpenWindow) -> list[Span]:
    """The samples early evaluation tests in `window`: the whole window so far, then, with
    `slices` (S of them, adding up to the counters), for ``j = 1 .. S - 1`` the window's
    slices from ``j`` on followed by the first ``j`` slices of the next window (its
    `next_slices`, when it has S usable ones): a span of one window's length that starts
    at slice ``j``, tested as its events arrive whichever window they fall in. Without
    slices, or with slices that do not add up, the whole window only. Their number
    depends on the window's slicing, never on its data.
    """
    whole = Span(0, window.numerator, window.denominator, 1.0)
    own = _slice_sums(window.slices)
    if own is None or (sum(own[0]), sum(own[1])) != (window.numerator, window.denominator):
        return [whole]
    nums, dens = own
    count = len(nums)
    after = _slice_sums(window.next_slices)
    if after is None or len(after[0]) != count:
        after = ([0] * count, [0] * count)
    out = [whole]
    for j in range(1, count):
        extra = sum(after[1][:j])
        out.append(
            Span(
                j,
                sum(nums[j:]) + sum(after[0][:j]),
                sum(dens[j:]) + extra,
                (count - j) / count,
                crosses=extra > 0,
            )
        )
    return out


def _excess(
    buckets: tuple[Sequence[int], Sequence[int]],
    next_buckets: tuple[Sequence[int], Sequence[int]] | None,
    crosses: bool,
) -> float | None:
    """The between-user excess a span is tested with: the window's (`bucket_excess`), or,
    for a span that reaches into the next window, that of both windows' buckets added up
    (a user keeps their bucket across windows); None when the next window's are unknown.
    """
    if not crosses:
        return bucket_excess(*buckets)
    if next_buckets is None or len(next_buckets[0]) != len(buckets[0]):
        return None
    return bucket_excess(
        [a + b for a, b in zip(buckets[0], next_buckets[0], strict=True)],
        [a + b for a, b in zip(buckets[1], next_buckets[1], strict=True)],
    )


def early_evidence(rule: Rule, window: OpenWindow) -> tuple[float, Span] | None:
    """The e-value with which `window` fires `rule` early and the span that fired it, or
    None if it does not fire.

    Each of the window's `spans` (the whole window, and its latest slices) is a sample that
    only grows as batches arrive, tested on its own: the whole window at
    ``EARLY_ALPHA * WHOLE_WINDOW_SHARE`` (all of ``EARLY_ALPHA`` without slices), each
    shorter span at an equal share of the rest. The chance that any of them ever fires in
    a window whose rate is at most the reference is at most ``EARLY_ALPHA`` (a union
    bound). A span fires when its denominator is at least `min_events` and, with ``p0``
    the rule's `early_reference` at that denominator (None or ``p0 >= 1``: never), either
    ``p0 == 0`` and one event has been seen (e-value ``math.inf``: at rate 0 no event can
    occur), or `rate_exceeds` fires. Its ``v_opt`` is
    ``typical * share * p0 * (1 - p0)``, `typical` being the window's `typical_denominator`
    (the last closed window's), or ``max(min_events, 1)`` when unknown: never the open
    window's own counts, because the test's guarantee needs ``v_opt`` fixed before the
    window's data are seen. The whole window uses its user buckets; a shorter span, whose
    own buckets are not kept, the excess of the whole window's (its events and more), or
    of both windows' when it reaches into the next one (`_excess`). The
    first span that fires, in `spans` order, is returned. Ignores `rule.early` and the
    segment's state (see `evaluate_early`).
    """
    if window.denominator < rule.min_events:
        return None
    if rule.concentrated is not None:
        sums = None if window.buckets is None else BucketSums(*map(tuple, window.buckets))
        if concentrated(sums) != rule.concentrated:
            return None
    tested = spans(window)
    shorter = len(tested) - 1
    whole_alpha = EARLY_ALPHA * (WHOLE_WINDOW_SHARE if shorter else 1.0)
    typical = window.typical_denominator or max(rule.min_events, 1)
    buckets = None if counts_events(rule) else window.buckets
    excesses: dict[bool, float | None] = {}
    for span in tested:
        if span.denominator < rule.min_events or span.denominator == 0:
            continue
        p0 = early_reference(rule, window.baseline_rate, window.baseline_counts, span.denominator)
        if p0 is None or p0 >= 1.0:
            continue
        if p0 <= 0.0:
            if span.numerator >= 1:
                return math.inf, span
            continue
        if span.numerator <= p0 * span.denominator:
            # At or below the reference every likelihood ratio of a rate above it is <= 1,
            # and so is the exact e-value (the smaller of the two the test takes): no
            # evidence. Most segments, most batches: skip the test's cost.
            continue
        excess = None
        if span.first and buckets is not None:
            if span.crosses not in excesses:
                excesses[span.crosses] = _excess(buckets, window.next_buckets, span.crosses)
            excess = excesses[span.crosses]
            if excess is None:
                continue  # the next window's users are unknown: not tested across
        evidence = rate_exceeds(
            span.numerator,
            span.denominator,
            p0,
            alpha=whole_alpha if span.first == 0 else (EARLY_ALPHA - whole_alpha) / shorter,
            v_opt=max(typical * span.share, 1.0) * p0 * (1.0 - p0),
            buckets=buckets if span.first == 0 else None,
            cluster_excess=excess,
        )
        if evidence.fired:
            return evidence.e_value, span
    return None


def evaluate_early(
    rule: Rule,
    window_start: datetime,
    inputs: Sequence[OpenWindow],
    states: Mapping[Segment, AlertState],
    *,
    next_start: datetime | None = None,
) -> tuple[dict[Segment, AlertState], list[Transition]]:
    """Fire, before the window starting at `window_start` closes, the segments whose running
    counts already show that `rule`'s rate is above its reference (`early_evidence`).

    Only when `rule.early` is set, and only for segments of `inputs` whose state is not
    firing, whose `last_window` is before `window_start` (a window already evaluated closed
    is left alone), and for which this window would complete the rule's `for` streak
    (``true_windows + 1 >= for``: early firing saves the wait for the window to close, not
    the windows `for` asks for). A segment that fires becomes `firing` with `firing_since`
    = `window_start` and `started_at` = `window_start` unless already set; `true_windows`,
    `false_windows` and `last_window` are unchanged, so the closed evaluation of the same
    window (`evaluate`) still runs: a true window keeps it firing with no new transition, a
    false one counts against `keep_firing_for` and may resolve it. Early evaluation never
    produces pending, inactive or resolved; a window may be evaluated early any number of
    times (a segment already firing is skipped).

    A span that reaches into the next window (inputs with `next_slices`, see `spans`) fires
    the segment in that window, starting at `next_start`: its page is about the window its
    latest events are in, and the closing of this window, where the incident may hardly
    show, then changes nothing but `last_window` (see `evaluate`).

    Returns every state of `states` (unchanged unless the segment fired) plus the new state
    of every segment that fired, as a dict in segment order; a segment of `inputs` that has
    no state and does not fire gets none. The transitions (to firing, `early` True, with
    the values of the span that fired and the `evidence`) are in segment order. Raises
    ValueError as `evaluate` does, and for counts with ``numerator > denominator`` or
    negative, a `baseline_rate` outside [0, 1], a negative `typical_denominator`, or inputs
    with `next_slices` without a `next_start` after `window_start`.
    """
    by_segment = index_inputs(rule, window_start, inputs, states)
    for w in by_segment.values():
        _check_open(rule, w)
    if any(w.next_slices is not None for w in by_segment.values()) and (
        next_start is None or next_start <= window_start
    ):
        msg = f"rule {rule.name}: inputs with next_slices need a next_start after {window_start}"
        raise ValueError(msg)
    new_states = dict(states)
    transitions: list[Transition] = []
    if rule.early:
        for seg in sorted(by_segment):
            before = states.get(seg, AlertState(rule.name, seg))
            if (
                before.status == "firing"
                or (before.last_window is not None and window_start <= before.last_window)
                or before.true_windows + 1 < rule.for_windows
            ):
                continue
            w = by_segment[seg]
            found = early_evidence(rule, w)
            if found is None:
                continue
            evidence, span = found
            at = next_start if span.crosses and next_start is not None else window_start
            after = replace(
                before,
                status="firing",
                started_at=before.started_at or at,
                firing_since=at,
            )
            new_states[seg] = after
            lower, upper = wilson_interval(span.numerator, span.denominator)
            measured = Measured(span.numerator / span.denominator, lower, upper, True)
            window = SegmentWindow(
                seg,
                span.numerator,
                span.denominator,
                baseline_rate=w.baseline_rate,
                baseline_counts=w.baseline_counts,
            )
            transitions.append(
                build_transition(
                    rule,
                    seg,
                    at,
                    before,
                    after,
                    "firing",
                    window,
                    measured,
                    early=True,
                    evidence=evidence,
                )
            )
    return {seg: new_states[seg] for seg in sorted(new_states)}, transitions
