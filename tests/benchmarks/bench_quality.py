"""What the Great Expectations check of one micro-batch costs, to size `max_rows`.

Run from the repository root: `.venv/bin/python tests/benchmarks/bench_quality.py [--repeat N]`.
Not collected by pytest (the file name does not start with `test_`).

Prints, on the driver's single thread:

- the one-off costs: importing GX, building the first `BatchValidator` (context, data source,
  suite, the suite's metric graph), and building another one in the same process;
- the warm cost of one `validate` call on a 500-row and a 5,000-row frame (the default
  `max_rows` of the streaming job, so no sampling): what a small and a full micro-batch pay;
- per batch of 1k, 10k and 50k rows: flattening the events into the frame, and validating it
  in full (no sampling) and with `max_rows=5000` (sampled when larger).

Every figure but the one-off costs is the median of `--repeat` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pipelines.quality.runner import BatchValidator
from pipelines.quality.suite import flatten_events, load_suite
from pipelines.synth import generate_events

SIZES = (1_000, 10_000, 50_000)
# A small micro-batch and the streaming job's default sample (settings: quality.max_rows).
WARM_SIZES = (500, 5_000)
STREAM_MAX_ROWS = 5_000
START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _median_s(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    args = parser.parse_args(argv)

    events = list(
        generate_events(seed=1, start=START, duration=timedelta(seconds=600), rate_per_s=100.0)
    )
    if len(events) < max(SIZES):
        msg = f"generated {len(events)} events, fewer than {max(SIZES)}"
        raise SystemExit(msg)
    suite = load_suite()

    start = time.perf_counter()
    import great_expectations  # noqa: F401 - timed: the import is part of the first build

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    full = BatchValidator(suite, max_rows=sys.maxsize)
    first_build_s = time.perf_counter() - start
    start = time.perf_counter()
    bounded = BatchValidator(suite, max_rows=STREAM_MAX_ROWS)
    next_build_s = time.perf_counter() - start

    print(f"suite: {len(suite['expectations'])} expectations")
    print(f"import great_expectations    {import_s:7.2f} s   (once per process)")
    print(f"first BatchValidator(...)    {first_build_s:7.2f} s   (once per query)")
    print(f"another BatchValidator(...)  {next_build_s:7.2f} s")
    print()
    print(f"warm validate() per call, max_rows={bounded.max_rows}, median of {args.repeat}:")
    for size in WARM_SIZES:
        frame = flatten_events(events[:size])
        warm_s = _median_s(partial(bounded.validate, frame), args.repeat)
        print(f"{size:>7} rows {warm_s:9.3f} s   {1000 * warm_s:7.1f} ms")
    print()
    header = (
        f"{'rows':>7} {'flatten s':>10} {'GX full s':>10} {'ms/1k rows':>11} "
        f"{'GX max_rows=' + str(bounded.max_rows) + ' s':>22} {'validated':>10}"
    )
    print(header)
    for size in SIZES:
        batch = events[:size]
        flatten_s = _median_s(partial(flatten_events, batch), args.repeat)
        frame = flatten_events(batch)
        full_s = _median_s(partial(full.validate, frame), args.repeat)
        bounded_s = _median_s(partial(bounded.validate, frame), args.repeat)
        validated = bounded.validate(frame).rows_validated
        print(
            f"{size:>7} {flatten_s:>10.3f} {full_s:>10.3f} {1000 * full_s / size * 1000:>11.1f} "
            f"{bounded_s:>22.3f} {validated:>10}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
