"""What changed in the week (pure): the model, prompt and policy versions with traffic, and
each new one against the versions it follows on the same surface: key rates with the
two-proportion test (each side's variance widened by its design effect, Benjamini-Hochberg
q-values over the section) and the segments whose outcome mix shifted (PSI > DRIFT_PSI).

Only shown segments count (`pipelines.report.suppression`); a comparison one of whose sides
has fewer than k distinct users is not shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.metrics.catalog import rate, rate_value
from pipelines.metrics.rate_tests import benjamini_hochberg, two_proportion_test
from pipelines.report.model import (
    CHANGE_RATES,
    DRIFT_PSI,
    NOT_A_VALUE,
    SURFACE_DIMENSION,
    VERSION_DIMENSIONS,
    Changes,
    DriftFlag,
    RateComparison,
    VersionComparison,
    VersionSeen,
    tracked_dimensions,
    utc_time,
)
from pipelines.report.suppression import Values, union_users
from pipelines.report.week_data import (
    Details,
    WeekData,
    WeekSegment,
    Where,
    sum_buckets,
    sum_totals,
)
from pipelines.report.wording import kpi_name


@dataclass(frozen=True)
class VersionSide:
    """A new version on one surface (None: no surface dimension), and the versions it
    follows there: the shown segments of each side and the rows their users come from.
    """

    version: VersionSeen
    surface: str | None
    previous_values: tuple[str, ...]
    new_rows: tuple[WeekSegment, ...]
    prev_rows: tuple[WeekSegment, ...]
    new_where: Where
    prev_where: Where


def versions_seen(data: WeekData, segments: Sequence[WeekSegment]) -> tuple[VersionSeen, ...]:
    """Model/prompt/policy versions with traffic in the week's `segments`, new ones first."""
    week, dims = data.week, data.dims
    seen = []
    for d in tracked_dimensions(dims):
        first = data.first_seen[d]
        overall: dict[str, datetime] = {}
        for (_, value), at in first.items():
            overall[value] = min(at, overall.get(value, at))
        i = dims.index(d)
        s = dims.index(SURFACE_DIMENSION) if SURFACE_DIMENSION in dims else None
        events: dict[str, int] = {}
        surfaces: dict[str, set[str]] = {}
        for seg in segments:
            value = seg.values[i]
            if value in NOT_A_VALUE or not seg.totals["events_seen"]:
                continue
            events[value] = events.get(value, 0) + seg.totals["events"]
            if s is not None:
                surfaces.setdefault(value, set()).add(seg.values[s])
        for value, n in events.items():
            at = overall[value]
            seen.append(
                VersionSeen(
                    dimension=d,
                    value=value,
                    first_seen=at,
                    events=n,
                    surfaces=tuple(sorted(surfaces.get(value, ()))),
                    is_new=week.start <= at < week.end,
                )
            )
    seen.sort(key=lambda v: (not v.is_new, VERSION_DIMENSIONS.index(v.dimension), v.value))
    return tuple(seen)


def version_sides(
    data: WeekData, segments: Sequence[WeekSegment], seen: Sequence[VersionSeen]
) -> tuple[VersionSide, ...]:
    """Each new version of `seen` on each of its surfaces, with the versions first seen
    there before it, over the week's shown `segments`.
    """
    dims = data.dims
    s_index = dims.index(SURFACE_DIMENSION) if SURFACE_DIMENSION in dims else None
    sides = []
    for version in (v for v in seen if v.is_new):
        d_index = dims.index(version.dimension)
        first = data.first_seen[version.dimension]
        for surface in version.surfaces or (None,):
            on_surface = [s for s in segments if s_index is None or s.values[s_index] == surface]
            key_surface = surface if surface is not None else "*"
            mine = first.get((key_surface, version.value))
            previous_values = tuple(
                sorted(
                    value
                    for (surf, value), at in first.items()
                    if surf == key_surface
                    and value not in NOT_A_VALUE
                    and value != version.value
                    and mine is not None
                    and at < mine
                )
            )
            scope: Where = () if surface is None else ((SURFACE_DIMENSION, (surface,)),)
            sides.append(
                VersionSide(
                    version=version,
                    surface=surface,
                    previous_values=previous_values,
                    new_rows=tuple(s for s in on_surface if s.values[d_index] == version.value),
                    prev_rows=tuple(s for s in on_surface if s.values[d_index] in previous_values),
                    new_where=(*scope, (version.dimension, (version.value,))),
                    prev_where=(*scope, (version.dimension, previous_values)),
                )
            )
    return tuple(sides)


def union_requests(sides: Sequence[VersionSide], k: int) -> tuple[Where, ...]:
    """The row sets whose merged distinct users decide whether a side has k users: those
    with k events or more but no single segment-window of k users.
    """
    wanted: list[Where] = []
    for side in sides:
        if _undecided(side.new_rows, k):
            wanted.append(side.new_where)
        if side.prev_rows and _undecided(side.prev_rows, k):
            wanted.append(side.prev_where)
    return tuple(dict.fromkeys(wanted))


def build_changes(
    data: WeekData,
    seen: Sequence[VersionSeen],
    sides: Sequence[VersionSide],
    shown: frozenset[Values],
    details: Details,
    *,
    k: int,
    lg_k: int,
    min_trials: int,
) -> Changes:
    """New versions against the versions they follow on the same surface, over the week."""
    pending: list[tuple[VersionSide, bool, list[Any]]] = []
    for side in sides:
        suppressed = not _enough_users(side.new_rows, side.new_where, details, k, lg_k) or (
            bool(side.prev_rows)
            and not _enough_users(side.prev_rows, side.prev_where, details, k, lg_k)
        )
        new_totals = sum_totals(s.totals for s in side.new_rows)
        prev_totals = sum_totals(s.totals for s in side.prev_rows)
        new_buckets = sum_buckets(s.buckets for s in side.new_rows)
        prev_buckets = sum_buckets(s.buckets for s in side.prev_rows)
        tests = []
        if side.previous_values and not suppressed:
            for rate_id in CHANGE_RATES:
                a = rate_value(rate_id, new_totals, new_buckets)
                b = rate_value(rate_id, prev_totals, prev_buckets)
                # Each side's variance is widened by its design effect: one prolific
                # user of either version does not make a difference significant.
                test = two_proportion_test(
                    a.numerator, a.denominator, b.numerator, b.denominator,
                    min_trials=min_trials,
                    current_design_effect=a.design_effect,
                    baseline_design_effect=b.design_effect,
                )  # fmt: skip
                tests.append((rate_id, a, b, test.p_value))
        pending.append((side, suppressed, tests))
    q_values = iter(benjamini_hochberg([p for *_, tests in pending for *_, p in tests]))
    comparisons = []
    for side, suppressed, tests in pending:
        rates = tuple(
            RateComparison(
                rate_id=rate_id,
                name=kpi_name(rate_id),
                new=a,
                previous=b,
                higher_is_worse=rate(rate_id).higher_is_worse,
                p_value=p,
                q_value=next(q_values),
            )
            for rate_id, a, b, p in tests
        )
        version = side.version
        flags, hidden = drift_flags(
            details.drift[version.dimension, version.value],
            data.dims,
            side.surface,
            shown,
            suppressed=suppressed,
        )
        comparisons.append(
            VersionComparison(
                dimension=version.dimension,
                value=version.value,
                surface=side.surface,
                previous_values=side.previous_values,
                suppressed=suppressed,
                rates=rates,
                drift=flags,
                drift_suppressed=hidden,
            )
        )
    return Changes(
        tracked_dimensions=tracked_dimensions(data.dims),
        new_versions=tuple(v for v in seen if v.is_new),
        comparisons=tuple(comparisons),
        history_start=data.history_start,
        min_trials=min_trials,
    )


def _undecided(rows: Sequence[WeekSegment], k: int) -> bool:
    """Neither the events (distinct users never exceed them) nor one window settle it."""
    return sum(s.totals["events"] for s in rows) >= k and not any(s.max_users >= k for s in rows)


def _enough_users(
    rows: Sequence[WeekSegment], where: Where, details: Details, k: int, lg_k: int
) -> bool:
    if sum(s.totals["events"] for s in rows) < k:
        return False  # distinct users never exceed events
    if any(s.max_users >= k for s in rows):
        return True
    return union_users(details.unions[where], lg_k) >= k


def drift_flags(
    rows: Sequence[Mapping[str, Any]],
    dims: Sequence[str],
    surface: str | None,
    shown: frozenset[Values],
    *,
    suppressed: bool,
) -> tuple[tuple[DriftFlag, ...], int]:
    """Segments of a version on `surface` whose outcome mix shifted (PSI > DRIFT_PSI), from
    its outcome drift `rows`; and how many such segments are held back.
    """
    per_segment: dict[Values, list[Mapping[str, Any]]] = {}
    for row in rows:
        values = tuple(str(row[d]) for d in dims)
        if surface is not None and row[SURFACE_DIMENSION] != surface:
            continue
        per_segment.setdefault(values, []).append(row)
    flags = []
    hidden = 0
    for values, found in sorted(per_segment.items()):
        over = [r for r in found if r["psi"] is not None and r["psi"] > DRIFT_PSI]
        if not over:
            continue
        if suppressed or values not in shown:
            hidden += 1
            continue
        worst = max(over, key=lambda r: (r["psi"], utc_time(r["window_start"])))
        flags.append(
            DriftFlag(
                segment=" / ".join(values),
                windows_tested=len(found),
                windows_flagged=len(over),
                max_psi=float(worst["psi"]),
                max_psi_window=utc_time(worst["window_start"]),
                baseline=str(worst["baseline"]),
            )
        )
    flags.sort(key=lambda f: -f.max_psi)
    return tuple(flags), hidden
