"""A small warehouse with known ground truth, for the analyst views (SQLite and PostgreSQL).

Windows over 10 days (two ISO weeks), three segments; each window × segment gets random
counters and a real HLL sketch of a known set of user ids. The small segment never reaches
k distinct users in any window, so every roll-up of it must be suppressed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import datasketches as ds

from pipelines.drift.compute import compute_drift
from pipelines.metrics.catalog import RATES, counter_ids
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.settings import DriftSettings
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.sink import WarehouseSink

T0 = datetime(2026, 11, 12, 22, 0, tzinfo=UTC)  # a Thursday; the data spans W46..W48
DIMENSION_SET = "product_surface,locale"
SEGMENTS = {  # (product_surface, locale) -> distinct users per window
    ("chat", "de-DE"): 40,
    ("chat", "en-US"): 60,
    ("agent", "fr-FR"): 5,  # below k = 20 in every window
}
K = 20
EVERY = timedelta(hours=7)  # windows 5 min long, one every 7 h: crosses days and weeks
WINDOWS = 36
# Numerators of rates over events that fill() draws on their own: violations, and injection
# successes (successful_injection_rate) as a subset of the injection attempts.
_SET_BELOW = ("violations", "injection_successes")


@dataclass
class Truth:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per window x segment
    users: dict[tuple[datetime, tuple[str, str]], int] = field(default_factory=dict)

    def rollup(self, period: str) -> dict[tuple[date, str, str], dict[str, Any]]:
        """Expected view rows: sums, windows, max distinct users, exact rates; suppressed."""
        groups: dict[tuple[date, str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in self.rows:
            day = r["window_start"].date()
            start = day if period == "day" else day - timedelta(days=day.weekday())
            groups[(start, r["product_surface"], r["locale"])].append(r)
        out = {}
        for key, rows in groups.items():
            top = max(self.users[(r["window_start"], key[1:])] for r in rows)
            if top < K:
                continue
            sums = {c: sum(r[c] for r in rows) for c in counter_ids()}
            expected: dict[str, Any] = {"windows": len(rows), "distinct_users_at_least": top}
            expected.update(sums)
            for rate in RATES:
                den = sums[rate.denominator]
                expected[rate.id] = sums[rate.numerator] / den if den else None
            out[key] = expected
        return out


def _sketch(users: list[str]) -> bytes:
    sketch = ds.hll_sketch(11)
    for u in users:
        sketch.update(u)
    return bytes(sketch.serialize_compact())


def fill(sink: WarehouseSink, seed: int = 5, *, drift: bool = True) -> Truth:
    """Write the data through the real sink (one batch per window); drift for every window."""
    rng = random.Random(seed)
    truth = Truth()
    sink.set_min_distinct_users(K)
    for w in range(WINDOWS):
        start = T0 + w * EVERY
        aggs = []
        for (surface, locale), n_users in SEGMENTS.items():
            events = rng.randint(50, 400)
            row: dict[str, Any] = dict.fromkeys(counter_ids(), 0)
            row.update(
                window_start=start,
                window_end=start + timedelta(minutes=5),
                dimension_set=DIMENSION_SET,
                **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
            )
            row.update(product_surface=surface, locale=locale, events=events)
            for rate in RATES:  # numerators are subsets of denominators
                if rate.denominator == "events" and rate.numerator not in _SET_BELOW:
                    row[rate.numerator] = rng.randint(0, events // 10)
            row["violations"] = rng.randint(0, events // 8)
            row["unflagged_events"] = events - row["violations"]
            row["over_refusals"] = rng.randint(0, row["unflagged_events"] // 20)
            row["injection_successes"] = rng.randint(0, row["injection_attempts"])
            row["jailbreak_successes"] = rng.randint(0, row["jailbreak_attempts"])
            row["tool_call_events"] = rng.randint(0, events // 3)
            row["unauthorized_tool_call_events"] = rng.randint(0, row["tool_call_events"] // 5)
            row["blocked_or_refused"] = rng.randint(0, events // 5)
            row["appeal_overturns"] = rng.randint(0, row["blocked_or_refused"])
            row["events_seen"] = events + rng.randint(0, 10)
            row["telemetry_complete"] = row["events_seen"] - rng.randint(0, 5)
            row["redaction_failures"] = rng.randint(0, 2)
            truth.rows.append(dict(row))
            truth.users[(start, (surface, locale))] = n_users
            users = [f"{surface}-{locale}-{w}-{i}" for i in range(n_users)]
            row["users_sketch"] = _sketch(users)
            aggs.append(row)
        result = BatchResult(
            query_id="analyst-data",
            batch_id=w,
            topic="t",
            started_at=start,
            input_rows=sum(a["events"] for a in aggs),
            late_rows=0,
            aggregated_rows=sum(a["events"] for a in aggs),
            watermark_before=None,
            watermark_after=start,
            offsets=[OffsetRange("t", 0, w * 1000, w * 1000 + 999, 1000)],
            aggregates=aggs,
        )
        sink.commit(result)
    if drift:
        windows = sorted({r["window_start"] for r in truth.rows})
        with sink.engine.begin() as conn:
            compute_drift(
                conn,
                sink.tables,
                windows,
                dimensions=DIMENSION_SET.split(","),
                settings=DriftSettings(min_events=10, lookback="3 days"),
                now=T0,
            )
    return truth
