"""Benchmark: the weekly report and analyst views on a full week, and a backfill (figures).

Report: a SQLite warehouse holding one ISO week of 5-minute windows (2,016) for --segments
segments is filled through the sink; then the daily view is scanned and the report is
collected, rendered (with its charts) and written. Backfill: --events synthetic events in a
JSONL archive are backfilled into an empty warehouse twice (the second run replaces the
same windows with the same rows). Not collected by pytest.

    .venv/bin/python tests/benchmarks/bench_report_backfill.py [--segments 30] [--events 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import datasketches as ds
from pydantic import SecretStr
from sqlalchemy import text

from pipelines.metrics.catalog import counter_ids
from pipelines.report.model import IsoWeek
from pipelines.report.weekly import collect_weekly, write_report
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.settings import ContractSettings, Settings, SparkSettings, WarehouseSettings
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink

REPO = Path(__file__).resolve().parents[2]
WEEK = IsoWeek(2026, 47)
WINDOW = timedelta(minutes=5)


def fill_week(sink: WarehouseSink, segments: int, seed: int = 1) -> int:
    """One batch per hour of the week; every window has every segment. Returns rows."""
    rng = random.Random(seed)
    surfaces = ("chat", "api", "search", "agent")
    keys = [(surfaces[i % 4], f"m-{i % 5}", f"l-{i // 5}") for i in range(segments)]
    rows = 0
    for hour in range(7 * 24):
        start = WEEK.start + timedelta(hours=hour)
        aggs = []
        for w in range(12):
            window = start + w * WINDOW
            for surface, model, locale in keys:
                events = rng.randint(20, 200)
                row = dict.fromkeys(counter_ids(), 0)
                row.update(dict.fromkeys(SEGMENT_DIMENSIONS, "*"))
                row.update(
                    window_start=window, window_end=window + WINDOW,
                    dimension_set="product_surface,model_version,locale",
                    product_surface=surface, model_version=model, locale=locale,
                    events=events, events_seen=events, telemetry_complete=events,
                    violations=rng.randint(0, 2), refusals=rng.randint(0, 8),
                    unflagged_events=events, injection_attempts=rng.randint(0, 3),
                )  # fmt: skip
                row["injection_successes"] = rng.randint(0, row["injection_attempts"])
                sketch = ds.hll_sketch(11)
                for u in range(events // 3):
                    sketch.update(f"{surface}{model}{locale}-{rng.randint(0, 5000)}-{u}")
                row["users_sketch"] = bytes(sketch.serialize_compact())
                aggs.append(row)
        sink.commit(
            BatchResult(
                query_id="bench", batch_id=hour, topic="t", started_at=start, input_rows=0,
                late_rows=0, aggregated_rows=0, watermark_before=None, watermark_after=start,
                offsets=[OffsetRange("t", 0, hour * 10, hour * 10 + 9, 10)], aggregates=aggs,
            )
        )  # fmt: skip
        rows += len(aggs)
    return rows


def bench_report(segments: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/wh.db"
        engine = make_engine(url)
        migrate(engine)
        t0 = time.perf_counter()
        rows = fill_week(WarehouseSink(engine), segments)
        print(f"report: filled {rows:,} window x segment rows in {time.perf_counter() - t0:.1f} s")
        settings = Settings(warehouse=WarehouseSettings(url=SecretStr(url)))
        t0 = time.perf_counter()
        with engine.connect() as conn:
            n = conn.execute(text("SELECT COUNT(*) FROM v_segment_daily")).scalar()
        print(f"  v_segment_daily: {n} rows in {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        report = collect_weekly(engine, settings, WEEK)
        collected = time.perf_counter() - t0
        t0 = time.perf_counter()
        html, _md = write_report(report, Path(tmp) / "out")
        written = time.perf_counter() - t0
        size = html.stat().st_size
        print(
            f"  collect_weekly {collected:.2f} s; render + charts + write {written:.2f} s; "
            f"HTML {size / 1024:.0f} KiB"
        )


def bench_backfill(events_count: int) -> None:
    from jobs.backfill import run_backfill
    from pipelines.stream.session import build_session
    from pipelines.synth import generate_events

    spark = build_session(SparkSettings(jars_dir=REPO / "var" / "jars" / "spark"))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=3)
    events = list(
        generate_events(
            seed=3, start=start, duration=timedelta(hours=1), rate_per_s=events_count / 3600
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "events.jsonl"
        archive.write_text("\n".join(json.dumps(e) for e in events) + "\n")
        url = f"sqlite:///{tmp}/wh.db"
        settings = Settings(
            contract=ContractSettings(dedup_state_dir=f"{tmp}/dedup"),
            warehouse=WarehouseSettings(url=SecretStr(url)),
        )
        for run in (1, 2):
            report = run_backfill(
                spark, settings, since=start, until=start + timedelta(hours=1),
                archives=[archive], log=lambda _m: None,
            )  # fmt: skip
            rate = report.aggregated_events / report.seconds
            print(
                f"backfill run {run}: {report.input_rows:,} archived events, "
                f"{report.rows_written} aggregate rows, {report.drift_windows} drift windows, "
                f"{report.seconds:.1f} s ({rate:,.0f} events/s)"
            )
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=30)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    bench_report(args.segments)
    bench_backfill(args.events)


if __name__ == "__main__":
    main()
