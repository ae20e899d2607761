"""The week's trend charts as data (pure): counter sums per window, summed into day, hour or
window buckets, one series of rates with their 95 % intervals per charted rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from pipelines.metrics.catalog import rate, rate_value
from pipelines.report.model import Trend, TrendPoint, Trends
from pipelines.report.wording import kpi_name


def trend_bucket(span: timedelta, window: timedelta) -> timedelta:
    """1 day when the data spans at least 3 days, else 1 hour from 6 hours, else the window."""
    if span >= timedelta(days=3):
        return timedelta(days=1)
    if span >= timedelta(hours=6):
        return timedelta(hours=1)
    return window


def duration_text(delta: timedelta) -> str:
    """'1 day', '1 hour', '5 minutes', '30 seconds'."""
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def bucket_trends(
    windows: Sequence[tuple[datetime, datetime, Mapping[str, int]]],
    rate_ids: Sequence[str],
    targets: Mapping[str, float],
    *,
    users: Mapping[datetime, int] | None = None,
    min_users: int = 0,
) -> Trends:
    """Per-window counter sums -> one series per rate, in buckets sized by `trend_bucket`.

    `windows`: (window_start, window_end, counter sums over every segment), any order.
    A bucket with a zero denominator is left out of its series (a gap, not a zero). With
    `users` (window_start -> the largest distinct users of one row of the window), a bucket
    whose windows have no row of `min_users` or more is left out too: its traffic might come
    from fewer users than that (say, one small segment alone at night).
    """
    charts: list[Trend] = []
    skipped: list[str] = []
    if not windows:
        return Trends("-", (), tuple(rate_ids))
    first = min(w[0] for w in windows)
    last = max(w[1] for w in windows)
    window = min(w[1] - w[0] for w in windows)
    size = trend_bucket(last - first, window)
    sums: dict[datetime, dict[str, int]] = {}
    largest: dict[datetime, int] = {}
    for start, _, counts in windows:
        key = _floor(start, size)
        acc = sums.setdefault(key, {})
        for c, n in counts.items():
            acc[c] = acc.get(c, 0) + int(n)
        if users is not None:
            largest[key] = max(largest.get(key, 0), users.get(start, 0))
    if users is not None:
        sums = {key: acc for key, acc in sums.items() if largest[key] >= min_users}
    for rate_id in rate_ids:
        r = rate(rate_id)
        points = []
        for key in sorted(sums):
            v = rate_value(rate_id, {c: sums[key].get(c, 0) for c in (r.numerator, r.denominator)})
            if v.denominator and v.value is not None:
                points.append(
                    TrendPoint(key, v.numerator, v.denominator, v.value, v.lower, v.upper)
                )
        if not points:
            skipped.append(rate_id)
            continue
        charts.append(
            Trend(
                rate_id=rate_id,
                name=kpi_name(rate_id),
                points=tuple(points),
                target=targets.get(rate_id),
                higher_is_worse=r.higher_is_worse,
                bucket_seconds=int(size.total_seconds()),
            )
        )
    return Trends(duration_text(size), tuple(charts), tuple(skipped))


def _floor(moment: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = int(size.total_seconds())
    offset = int((moment - epoch).total_seconds())
    return epoch + timedelta(seconds=offset - offset % seconds)
