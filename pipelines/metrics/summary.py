"""Roll window x segment aggregate rows up to per-segment summaries (pure, exact sums)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.metrics.catalog import RateValue, counter_ids, rate, rate_value


@dataclass(frozen=True)
class SegmentSummary:
    segment: tuple[str, ...]
    totals: Mapping[str, int]
    windows: int
    peak_window_start: datetime | None
    peak_rate: float | None  # highest window rate among windows with >= min_events events
    peak_counts: tuple[int, int] | None = None  # numerator, denominator of that window

    def rate(self, rate_id: str) -> RateValue:
        """The rate over the segment's totals, with its Wilson 95 % interval."""
        return rate_value(rate_id, self.totals)


def summarize_segments(
    rows: Iterable[Mapping[str, Any]],
    dimensions: Sequence[str],
    *,
    peak_rate: str = "violation_rate",
    min_events: int = 30,
) -> list[SegmentSummary]:
    """Sum every counter per segment across windows; find each segment's peak window.

    Sorted by peak rate (descending, segments without an eligible window last), then events.
    """
    r = rate(peak_rate)
    counters = counter_ids()
    totals: dict[tuple[str, ...], dict[str, int]] = {}
    windows: dict[tuple[str, ...], int] = {}
    peaks: dict[tuple[str, ...], tuple[float, datetime, int, int]] = {}
    for row in rows:
        key = tuple(str(row[d]) for d in dimensions)
        acc = totals.setdefault(key, dict.fromkeys(counters, 0))
        for c in counters:
            acc[c] += int(row[c])
        windows[key] = windows.get(key, 0) + 1
        den = int(row[r.denominator])
        if den >= min_events:
            num = int(row[r.numerator])
            value = num / den
            if key not in peaks or value > peaks[key][0]:
                peaks[key] = (value, row["window_start"], num, den)
    out = [
        SegmentSummary(
            segment=key,
            totals=acc,
            windows=windows[key],
            peak_window_start=peaks[key][1] if key in peaks else None,
            peak_rate=peaks[key][0] if key in peaks else None,
            peak_counts=(peaks[key][2], peaks[key][3]) if key in peaks else None,
        )
        for key, acc in totals.items()
    ]
    out.sort(key=lambda s: (s.peak_rate is None, -(s.peak_rate or 0.0), -s.totals["events"]))
    return out
