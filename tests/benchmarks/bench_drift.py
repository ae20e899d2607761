"""Benchmark: cost of drift per closed window, from the stored histograms (prints figures).

Fills a SQLite warehouse through the sink with histograms and counters for S segments over W
windows (no Spark), then times `compute_drift`:
- cold: the last window against a trailing baseline of the W - 1 windows before it, read in
  full (a job's first window after a start, or `safewatch drift` on one window). The number
  of events behind each histogram changes the counts, not the number of rows, so the cost
  should not grow with events; it grows with the number of stored baseline windows;
- streaming: the last windows one after another with a `BaselineCache`, as the job closes
  them: each baseline is the previous one plus the window that entered it and minus the one
  that left, so the cost per window should not grow with the lookback either;
- backlog: what `tests/benchmarks/bench_stream.py` makes the job do: 51 windows (255 minutes
  of 20 events/s, 39 segments of ~150 events each) closed 8 at a time, as batches of 50,000
  events close them, against the default 7-day trailing baseline. The cost per window of the
  first and of the last call should be the same: it must not grow with the backlog.
Not collected by pytest. Run it on two commits to compare them.

    .venv/bin/python tests/benchmarks/bench_drift.py [--segments 50] [--case backlog]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from pipelines.drift.compute import BaselineCache, compute_drift
from pipelines.metrics.catalog import RATES, counter_ids
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.settings import DriftSettings
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DIMS = ("product_surface", "model_version", "locale")
# Numerators of rates over events only: one also counted over a narrower counter
# (injection_successes, over injection_attempts) stays 0, so it never exceeds that one.
_DRAWN_OVER_EVENTS = {r.numerator for r in RATES if r.denominator == "events"} - {
    r.numerator for r in RATES if r.denominator != "events"
}


def _fill(sink: WarehouseSink, segments: int, windows: int, events: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = {d.id: rng.dirichlet(np.ones(d.bins)) for d in DISTRIBUTIONS}
    for w in range(windows):
        start = T0 + timedelta(minutes=5 * w)
        aggs, hists = [], []
        for s in range(segments):
            key = {
                "window_start": start,
                "dimension_set": ",".join(DIMS),
                **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
                "product_surface": f"surface-{s % 5}",
                "model_version": f"model-{s // 5}",
                "locale": "en-US",
            }
            counters = dict.fromkeys(counter_ids(), 0)
            counters["events"] = counters["events_seen"] = counters["unflagged_events"] = events
            for r in RATES:
                if r.numerator in _DRAWN_OVER_EVENTS:
                    counters[r.numerator] = int(rng.binomial(events, 0.01))
            aggs.append(
                {
                    **key,
                    "window_end": start + timedelta(minutes=5),
                    **counters,
                    "users_sketch": None,
                }
            )
            for d in DISTRIBUTIONS:
                counts = rng.multinomial(events, probs[d.id])
                hists += [
                    {**key, "distribution": d.id, "bin": b, "count": int(n)}
                    for b, n in enumerate(counts)
                    if n
                ]
        sink.commit(
            BatchResult(
                query_id="bench",
                batch_id=w,
                topic="t",
                started_at=start,
                input_rows=0,
                late_rows=0,
                aggregated_rows=0,
                watermark_before=None,
                watermark_after=None,
                offsets=[OffsetRange("t", 0, w, w, 1)],
                aggregates=aggs,
                histograms=hists,
            )
        )


def _measure(segments: int, windows: int, events: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/wh.db")
        migrate(engine)
        sink = WarehouseSink(engine)
        _fill(sink, segments, windows, events, seed=events)
        settings = DriftSettings(lookback=f"{5 * windows} minutes")
        last = T0 + timedelta(minutes=5 * (windows - 1))
        t0 = time.perf_counter()
        with engine.begin() as conn:
            run = compute_drift(
                conn, sink.tables, [last], dimensions=DIMS, settings=settings, now=T0
            )
        seconds = time.perf_counter() - t0
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM segment_window_hist").scalar_one()
        assert run.segments == segments
        return seconds, int(rows)


def _measure_streaming(segments: int, windows: int, lookback: int, evaluated: int) -> float:
    """Mean seconds per window over the last `evaluated` windows, computed with a cache."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/wh.db")
        migrate(engine)
        sink = WarehouseSink(engine)
        _fill(sink, segments, windows, 10_000, seed=windows)
        settings = DriftSettings(lookback=f"{5 * lookback} minutes")
        cache = BaselineCache()
        times = []
        for w in range(windows - evaluated - 1, windows):
            start = T0 + timedelta(minutes=5 * w)
            t0 = time.perf_counter()
            with engine.begin() as conn:
                compute_drift(
                    conn, sink.tables, [start], dimensions=DIMS, settings=settings, now=T0,
                    cache=cache,
                )  # fmt: skip
            times.append(time.perf_counter() - t0)
        return sum(times[1:]) / len(times[1:])  # the first one fills the cache (cold)


def _measure_backlog(segments: int, windows: int, events: int, per_call: int) -> list[float]:
    """Seconds per window of each call, `per_call` windows a call, with one cache."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/wh.db")
        migrate(engine)
        sink = WarehouseSink(engine)
        _fill(sink, segments, windows, events, seed=windows)
        settings = DriftSettings()
        cache = BaselineCache()
        per_window = []
        starts = [T0 + timedelta(minutes=5 * w) for w in range(windows)]
        for i in range(0, windows, per_call):
            chunk = starts[i : i + per_call]
            t0 = time.perf_counter()
            with engine.begin() as conn:
                run = compute_drift(
                    conn, sink.tables, chunk, dimensions=DIMS, settings=settings, now=T0,
                    cache=cache,
                )  # fmt: skip
            per_window.append((time.perf_counter() - t0) / len(chunk))
            assert run.segments == segments * len(chunk)
        return per_window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--case", choices=["cold", "streaming", "backlog"], action="append")
    args = parser.parse_args()
    s = args.segments
    cases = args.case or ["cold", "streaming", "backlog"]
    if "cold" in cases:
        print(
            f"{'segments':>8} {'baseline windows':>16} {'events/segment/window':>21} "
            f"{'hist rows':>9} {'seconds':>8} {'ms per segment':>14}"
        )
        cold = [(24, 100), (24, 10_000), (24, 1_000_000), (12, 10_000), (96, 10_000)]
        for windows, events in cold:
            seconds, rows = _measure(s, windows, events)
            print(
                f"{s:>8} {windows - 1:>16} {events:>21,} {rows:>9,} {seconds:>8.2f} "
                f"{1000 * seconds / s:>14.1f}"
            )
    if "streaming" in cases:
        print("\nstreaming, one window after another with the baseline cache (10,000 events each):")
        print(
            f"{'segments':>8} {'lookback windows':>16} {'seconds/window':>14} "
            f"{'ms per segment':>14}"
        )
        for lookback in (12, 48):
            seconds = _measure_streaming(s, lookback + 8, lookback, evaluated=6)
            print(f"{s:>8} {lookback:>16} {seconds:>14.3f} {1000 * seconds / s:>14.1f}")
    if "backlog" in cases:
        segments, windows, per_call = 39, 51, 8
        per_window = _measure_backlog(segments, windows, 150, per_call)
        print(
            f"\nbacklog of bench_stream.py: {windows} windows x {segments} segments, "
            f"closed {per_call} per call, 7-day trailing baseline:"
        )
        print(f"{'call':>4} {'windows closed before':>21} {'ms per window':>13}")
        for i, seconds in enumerate(per_window):
            print(f"{i + 1:>4} {i * per_call:>21} {1000 * seconds:>13.0f}")
        mean = sum(per_window) / len(per_window)
        print(f"mean {1000 * mean:.0f} ms per window, {1000 * mean / segments:.2f} ms per segment")


if __name__ == "__main__":
    main()
