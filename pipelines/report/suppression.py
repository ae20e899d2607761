"""Small-segment suppression in the weekly report (pure): which segments may be shown, which
shown one is held back as well, whose alerts may be listed, and distinct users of a set of
rows from their HyperLogLog sketches.

A segment whose merged weekly distinct users (HyperLogLog union) are below k
(`privacy.min_distinct_users`) is never shown on its own. The totals count all traffic, so
when the held-back segments together have fewer than k users, the smallest shown segment is
held back too (complementary suppression): totals minus what is shown never give a group of
fewer than k users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipelines.metrics.sketches import merge_sketches
from pipelines.report.week_data import SketchRow, WeekSegment

Values = tuple[str, ...]


@dataclass(frozen=True)
class Selection:
    """The week's segments as the report may show them."""

    visible: frozenset[Values]  # k distinct users or more in the week
    extra: Values | None  # visible, but held back with the suppressed ones
    # Visible but `extra`: every figure per segment or per version is over these only; the
    # totals and KPIs count all traffic (their difference is never one small group).
    shown: frozenset[Values]


def select_segments(
    segments: Sequence[WeekSegment], small_rows: Iterable[SketchRow], k: int, lg_k: int
) -> Selection:
    """Which segments may be shown, from each one's largest window and, for a segment
    whose every window has fewer than k users, the union of its windows' sketches.
    """
    small = {s.values for s in segments if s.max_users < k}
    rows = list(small_rows)
    # Larger segments can have small windows too; their partial unions are not needed.
    users = merged_users((row for row in rows if row[0] in small), lg_k) if small else {}
    visible = {s.values for s in segments if max(s.max_users, users.get(s.values, 0)) >= k}
    hidden = {s.values for s in segments} - visible
    hidden_users = 0
    if hidden:
        hidden_users = union_users(((sketch, n) for key, sketch, n in rows if key in hidden), lg_k)
    extra = complementary_segment(
        hidden_users,
        k,
        {s.values: s.totals["events"] for s in segments if s.values in visible},
    )
    return Selection(frozenset(visible), extra, frozenset(visible - {extra}))


def merged_users(rows: Iterable[SketchRow], lg_k: int) -> dict[Values, int]:
    """Segment -> distinct users of its rows (HLL union of their sketches), never below the
    largest single row's count.
    """
    sketches: dict[Values, list[bytes | None]] = {}
    floor: dict[Values, int] = {}
    for key, sketch, users in rows:
        sketches.setdefault(key, []).append(sketch)
        floor[key] = max(floor.get(key, 0), users)
    return {key: max(floor[key], merge_sketches(found, lg_k)[1]) for key, found in sketches.items()}


def union_users(rows: Iterable[tuple[bytes | None, int]], lg_k: int) -> int:
    """Distinct users of the union of rows given as (sketch, distinct users); 0 for none."""
    sketches: list[bytes | None] = []
    floor = 0
    for sketch, users in rows:
        sketches.append(sketch)
        floor = max(floor, users)
    return max(floor, merge_sketches(sketches, lg_k)[1])


def complementary_segment(
    hidden_users: int, k: int, shown_events: Mapping[Values, int]
) -> Values | None:
    """The shown segment to hold back as well, or None.

    The report's totals count every segment; what is shown per segment (or per version) is
    subtracted from them, so the suppressed segments are revealed as a whole. When, together,
    they have fewer than `k` distinct users (`hidden_users`: the HyperLogLog union of them
    all; 0 when none is suppressed), that whole describes a small group: the shown segment
    with the fewest events joins them (it has k users or more on its own, so the union then
    does too). Ties break on the segment's values.
    """
    if hidden_users == 0 or hidden_users >= k or not shown_events:
        return None
    return min(shown_events, key=lambda values: (shown_events[values], values))


def alert_segment_shown(
    segment: Sequence[tuple[str, str]],
    dims: Sequence[str],
    visible: Iterable[Values],
) -> bool:
    """Whether an alert's segment (pairs of dimension and value, over a subset of `dims`)
    contains a segment of `visible` (values over `dims`, k users or more in the week), so
    has k users or more itself. A dimension outside `dims` matches nothing: not shown.
    """
    index = {d: i for i, d in enumerate(dims)}
    if any(d not in index for d, _ in segment):
        return False
    return any(all(values[index[d]] == v for d, v in segment) for values in visible)
