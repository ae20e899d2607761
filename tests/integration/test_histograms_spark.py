"""Histograms and cardinality control on the JVM, against plain Python on the same events.

- Spark's binning (`window_segment_histograms`) equals numpy's searchsorted binning written
  here, including values exactly on an edge, below the first edge and far above the last.
- A producer that sends many distinct values of a dimension is folded into `other` by the
  batch processor: the top values are admitted up to the limit, totals are preserved.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import SecretStr
from pyspark.sql import functions as F
from sqlalchemy import func, select

from pipelines.contract.spark_schema import spark_schema_from_json_schema
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.settings import (
    ContractSettings,
    Settings,
    StreamSettings,
    WarehouseSettings,
)
from pipelines.stream.batch import BatchProcessor
from pipelines.stream.transform import window_segment_histograms
from pipelines.synth.generator import generate_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.queries import aggregate_rows
from pipelines.warehouse.sink import WarehouseSink

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
DIMS = ("product_surface", "model_version")


def _events(n: int, seed: int) -> list[dict]:
    return list(
        generate_events(
            seed=seed,
            start=NOW - timedelta(hours=1),
            duration=timedelta(minutes=20),
            rate_per_s=n / 1200,
        )
    )


def _reference_bin(d, value) -> int:
    if d.kind == "numeric":
        i = int(np.searchsorted(np.array(d.edges), float(value), side="right")) - 1
        return min(max(i, 0), d.bins - 1)
    return list(d.values).index(value)


def _field(event: dict, path: str):
    value = event
    for part in path.split("."):
        value = value[part]
    return value


def test_spark_bins_equal_numpy_bins(spark):
    events = _events(2500, seed=3)
    rng = random.Random(5)
    score_edges = DISTRIBUTIONS[0].edges
    for e in events[:300]:
        # Edge cases: exact edges, 0 and 1, huge latencies and token counts.
        e["moderation"]["scores"]["hate"] = rng.choice(score_edges)
        e["request"]["latency_ms"] = rng.choice([0, 10.0, 11.5, 119_999.9, 120_000.0, 5e6])
        e["request"]["output_tokens"] = rng.choice([0, 1, 2, 10**7])
    # Every edge of every numeric distribution, and the closest doubles on either side.
    numeric = [d for d in DISTRIBUTIONS if d.kind == "numeric"]
    probes = iter(events[300:])
    for d in numeric:
        for edge in d.edges:
            for x in (np.nextafter(edge, -np.inf), edge, np.nextafter(edge, np.inf)):
                if x < 0:
                    continue
                e = next(probes)
                parent = e
                *path, leaf = d.expression.split(".")
                for part in path:
                    parent = parent[part]
                parent[leaf] = float(x) if isinstance(parent[leaf], float) else int(np.ceil(x))
    schema = spark_schema_from_json_schema()
    df = spark.createDataFrame([(json.dumps(e),) for e in events], "value string").select(
        F.from_json("value", schema).alias("event")
    )
    rows = window_segment_histograms(df, window="300 seconds", dimensions=DIMS).collect()
    got = Counter()
    for r in rows:
        got[r["window_start_s"], r["product_surface"], r["model_version"], r["d"], r["bin"]] += r[
            "count"
        ]
    expected = Counter()
    for e in events:
        t = datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
        w = int(t.timestamp()) // 300 * 300
        seg = (e["segment"]["product_surface"], e["segment"]["model_version"])
        for i, d in enumerate(DISTRIBUTIONS):
            value = _field(e, d.expression)
            if d.kind == "multi":
                for v in value or [d.values[0]]:
                    expected[w, *seg, i, _reference_bin(d, v)] += 1
            else:
                expected[w, *seg, i, _reference_bin(d, value)] += 1
    assert got == expected


def _kafka_frame(spark, events, first_offset=0):
    rows = [("t", 0, first_offset + i, NOW, json.dumps(e).encode()) for i, e in enumerate(events)]
    return spark.createDataFrame(
        rows, "topic string, partition int, offset long, timestamp timestamp, value binary"
    )


def test_values_beyond_the_limit_fold_into_other(spark, tmp_path):
    events = _events(2000, seed=9)
    rng = random.Random(1)
    # 40 model versions with skewed volumes: v00 most frequent.
    weights = [1 / (i + 1) for i in range(40)]
    for e in events:
        e["segment"]["model_version"] = f"v{rng.choices(range(40), weights)[0]:02d}"
    first, second = events[:1200], events[1200:]
    for e in second[:50]:
        e["segment"]["model_version"] = "brand-new"  # arrives after the limit is reached

    url = f"sqlite:///{tmp_path / 'wh.db'}"
    engine = make_engine(url)
    migrate(engine)
    settings = Settings(
        stream=StreamSettings(dimensions=DIMS, max_values={"model_version": 5}, watermark="1 day"),
        contract=ContractSettings(dedup_state_dir=str(tmp_path / "dedup")),
        warehouse=WarehouseSettings(url=SecretStr(url)),
    )
    processor = BatchProcessor(WarehouseSink(engine), settings, log=lambda _m: None)
    report = processor.process(_kafka_frame(spark, first), 0, "q")
    assert report.folded_rows > 0

    counts = Counter(e["segment"]["model_version"] for e in first)
    top5 = sorted(counts, key=lambda v: (-counts[v], v))[:5]
    admitted = WarehouseSink(engine).admitted_values()
    assert admitted == {
        "model_version": set(top5),
        "product_surface": set(e["segment"]["product_surface"] for e in first),
    }

    processor.process(_kafka_frame(spark, second, first_offset=len(first)), 1, "q")
    rows = aggregate_rows(engine)
    by_model = Counter()
    for r in rows:
        by_model[r["model_version"]] += r["events"]
    assert set(by_model) == {*top5, "other"}
    all_counts = Counter(e["segment"]["model_version"] for e in events)
    for v in top5:
        assert by_model[v] == all_counts[v]
    assert by_model["other"] == len(events) - sum(all_counts[v] for v in top5)
    assert WarehouseSink(engine).admitted_values()["model_version"] == set(top5)

    # Histograms are folded the same way: each distribution still counts every event once.
    t = WarehouseSink(engine).tables.hist
    with engine.connect() as conn:
        per_model = dict(
            conn.execute(
                select(t.c.model_version, func.sum(t.c["count"]))
                .where(t.c.distribution == "outcome")
                .group_by(t.c.model_version)
            ).all()
        )
    assert per_model == dict(by_model)
