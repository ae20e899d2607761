"""Benchmark: cost of one micro-batch of the streaming job, by stage (prints figures).

Runs `BatchProcessor.process` on static DataFrames of synthetic Kafka records (no broker;
clean events, so no dead-letter write): for each size, `--runs` consecutive batches of one
query, as a stream delivers them (offsets and event time follow on, so the watermark moves,
windows close and later batches look up the event ids of earlier ones). The first batch is
cold (Python workers, the quality suite); the others show the warm cost. A batch of up to
1,000 events spans 5 seconds of event time (what a 5-second trigger collects at 100 events/s),
a larger one an hour (a backlog). Prints seconds and events/s per batch. Not collected by
pytest.

    .venv/bin/python tests/benchmarks/bench_batch.py [--sizes 500 50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

from jobs.streaming_aggregator import window_steps
from pipelines.settings import ContractSettings, Settings, SparkSettings, WarehouseSettings
from pipelines.stream.batch import BatchProcessor
from pipelines.stream.session import build_session
from pipelines.synth import generate_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3  # Kafka partitions of the simulated topic


def _span(size: int) -> timedelta:
    return timedelta(seconds=5) if size <= 1000 else timedelta(hours=1)


def _records(size: int, run: int, start: datetime, tmp: Path) -> Path:
    """Parquet file of the `run`-th batch of `size` records, following on from the previous."""
    span = _span(size)
    events = list(
        generate_events(
            seed=size * 1000 + run, start=start + run * span, duration=span,
            rate_per_s=size / span.total_seconds(),
        )
    )  # fmt: skip
    n = len(events)
    first = run * size  # per partition, offsets follow on from the previous batch
    table = pa.table(
        {
            "topic": ["bench"] * n,
            "partition": pa.array([i % PARTITIONS for i in range(n)], pa.int32()),
            "offset": pa.array([first + i // PARTITIONS for i in range(n)], pa.int64()),
            # The Kafka timestamp: when the producer wrote the record, just after its event.
            "timestamp": pa.array(
                [datetime.fromisoformat(e["event_time"]) + timedelta(seconds=1) for e in events],
                pa.timestamp("us", tz="UTC"),
            ),
            "value": pa.array([json.dumps(e).encode() for e in events], pa.binary()),
        }
    )
    path = tmp / f"batch-{size}-{run}.parquet"
    pq.write_table(table, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 50000])
    parser.add_argument("--runs", type=int, default=3, help="batches per size (first is cold)")
    args = parser.parse_args()
    spark = build_session(SparkSettings(jars_dir=REPO / "var" / "jars" / "spark"))
    print(f"{'events':>8} {'batch':>5} {'seconds':>8} {'events/s':>9}  seconds per stage")
    for size in args.sizes:
        start = datetime.now(UTC) - args.runs * _span(size) - timedelta(minutes=1)
        # One processor and one query for all batches, as in the job: what it builds once
        # (the quality suite, the record checker in the Python workers) is not part of a
        # batch's cost.
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            url = f"sqlite:///{tmp}/wh.db"
            engine = make_engine(url)
            migrate(engine)
            settings = Settings(
                contract=ContractSettings(dedup_state_dir=f"{tmp}/dedup"),
                warehouse=WarehouseSettings(url=SecretStr(url)),
            )
            sink = WarehouseSink(engine)
            # As the job composes them, without alert rules: drift of the closed windows.
            steps = window_steps(settings, sink, None)
            processor = BatchProcessor(sink, settings, log=lambda _m: None, steps=steps)
            for run in range(args.runs):
                # Read from Parquet, as a batch reads from Kafka: tasks carry file ranges.
                source = _records(size, run, start, tmp)
                df = spark.read.parquet(str(source)).repartition(PARTITIONS, "partition")
                df = df.cache()
                n = df.count()
                t0 = time.perf_counter()
                report = processor.process(df, run, f"bench-{size}")
                seconds = time.perf_counter() - t0
                df.unpersist()
                stages = " ".join(f"{k} {v:.2f}" for k, v in report.stages.items())
                print(f"{n:>8} {run:>5} {seconds:>8.2f} {n / seconds:>9.0f}  {stages}")
            engine.dispose()
    spark.stop()


if __name__ == "__main__":
    main()
