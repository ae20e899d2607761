"""The job scaled out on real clusters: three KRaft brokers and a Spark standalone master with
two workers, all on loopback.

One topic (3 partitions, each on all 3 brokers) is counted twice: by the job in local mode
into SQLite, and by `safewatch run` on the standalone master into PostgreSQL while one broker
is killed with SIGKILL after the first committed batch. Both warehouses must hold the same
rows, and each ledger must account for every record exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from pipelines.infra.process import http_json, tail
from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_events
from pipelines.metrics.sketches import estimate, merge_sketches
from pipelines.settings import AlertingSettings, Settings
from pipelines.synth.generator import generate_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.queries import aggregate_rows, ledger_rows
from pipelines.warehouse.tables import Tables, as_utc
from tests.integration.conftest import CLUSTER_CLIENT_OPTIONS
from tests.integration.streaming_support import (
    DIMENSIONS,
    describe_partitions,
    ground_truth,
    make_settings,
    run_job,
    warehouse_table,
)

pytestmark = pytest.mark.integration

# Event times within the contract's max_age (7 days) of the records' Kafka timestamps (now).
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
EVENTS = 3000
MAX_OFFSETS = 1050  # three micro-batches (Spark splits a trigger across partitions by lag)
APP_NAME = "safewatch-cluster-test"


def job_settings(kafka, topic: str, work: Path, url: str) -> Settings:
    """The settings of both runs; alert rules are off (their delivery is not under test)."""
    kafka = kafka.model_copy(update={"client_options": CLUSTER_CLIENT_OPTIONS})
    settings = make_settings(kafka, topic, work / "checkpoint", url, max_offsets=MAX_OFFSETS)
    return settings.model_copy(update={"alerting": AlertingSettings(evaluate=False)})


def cluster_environment(settings: Settings, master_url: str) -> dict[str, str]:
    """`settings` as SAFEWATCH_* variables, the way an operator points the CLI at a cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEWATCH_")}
    env.update(
        {
            "SAFEWATCH_SPARK__MASTER": master_url,
            "SAFEWATCH_SPARK__APP_NAME": APP_NAME,
            "SAFEWATCH_SPARK__JARS_DIR": str(settings.spark.jars_dir),
            "SAFEWATCH_SPARK__MAX_CORES": "2",
            "SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "SAFEWATCH_KAFKA__REPLICATION_FACTOR": str(settings.kafka.replication_factor),
            "SAFEWATCH_KAFKA__TOPIC_INTERACTIONS": settings.kafka.topic_interactions,
            "SAFEWATCH_KAFKA__CLIENT_OPTIONS": json.dumps(settings.kafka.client_options),
            "SAFEWATCH_STREAM__CHECKPOINT_DIR": settings.stream.checkpoint_dir,
            "SAFEWATCH_STREAM__MAX_OFFSETS_PER_TRIGGER": str(
                settings.stream.max_offsets_per_trigger
            ),
            "SAFEWATCH_STREAM__WATERMARK": settings.stream.watermark,
            "SAFEWATCH_STREAM__DIMENSIONS": ",".join(settings.stream.dimensions),
            "SAFEWATCH_CONTRACT__DEDUP_STATE_DIR": settings.contract.dedup_state_dir,
            "SAFEWATCH_WAREHOUSE__URL": settings.warehouse.url.get_secret_value(),
            "SAFEWATCH_ALERTING__EVALUATE": "false",
        }
    )
    return env


def committed_batches(engine) -> int:
    """Batches in the ledger; 0 while the job has not created its tables yet."""
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM batch_ledger")).scalar_one())
    except DBAPIError:
        return 0


def aggregates_and_sketches(url: str) -> tuple[list[dict], list[bytes | None]]:
    """segment_window_agg rows without updated_at and users_sketch, and the sketches apart."""
    rows = aggregate_rows(make_engine(url))
    drop = ("updated_at", "users_sketch")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows], [
        r["users_sketch"] for r in rows
    ]


def same_users(a: bytes | None, b: bytes | None) -> bool:
    """Whether two distinct-user sketches hold the same users: their union adds none.

    Their bytes may differ: a small sketch lists its entries in the order they were merged,
    and tasks finish in another order on the cluster.
    """
    if a is None or b is None:
        return a is b
    return estimate(a) == estimate(b) == merge_sketches([a, b])[1]


def histogram_rows(url: str) -> list[dict]:
    engine = make_engine(url)
    t = Tables(engine).hist
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(t)).mappings()]
    for r in rows:
        r["window_start"] = as_utc(r["window_start"])
    key = ["window_start", *DIMENSIONS, "distribution", "bin"]
    return sorted(rows, key=lambda r: tuple(r[k] for k in key))


def assert_each_record_counted_once(url: str, records: int, partitions: int) -> None:
    engine = make_engine(url)
    ledger = ledger_rows(engine)
    for batch in ledger:
        assert batch["input_rows"] == (
            batch["aggregated_rows"]
            + batch["rejected_rows"]
            + batch["late_rows"]
            + batch["duplicate_rows"]
        ), batch
    assert sum(b["input_rows"] for b in ledger) == records
    offsets = Tables(engine).offsets
    with engine.connect() as conn:
        ranges = conn.execute(
            select(offsets.c.kafka_partition, offsets.c.start_offset, offsets.c.end_offset)
        ).all()
    assert sorted({p for p, _, _ in ranges}) == list(range(partitions))
    for partition in range(partitions):
        spans = sorted((s, e) for p, s, e in ranges if p == partition)
        # Contiguous from offset 0, no gap and no overlap (end offsets are inclusive).
        assert spans[0][0] == 0
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start == end + 1, (partition, spans)
    assert sum(e - s + 1 for _, s, e in ranges) == records


def test_cluster_run_with_a_broker_killed_equals_the_local_run(
    spark, kafka_cluster, spark_cluster, postgres, unique_topic, tmp_path
):
    topic = unique_topic("interactions")
    kafka = kafka_cluster.kafka.model_copy(update={"topic_interactions": topic})
    ensure_topics(kafka, [topic], log=lambda _m: None)
    assert [p["replicas"] for p in describe_partitions(kafka, topic)] == [[1, 2, 3]] * 3
    events = list(
        islice(
            generate_events(
                seed=71,
                start=T0,
                duration=timedelta(minutes=15),
                rate_per_s=5.0,
                scenarios=("violation-spike",),
            ),
            EVENTS,
        )
    )
    produce_events(kafka, topic, events)

    # In local mode, in this process.
    sqlite_url = f"sqlite:///{tmp_path / 'local.db'}"
    local = run_job(spark, job_settings(kafka, topic, tmp_path / "local", sqlite_url))
    assert len(local.batches) >= 3

    # On the standalone master, through the CLI in another process (one SparkContext per
    # process), killing the leader of partition 0 once the first batch is committed.
    pg_url = postgres.create_database("cluster_run")
    settings = job_settings(kafka, topic, tmp_path / "cluster", pg_url)
    output = tmp_path / "cluster-run.log"
    safewatch = Path(sys.executable).parent / "safewatch"
    with output.open("wb") as out:
        job = subprocess.Popen(
            [str(safewatch), "run", "--until-caught-up", "--no-metrics"],
            cwd=tmp_path,  # no ./safewatch.toml of a developer's checkout applies
            env=cluster_environment(settings, spark_cluster.master_url),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    engine = make_engine(pg_url)
    killed_node = None
    try:
        deadline = time.monotonic() + 600  # guards against a hang only
        while committed_batches(engine) == 0:
            assert job.poll() is None, "\n".join(tail(output, 40))
            assert time.monotonic() < deadline, "\n".join(tail(output, 40))
            time.sleep(0.5)
        killed_node = describe_partitions(kafka, topic)[0]["leader"]
        assert kafka_cluster.cluster.kill(killed_node) is not None
        killed_at = datetime.now(UTC)
        try:
            returncode = job.wait(timeout=600)
        except subprocess.TimeoutExpired:
            pytest.fail("the job did not finish within 600 s:\n" + "\n".join(tail(output, 40)))
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        if killed_node is not None:
            kafka_cluster.cluster.restart(killed_node)
    assert returncode == 0, "\n".join(tail(output, 40))

    ledger = ledger_rows(engine)
    assert len(ledger) == len(local.batches)
    assert any(b["committed_at"] > killed_at for b in ledger), "the job ended before the kill"
    # It ran on the cluster: the master lists the application, both workers ran executors.
    state = http_json(f"{spark_cluster.webui_url}/json/")
    apps = [a for a in state["activeapps"] + state["completedapps"] if a["name"] == APP_NAME]
    assert len(apps) == 1
    for worker in ("worker-1", "worker-2"):
        assert (spark_cluster.data_dir / worker / apps[0]["id"]).is_dir(), worker

    cluster_rows, cluster_sketches = aggregates_and_sketches(pg_url)
    local_rows, local_sketches = aggregates_and_sketches(sqlite_url)
    assert cluster_rows == local_rows
    assert all(map(same_users, cluster_sketches, local_sketches))
    assert warehouse_table(aggregate_rows(engine)) == ground_truth(events)
    hist = histogram_rows(pg_url)
    assert hist and hist == histogram_rows(sqlite_url)
    for url in (sqlite_url, pg_url):
        assert_each_record_counted_once(url, records=len(events), partitions=3)
    assert kafka_cluster.cluster.node(killed_node).status().running  # restarted
