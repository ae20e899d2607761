"""Benchmark: cost of one micro-batch of the streaming job, by stage (prints figures).

Runs `BatchProcessor.process` on a static DataFrame of synthetic Kafka records (no broker;
clean events, so no dead-letter write), `--runs` times per size with one processor (the
first run is cold, the others show the warm cost), and prints events/s. Not collected by
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
from pyspark.sql import functions as F

from pipelines.settings import ContractSettings, Settings, SparkSettings, WarehouseSettings
from pipelines.stream.batch import BatchProcessor
from pipelines.stream.session import build_session
from pipelines.synth import generate_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 50000])
    parser.add_argument("--runs", type=int, default=3, help="runs per size (first is cold)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=3,
        help="Spark partitions of the batch (3: as the job reads a 3-partition topic)",
    )
    args = parser.parse_args()
    spark = build_session(SparkSettings(jars_dir=REPO / "var" / "jars" / "spark"))
    now = datetime.now(UTC)
    print(f"{'events':>8} {'run':>4} {'seconds':>8} {'events/s':>9}  seconds per stage")
    for size in args.sizes:
        events = list(
            generate_events(
                seed=size, start=now - timedelta(hours=1), duration=timedelta(hours=1),
                rate_per_s=size / 3600,
            )
        )  # fmt: skip
        # Read from Parquet, as a batch reads from Kafka: tasks carry file ranges, not rows.
        table = pa.table(
            {
                "topic": ["bench"] * len(events),
                "partition": pa.array([i % 3 for i in range(len(events))], pa.int32()),
                "offset": pa.array([i // 3 for i in range(len(events))], pa.int64()),
                "timestamp": pa.array([now] * len(events), pa.timestamp("us", tz="UTC")),
                "value": pa.array([json.dumps(e).encode() for e in events], pa.binary()),
            }
        )
        source = Path(tempfile.mkdtemp()) / f"batch-{size}.parquet"
        pq.write_table(table, source)
        df = spark.read.parquet(str(source)).repartition(args.partitions).cache()
        df.count()
        # One processor for all runs, as in the job: what it builds once (the quality
        # suite, the record checker in the Python workers) is not part of a batch's cost.
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/wh.db"
            engine = make_engine(url)
            migrate(engine)
            settings = Settings(
                contract=ContractSettings(dedup_state_dir=f"{tmp}/dedup"),
                warehouse=WarehouseSettings(url=SecretStr(url)),
            )
            processor = BatchProcessor(WarehouseSink(engine), settings, log=lambda _m: None)
            for run in range(args.runs):
                t0 = time.perf_counter()
                # A topic name per run: the warehouse refuses offsets it already counted.
                batch = df.withColumn("topic", F.lit(f"bench-{size}-{run}"))
                report = processor.process(batch, 0, f"bench-{size}-{run}")
                seconds = time.perf_counter() - t0
                stages = " ".join(f"{k} {v:.2f}" for k, v in report.stages.items())
                print(
                    f"{len(events):>8} {run + 1:>4} {seconds:>8.2f} "
                    f"{len(events) / seconds:>9.0f}  {stages}"
                )
        df.unpersist()
    spark.stop()


if __name__ == "__main__":
    main()
