"""The synthetic week of the alert-quality benchmark (tests.benchmarks.synthetic_week): its ground
truth is consistent, its counts add up to the events it drew, and it is deterministic.

A 12-hour period (the shortest) is generated once for the module: a few seconds.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import numpy as np
import numpy.typing as npt
import pytest

from pipelines.metrics.buckets import BUCKETS
from pipelines.metrics.catalog import POLICY_CATEGORIES, bucket_counter_ids, counter_ids
from tests.benchmarks.synthetic_week import (
    _CHUNK_S,
    ACCEPTANCE_SEEDS,
    AFFECTED,
    DIMENSIONS,
    EVENT_KINDS,
    KINDS,
    SAME_SEGMENT_GAP,
    TAIL,
    TUNING_SEEDS,
    WARMUP,
    Slice,
    WeekPlan,
    WeekTotals,
    _draw_chunk,
    _outcomes,
    describe_plan,
    iter_slices,
    plan_week,
)
from tests.benchmarks.synthetic_week import Incident as WeekIncident

SEED = 4242  # neither a tuning nor an acceptance seed
PARTS = 5  # slices of a window (stream.early_slice of 1 minute in 5-minute windows)


@pytest.fixture(scope="module")
def week() -> tuple[WeekPlan, list[Slice], WeekTotals]:
    plan = plan_week(SEED, days=0.5)
    totals = WeekTotals()
    slices = list(iter_slices(plan, totals, parts=PARTS))
    return plan, slices, totals


def test_tuning_and_acceptance_seeds_are_apart() -> None:
    assert not set(TUNING_SEEDS) & set(ACCEPTANCE_SEEDS)
    assert SEED not in TUNING_SEEDS + ACCEPTANCE_SEEDS


def test_segments_span_volumes_and_roles(week: tuple[WeekPlan, list[Slice], WeekTotals]) -> None:
    plan, _, _ = week
    assert len(plan.segments) >= 30
    assert len({s.values for s in plan.segments}) == len(plan.segments)
    volumes = [s.volume for s in plan.segments]
    assert min(volumes) < 1.0  # too small for any one window
    assert max(volumes) > 300
    roles = {s.role for s in plan.segments}
    assert roles == {"regular", "rollout", "new", "tiny"}
    for s in plan.segments:
        if s.role == "rollout":
            assert s.parent is not None and plan.segments[s.parent].values[2] == s.values[2]
    assert "rollout" in describe_plan(plan)


def test_every_kind_has_its_incidents_inside_the_period(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    plan, _, _ = week
    by_kind = defaultdict(list)
    for inc in plan.incidents:
        by_kind[inc.kind].append(inc)
    assert set(by_kind) == set(KINDS)
    assert all(len(v) >= 3 for v in by_kind.values())  # 24 a week, scaled to 12 h
    for inc in plan.incidents:
        assert plan.start <= inc.start <= inc.end <= plan.end - TAIL
        if not inc.from_first_window:
            assert inc.start >= plan.start + WARMUP
        assert inc.segment == plan.segments[inc.segment_index].values
        if inc.kind in EVENT_KINDS:
            # Start and end are the first and last injected event.
            assert inc.events == len(inc.event_times) >= 1
            assert inc.start == plan.start + timedelta(seconds=inc.event_times[0])
            assert inc.end == plan.start + timedelta(seconds=inc.event_times[-1])
            assert inc.multiplier > 1.0
        else:
            assert inc.multiplier >= 1.0 and inc.end > inc.start
    # The segments harmful from their first window start with their segment.
    new = [i for i in plan.incidents if i.from_first_window]
    assert len(new) == 2 and {i.kind for i in new} == {"harmful_rate"}
    for inc in new:
        seg = plan.segments[inc.segment_index]
        assert inc.start == plan.start + timedelta(seconds=seg.starts)


def test_incidents_of_a_segment_never_overlap(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    plan, _, _ = week
    by_segment = defaultdict(list)
    for inc in plan.incidents:
        by_segment[inc.segment].append(inc)
    for incidents in by_segment.values():
        incidents.sort(key=lambda i: i.start)
        for a, b in itertools.pairwise(incidents):
            assert b.start - a.end >= SAME_SEGMENT_GAP


def test_the_counts_add_up_to_the_events_drawn(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    plan, slices, totals = week
    assert totals.drawn == totals.aggregated + totals.incomplete + totals.late + totals.unarrived
    assert totals.late > 0 and totals.duplicates > 0 and totals.incomplete > 0
    sums = dict.fromkeys(counter_ids(), 0)
    for sl in slices:
        assert sl.arrived == sl.aggregated + sl.incomplete + sl.late
        assert sum(r["events"] for r in sl.aggregates) == sl.aggregated
        assert sum(r["events_seen"] for r in sl.aggregates) == sl.aggregated + sl.incomplete
        for r in sl.aggregates:
            for c in counter_ids():
                sums[c] += r[c]
    assert sums == totals.counters
    assert sums["events"] == totals.aggregated
    assert sum(sl.arrived for sl in slices) == totals.drawn - totals.unarrived
    assert sum(sl.duplicates for sl in slices) == totals.duplicates


def test_each_row_is_consistent(week: tuple[WeekPlan, list[Slice], WeekTotals]) -> None:
    plan, slices, _ = week
    names = {s.values for s in plan.segments}
    for sl in slices[::7]:
        for r in sl.aggregates:
            assert tuple(r[d] for d in DIMENSIONS) in names
            assert r["dimension_set"] == ",".join(DIMENSIONS)
            assert r["feature"] == "*" and r["users_sketch"] is None
            assert r["window_end"] - r["window_start"] == plan.window
            # A row may hold only schema violations: events 0, events_seen > 0.
            assert 0 <= r["events"] == r["telemetry_complete"] <= r["events_seen"]
            assert r["events_seen"] > 0
            assert r["violations"] + r["unflagged_events"] == r["events"]
            assert max(r[f"violations_{c}"] for c in POLICY_CATEGORIES) <= r["violations"]
            assert r["violations"] <= sum(r[f"violations_{c}"] for c in POLICY_CATEGORIES)
            assert r["over_refusals"] <= r["refusals"] <= r["events"]
            assert r["injection_successes"] <= r["injection_attempts"]
            assert r["jailbreak_successes"] <= r["jailbreak_attempts"]
            assert r["unauthorized_tool_call_events"] <= r["tool_call_events"]
            assert r["blocks"] + r["refusals"] == r["blocked_or_refused"]
            assert r["appeal_overturns"] <= r["blocked_or_refused"]
            assert r["redaction_failures"] <= r["events"]


def test_per_bucket_sums_add_up_to_the_counters(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    _, slices, _ = week
    kept = set(bucket_counter_ids())
    rows = 0
    for sl in slices:
        for r in sl.aggregates:
            sums = r["bucket_sums"]
            assert set(sums) <= kept
            for c in kept:
                values = sums.get(c, [0] * BUCKETS)
                assert len(values) == BUCKETS and min(values) >= 0
                assert sum(values) == r[c], (c, r)
            assert all(any(v) for v in sums.values())  # all-zero counters are left out
            rows += 1
    assert rows > 10_000


def test_per_slice_sums_add_up_and_hold_no_event_from_the_future(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    # A batch's events arrived by its end: in the window its end falls in, no part after
    # the one holding that instant can have events; the parts add up to the counters.
    plan, slices, _ = week
    kept = set(bucket_counter_ids())
    part_length = plan.window / PARTS
    spread = 0
    for sl in slices:
        for r in sl.aggregates:
            sums = r["slice_sums"]
            assert set(sums) == set(r["bucket_sums"])
            for c in kept:
                values = sums.get(c, [0] * PARTS)
                assert len(values) == PARTS and min(values) >= 0
                assert sum(values) == r[c], (c, r)
            if r["window_start"] <= sl.end < r["window_end"]:
                now = int((sl.end - r["window_start"]) / part_length)
                events = sums.get("events", [0] * PARTS)
                assert not any(events[now + 1 :]), (sl.end, r)
                spread += sum(1 for v in events if v) > 1
    assert spread > 100  # batches that straddle a part boundary, or carry late events


def test_histograms_count_every_aggregated_event_once(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    _, slices, _ = week
    for sl in slices[::5]:
        events: dict[tuple[object, ...], int] = defaultdict(int)
        for h in sl.histograms:
            assert h["distribution"] == "outcome" and 0 <= h["bin"] < 5 and h["count"] > 0
            events[(h["window_start"], *(h[d] for d in DIMENSIONS))] += h["count"]
        rows = {
            (r["window_start"], *(r[d] for d in DIMENSIONS)): r["events"]
            for r in sl.aggregates
            if r["events"]
        }
        assert events == rows


def test_no_event_is_counted_in_a_window_the_watermark_closed(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    plan, slices, _ = week
    assert [sl.index for sl in slices] == list(range(plan.slices))
    assert slices[0].start == plan.start and slices[-1].end == plan.end
    watermark = None
    for sl in slices:
        assert sl.end - sl.start == plan.trigger
        if watermark is not None:
            assert all(r["window_end"] > watermark for r in sl.aggregates)
        if sl.max_event_time is not None:
            assert sl.max_event_time < sl.end
            candidate = sl.max_event_time - plan.watermark
            watermark = candidate if watermark is None else max(watermark, candidate)


def test_incidents_show_in_the_counts(week: tuple[WeekPlan, list[Slice], WeekTotals]) -> None:
    plan, slices, totals = week
    injected = sum(i.events for i in plan.incidents if i.kind == "redaction_failure")
    assert 0 < totals.counters["redaction_failures"] <= injected  # none outside incidents
    # A segment harmful from its first window: 6-9 % of its outputs flagged.
    new = next(i for i in plan.incidents if i.from_first_window and i.volume > 50)
    seg = dict(zip(DIMENSIONS, new.segment, strict=True))
    flagged = events = 0
    for sl in slices:
        for r in sl.aggregates:
            if all(r[d] == v for d, v in seg.items()) and new.start <= r["window_start"] < new.end:
                flagged += r["violations"]
                events += r["events"]
    assert events > 500 and 0.04 < flagged / events < 0.12
    # Outside incidents harmful output stays near the base rates (0.2 %).
    assert totals.counters["violations"] / totals.counters["events"] < 0.01


def test_a_seed_gives_the_same_week_and_another_seed_another() -> None:
    a, b = plan_week(7, days=0.5), plan_week(7, days=0.5)
    assert a.incidents == b.incidents and a.segments == b.segments
    first = list(itertools.islice(iter_slices(a), 130))
    again = list(itertools.islice(iter_slices(b), 130))
    assert first == again
    other = plan_week(8, days=0.5)
    assert [i.start for i in other.incidents] != [i.start for i in a.incidents]


def test_invalid_periods_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="12 hours"):
        plan_week(1, days=0.25)
    with pytest.raises(ValueError, match="30 segments"):
        plan_week(1, days=0.5, segments=20)
    with pytest.raises(ValueError, match="trigger"):
        plan_week(1, days=0.5, trigger=timedelta(seconds=7))


def test_more_segments_come_from_further_locales() -> None:
    plan = plan_week(1, days=0.5, segments=60, incidents_per_kind=3)
    assert len(plan.segments) == 60
    assert len({s.values for s in plan.segments}) == 60
    assert not math.isnan(sum(s.volume for s in plan.segments))


def _affected(
    kind: str,
    counts: npt.NDArray[np.int16],
    outcome: npt.NDArray[np.int64],
    incomplete: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """Per drawn record: whether it counts in the quantity an incident of `kind` moves."""
    if kind == "telemetry_incomplete":
        return incomplete  # schema violations: events_seen only
    if kind == "outcome_shift":
        return (outcome >= 0) & (outcome != 0)  # complete records not answered
    return counts[:, counter_ids().index(AFFECTED[kind])].astype(bool)


def _realised(plan: WeekPlan, incidents: Sequence[WeekIncident]) -> dict[str, int]:
    """Per incident: the drawn records of its affected quantity in its segment over [start,
    end] (every record drawn, before lateness drops any), from `plan`'s events.
    """
    span = {
        i.id: ((i.start - plan.start).total_seconds(), (i.end - plan.start).total_seconds())
        for i in incidents
    }
    chunks = sorted(
        {c for a, b in span.values() for c in range(int(a // _CHUNK_S), int(b // _CHUNK_S) + 1)}
    )
    found: dict[str, int] = defaultdict(int)
    for chunk in chunks:
        ev = _draw_chunk(plan, chunk)
        counts, outcome, incomplete = _outcomes(plan, chunk, ev)
        for i in incidents:
            a, b = span[i.id]
            inside = (ev.seg == i.segment_index) & (ev.t >= a - 1e-3) & (ev.t <= b + 1e-3)
            found[i.id] += int(_affected(i.kind, counts, outcome, incomplete)[inside].sum())
    return found


def test_expected_counts_match_the_drawn_events(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    """baseline_count and incident_count against the records drawn with the incidents and
    with none (the same events: an incident's draws come after the segment's own), summed
    per kind, within a few Poisson standard deviations.
    """
    plan, _, _ = week
    with_it = _realised(plan, plan.incidents)
    without = _realised(replace(plan, incidents=()), plan.incidents)
    assert set(AFFECTED) == set(KINDS)
    for kind in KINDS:
        incidents = [i for i in plan.incidents if i.kind == kind]
        for i in incidents:
            assert 0.0 <= i.baseline_count <= i.incident_count, i
            if kind in EVENT_KINDS:
                assert i.incident_count == pytest.approx(i.baseline_count + i.events)
        base = sum(i.baseline_count for i in incidents)
        expected = sum(i.incident_count for i in incidents)
        certain = sum(i.events for i in incidents)  # an event kind's injected events
        seen = sum(with_it[i.id] for i in incidents)
        seen_without = sum(without[i.id] for i in incidents)
        assert abs(seen - expected) <= 4 * math.sqrt(max(1.0, expected - certain)) + 1, (
            kind, seen, expected,
        )  # fmt: skip
        assert abs(seen_without - base) <= 4 * math.sqrt(max(1.0, base)) + 1, (
            kind, seen_without, base,
        )  # fmt: skip
        if kind == "redaction_failure":  # none outside incidents: exactly the injected
            assert base == 0.0 and seen == certain
    # The incidents move their quantity well beyond its baseline, together.
    assert sum(i.incident_count for i in plan.incidents) > 2 * sum(
        i.baseline_count for i in plan.incidents
    )


def test_a_segment_harmful_from_its_first_window_has_the_reference_baseline(
    week: tuple[WeekPlan, list[Slice], WeekTotals],
) -> None:
    plan, _, _ = week
    for inc in (i for i in plan.incidents if i.from_first_window):
        # Its multiplier is over the reference harmful rate; so is its baseline count. The
        # ratio is lower only by what the incident does not multiply: harmful outputs of
        # successful jailbreaks, and users whose propensity times it would exceed 100 %.
        assert 0.5 * inc.multiplier < inc.incident_count / inc.baseline_count <= inc.multiplier
        per_event = inc.baseline_count / (inc.volume / 300.0 * inc.duration.total_seconds())
        assert 0.3 * inc.baseline < per_event < 3 * inc.baseline  # the reference rate
