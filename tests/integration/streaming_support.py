"""Shared helpers of the streaming integration tests: settings, runs, independent truth."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from pydantic import SecretStr

from jobs.streaming_aggregator import RunSummary, run
from pipelines.settings import (
    ContractSettings,
    KafkaSettings,
    Settings,
    SparkSettings,
    StreamSettings,
    WarehouseSettings,
)
from pipelines.synth.generator import labels

REPO = Path(__file__).resolve().parents[2]
DIMENSIONS = ("product_surface", "model_version", "locale")
WINDOW = timedelta(minutes=5)

# Ground-truth label -> warehouse counter. The labels come from the generator's own fields,
# computed in plain Python: an expectation independent of the Spark SQL predicates.
LABEL_TO_COUNTER = {
    "violation": "violations",
    "blocked": "blocks",
    "refused": "refusals",
    "injection_attempt": "injection_attempts",
    "injection_success": "injection_successes",
    "jailbreak_attempt": "jailbreak_attempts",
    "jailbreak_success": "jailbreak_successes",
    "pii_in_output": "pii_outputs",
    "user_report": "user_reports",
}


def consume_all(kafka: KafkaSettings, topic: str) -> list[Any]:
    """Every record of `topic`, from the start (stops 5 s after the last one); records of up
    to 8 MB.
    """
    consumer = KafkaConsumer(
        topic,
        **kafka.python_client_options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=5000,
        fetch_max_bytes=8 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def make_settings(
    kafka: KafkaSettings,
    topic: str,
    checkpoint: Path,
    warehouse_url: str,
    *,
    max_offsets: int = 4000,
    watermark: str = "1 day",
    dimensions: tuple[str, ...] = DIMENSIONS,
) -> Settings:
    return Settings(
        kafka=kafka.model_copy(update={"topic_interactions": topic}),
        spark=SparkSettings(jars_dir=REPO / "var" / "jars" / "spark"),
        stream=StreamSettings(
            checkpoint_dir=str(checkpoint),
            max_offsets_per_trigger=max_offsets,
            watermark=watermark,
            dimensions=dimensions,
        ),
        contract=ContractSettings(dedup_state_dir=f"{checkpoint}-dedup"),
        warehouse=WarehouseSettings(url=SecretStr(warehouse_url)),
    )


def run_job(spark, settings: Settings) -> RunSummary:
    return run(spark, settings, until_caught_up=True, log=lambda _m: None)


def window_start(event_time: str) -> datetime:
    t = datetime.fromisoformat(event_time.replace("Z", "+00:00")).astimezone(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((t - epoch) // WINDOW) * WINDOW


def ground_truth(events: Iterable[dict]) -> dict[tuple, dict[str, int]]:
    """(window_start, *dimension values) -> counter -> count, from the events themselves."""
    truth: dict[tuple, Counter] = {}
    for e in events:
        key = (window_start(e["event_time"]), *(e["segment"][d] for d in DIMENSIONS))
        acc = truth.setdefault(key, Counter())
        acc["events"] += 1
        for label, value in labels(e).items():
            if value and label in LABEL_TO_COUNTER:
                acc[LABEL_TO_COUNTER[label]] += 1
    return {
        k: {c: v.get(c, 0) for c in ("events", *LABEL_TO_COUNTER.values())}
        for k, v in truth.items()
    }


def warehouse_table(rows: Iterable[dict]) -> dict[tuple, dict[str, int]]:
    """The same shape as ground_truth, read back from segment_window_agg rows."""
    out = {}
    for r in rows:
        assert r["dimension_set"] == ",".join(DIMENSIONS)
        if r["events"] == 0:
            continue  # a row of rejected events only (telemetry, redaction failures)
        key = (r["window_start"], *(r[d] for d in DIMENSIONS))
        out[key] = {c: r[c] for c in ("events", *LABEL_TO_COUNTER.values())}
    return out


def describe_partitions(kafka: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    """Partition, leader and replicas of each partition, in partition order.

    kafka-python 3 names the fields as the protocol does (partition_index, leader_id,
    replica_nodes); 2.x as partition, leader, replicas.
    """
    admin = KafkaAdminClient(**kafka.python_client_options())
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    partitions = [
        {
            "partition": p.get("partition_index", p.get("partition")),
            "leader": p.get("leader_id", p.get("leader")),
            "replicas": sorted(p.get("replica_nodes", p.get("replicas", []))),
        }
        for p in described["partitions"]
    ]
    return sorted(partitions, key=lambda p: p["partition"])
