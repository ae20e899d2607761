"""Benchmark: cost of one micro-batch of the streaming job, by stage (prints figures).

Runs `BatchProcessor.process` on a static DataFrame of synthetic Kafka records (no broker;
clean events, so no dead-letter write), twice per size so that the second run shows the
warm cost, and prints events/s. Not collected by pytest.

    .venv/bin/python tests/benchmarks/bench_batch.py [--sizes 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

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
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
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
        rows = [("bench", i % 3, i // 3, now, json.dumps(e).encode()) for i, e in enumerate(events)]
        df = spark.createDataFrame(
            rows, "topic string, partition int, offset long, timestamp timestamp, value binary"
        ).cache()
        df.count()
        for run in range(2):
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/wh.db"
                engine = make_engine(url)
                migrate(engine)
                settings = Settings(
                    contract=ContractSettings(dedup_state_dir=f"{tmp}/dedup"),
                    warehouse=WarehouseSettings(url=SecretStr(url)),
                )
                processor = BatchProcessor(WarehouseSink(engine), settings, log=lambda _m: None)
                t0 = time.perf_counter()
                report = processor.process(df, 0, f"bench-{size}-{run}")
                seconds = time.perf_counter() - t0
            stages = " ".join(f"{k} {v:.1f}" for k, v in report.stages.items())
            print(
                f"{len(events):>8} {run + 1:>4} {seconds:>8.2f} {len(events) / seconds:>9.0f}"
                f"  {stages}"
            )
        df.unpersist()
    spark.stop()


if __name__ == "__main__":
    main()
