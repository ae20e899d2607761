"""Counter predicates against Spark SQL, and cardinality control in the job.

- The catalog's predicates (Spark SQL) give the same verdicts when the executors evaluate
  them on Arrow columns as Spark gives (histogram bins against numpy: tests/unit/
  test_counting.py).
- A producer that sends many distinct values of a dimension is folded into `other` by the
  batch processor: the top values are admitted up to the limit, totals are preserved.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from pydantic import SecretStr
from pyspark.sql import functions as F
from sqlalchemy import func, select

from pipelines.contract.records import Limits, RecordChecker
from pipelines.contract.shapes import INPUT_SCHEMA
from pipelines.contract.spark_schema import spark_schema_from_json_schema
from pipelines.metrics.catalog import EVENT_COUNTERS
from pipelines.privacy.detectors import detector_names, screen_pattern
from pipelines.settings import (
    ContractSettings,
    Settings,
    StreamSettings,
    WarehouseSettings,
)
from pipelines.stream.batch import BatchProcessor
from pipelines.stream.predicates import Columns, SqlPredicate
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


def test_counter_predicates_equal_spark_sql(spark):
    """The catalog's predicates are Spark SQL; the executors evaluate them on Arrow columns
    (predicates.SqlPredicate). Spark itself is the reference, on varied events."""
    events = _events(1500, seed=4)
    rng = random.Random(9)
    for e in events[:500]:
        e["moderation"]["flagged_categories"] = rng.sample(
            ["hate", "violence", "privacy", "illegal"], rng.randint(0, 3)
        )
        e["moderation"]["action"] = rng.choice(["allow", "flag", "block", "redact"])
        e["refusal"]["refused"] = rng.random() < 0.5
        e["injection"]["attempt_detected"] = rng.random() < 0.5
        e["injection"]["succeeded"] = rng.random() < 0.5
        e["tool_calls"]["total"] = rng.randint(0, 2)
        e["tool_calls"]["unauthorized"] = rng.randint(0, 1)
        e["feedback"]["appeal_overturned"] = rng.random() < 0.5
        e["feedback"]["user_report"] = rng.random() < 0.5
        e["jailbreak"]["attempt"] = rng.random() < 0.5
        e["jailbreak"]["succeeded"] = rng.random() < 0.5
        e["privacy"]["pii_detected_in_output"] = rng.random() < 0.5
    checker = RecordChecker(
        Limits(1_000_000, timedelta(days=1), timedelta(days=7)),
        screen=screen_pattern(),
        detect=detector_names,
    )
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(["t"] * len(events)),
            pa.array([0] * len(events), pa.int32()),
            pa.array(range(len(events)), pa.int64()),
            pa.array([NOW] * len(events), pa.timestamp("us", tz="UTC")),
            pa.array([json.dumps(e).encode() for e in events], pa.binary()),
        ],
        schema=INPUT_SCHEMA,
    )
    checked = checker.check_batch(batch, watermark=None)
    assert checked.column("reason").null_count == len(events)
    columns = Columns(checked.column("event"))
    df = spark.createDataFrame([(json.dumps(e),) for e in events], "value string").select(
        F.from_json("value", spark_schema_from_json_schema()).alias("event")
    )
    flat = df.select("event.*")
    expected = flat.select(
        *[F.coalesce(F.expr(c.predicate), F.lit(False)).alias(c.id) for c in EVENT_COUNTERS]
    ).collect()
    for c in EVENT_COUNTERS:
        got = SqlPredicate(c.predicate or "false")(columns).tolist()
        assert got == [bool(r[c.id]) for r in expected], c.id
        assert 0 < sum(got) or c.id.startswith("violations_"), c.id


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
