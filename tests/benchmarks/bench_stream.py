"""Benchmark: the streaming job against bare Spark on the same Kafka topic, in one run.

Produces one topic of synthetic events once (3 partitions; size, seed and scenario as
arguments), then drains it with three queries back to back, each in its own Spark driver
(a fresh JVM, so peak memory is per query) with a fresh checkpoint:

  A  bare Spark: Kafka source -> `noop` sink;
  B  bare Spark: `from_json` with the event schema, 5-minute window x 3 dimensions, a count
     and a few sums, `foreachBatch` upsert into SQLite with SQLAlchemy;
  job  Safewatch's streaming job with its default settings (every feature on), SQLite.

and prints events/s of each (query time: from the query's start to its end, the session's
start-up excluded; and steady: over the batches after the first, which also starts the
Python workers and warms the JVM), the ratios job/B and job/A, the job's seconds per stage
summed over its batches, and the peak resident memory of each driver's JVM and Python
process. A benchmark, not a test: the machine's load changes absolute figures, the ratios
are what to compare.

    .venv/bin/python tests/benchmarks/bench_stream.py                # 300,000 events
    .venv/bin/python tests/benchmarks/bench_stream.py --events 50000 --only job
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

QUERIES = ("A", "B", "job")
DESCRIPTIONS = {
    "A": "bare Spark: Kafka source -> noop sink",
    "B": "bare Spark: from_json + 5-min window x 3 dims, count and sums, upsert into SQLite",
    "job": "Safewatch `run --until-caught-up` (every feature on, SQLite)",
}


# -- memory ---------------------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak resident memory (VmHWM) of this process and of the Spark driver's JVM."""

    def __init__(self, jvm_pid: int) -> None:
        self.jvm_pid = jvm_pid

    def read(self) -> dict[str, float]:
        return {
            "jvm_peak_mb": _status_kb(self.jvm_pid, "VmHWM") / 1024,
            "python_peak_mb": _status_kb(os.getpid(), "VmHWM") / 1024,
        }


def _jvm_pid(spark: Any) -> int:
    return int(spark.sparkContext._jvm.ProcessHandle.current().pid())  # noqa: SLF001


# -- the three queries (each runs in its own process) ---------------------------------------


def _settings(args: argparse.Namespace, tmp: Path) -> Any:
    from pydantic import SecretStr

    from pipelines.settings import (
        AlertingSettings,
        ContractSettings,
        KafkaSettings,
        Settings,
        SparkSettings,
        StreamSettings,
        WarehouseSettings,
    )

    return Settings(
        kafka=KafkaSettings(bootstrap_servers=args.bootstrap, topic_interactions=args.topic,
                            topic_dlq=args.topic + ".dlq", topic_alerts=args.topic + ".alerts"),
        spark=SparkSettings(jars_dir=REPO / "var" / "jars" / "spark",
                            **({"master": args.master} if args.master else {})),
        stream=StreamSettings(
            checkpoint_dir=str(tmp / "checkpoint"),
            max_offsets_per_trigger=args.max_offsets,
            starting_offsets="earliest",
        ),
        contract=ContractSettings(dedup_state_dir=str(tmp / "dedup")),
        warehouse=WarehouseSettings(url=SecretStr(f"sqlite:///{tmp}/warehouse.db")),
        # Notices go nowhere: no channel is part of what is measured.
        alerting=AlertingSettings(channels=()),
    )  # fmt: skip


def _kafka_stream(spark: Any, settings: Any) -> Any:
    return (
        spark.readStream.format("kafka")
        .options(**settings.kafka.spark_options())
        .option("subscribe", settings.kafka.topic_interactions)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(settings.stream.max_offsets_per_trigger))
        .option("failOnDataLoss", "true")
        .load()
    )


def _steady(query: Any) -> dict[str, float]:
    """Rows and seconds of the query's batches after its first (which also starts the
    Python workers, loads classes and warms the JIT): the steady state."""
    progress = [p for p in query.recentProgress if p["numInputRows"]][1:]
    return {
        "steady_rows": sum(p["numInputRows"] for p in progress),
        "steady_seconds": sum(p["durationMs"]["triggerExecution"] for p in progress) / 1000,
    }


def _run_a(spark: Any, settings: Any) -> dict[str, Any]:
    query = (
        _kafka_stream(spark, settings)
        .writeStream.format("noop")
        .option("checkpointLocation", settings.stream.checkpoint_dir)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    rows = sum(p["numInputRows"] for p in query.recentProgress)
    return {"rows": rows, "batches": len(query.recentProgress), **_steady(query)}


def _run_b(spark: Any, settings: Any) -> dict[str, Any]:
    from pyspark.sql import functions as F
    from sqlalchemy import (
        Column,
        DateTime,
        Float,
        Integer,
        MetaData,
        String,
        Table,
        create_engine,
    )
    from sqlalchemy.dialects.sqlite import insert

    from pipelines.contract.spark_schema import spark_schema_from_json_schema

    engine = create_engine(settings.warehouse.url.get_secret_value())
    meta = MetaData()
    dims = ("product_surface", "model_version", "locale")
    sums = ("violations", "refusals", "injection_attempts", "latency_ms")
    table = Table(
        "bench_agg",
        meta,
        Column("window_start", DateTime, primary_key=True),
        *[Column(d, String(200), primary_key=True) for d in dims],
        Column("events", Integer, nullable=False),
        *[Column(s, Float if s == "latency_ms" else Integer, nullable=False) for s in sums],
    )
    meta.create_all(engine)
    counted = {"rows": 0, "batches": 0}

    def upsert(df: Any, _batch_id: int) -> None:
        event = F.from_json(F.col("value").cast("string"), spark_schema_from_json_schema())
        parsed = df.select(event.alias("e")).select("e.*")
        rows = (
            parsed.groupBy(
                F.window("event_time", "5 minutes").start.alias("window_start"),
                *[F.col(f"segment.{d}").alias(d) for d in dims],
            )
            .agg(
                F.count(F.lit(1)).alias("events"),
                F.sum((F.size("moderation.flagged_categories") > 0).cast("int")).alias(
                    "violations"
                ),
                F.sum(F.col("refusal.refused").cast("int")).alias("refusals"),
                F.sum(F.col("injection.attempt_detected").cast("int")).alias("injection_attempts"),
                F.sum("request.latency_ms").alias("latency_ms"),
            )
            .collect()
        )
        values = [r.asDict() for r in rows]
        counted["rows"] += sum(v["events"] for v in values)
        counted["batches"] += 1
        if not values:
            return
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["window_start", *dims],
            set_={c: table.c[c] + stmt.excluded[c] for c in ("events", *sums)},
        )
        with engine.begin() as conn:
            conn.execute(stmt, values)

    query = (
        _kafka_stream(spark, settings)
        .writeStream.foreachBatch(upsert)
        .option("checkpointLocation", settings.stream.checkpoint_dir)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return {**counted, **_steady(query)}


def _run_job(spark: Any, settings: Any) -> dict[str, Any]:
    from jobs.streaming_aggregator import RunSummary, start_query

    summary = RunSummary()
    job = start_query(
        spark, settings, until_caught_up=True, log=lambda _m: None,
        on_batch=summary.batches.append, on_derived=summary.derived.append,
    )  # fmt: skip
    query = job.query
    query.awaitTermination()
    # The last batch's drift and alert rules run after its trigger: count them as steady time.
    t0 = time.perf_counter()
    job.await_termination()
    tail = time.perf_counter() - t0
    steady = _steady(query)
    steady["steady_seconds"] += tail
    stages: dict[str, float] = {}
    for b in summary.batches:
        for name, seconds in b.stages.items():
            stages[name] = stages.get(name, 0.0) + seconds
    derived: dict[str, float] = {}
    for d in summary.derived:
        for name, seconds in d.stages.items():
            derived[name] = derived.get(name, 0.0) + seconds
    sizes = [b.input_rows for b in summary.batches if not b.skipped]
    return {
        "derived": derived,
        "rows": summary.input_rows,
        "aggregated": summary.aggregated_rows,
        "batches": len(summary.batches),
        "stages": stages,
        "batch_seconds": [round(b.seconds, 2) for b in summary.batches],
        "batch_sizes": sizes,
        **steady,
    }


def child(args: argparse.Namespace) -> None:
    """Run one query in this process and print its figures as one JSON line."""
    from pipelines.stream.session import build_session

    with tempfile.TemporaryDirectory(prefix=f"bench-{args.child}-") as tmp_name:
        tmp = Path(tmp_name)
        settings = _settings(args, tmp)
        spark = build_session(settings.spark)
        memory = PeakMemory(_jvm_pid(spark))
        run = {"A": _run_a, "B": _run_b, "job": _run_job}[args.child]
        t0 = time.perf_counter()
        result = run(spark, settings)
        result["seconds"] = time.perf_counter() - t0
        result.update(memory.read())
        spark.stop()
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent: broker, topic, the three children, the table -------------------------------


@contextmanager
def _broker(args: argparse.Namespace) -> Iterator[str]:
    if args.bootstrap:
        yield args.bootstrap
        return
    from pipelines.infra.kafka_broker import LocalKafkaBroker
    from pipelines.settings import BrokerSettings
    from tests.integration.conftest import _free_ports

    port, controller = _free_ports(2)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as data:
        broker = LocalKafkaBroker(
            BrokerSettings(port=port, controller_port=controller, data_dir=Path(data),
                           jars_dir=REPO / "var" / "jars" / "kafka", heap="1g"),
            log=lambda m: print(f"[bench] {m}", flush=True),
        )  # fmt: skip
        broker.start()
        try:
            yield broker.bootstrap_servers
        finally:
            broker.stop()


def _produce(args: argparse.Namespace) -> int:
    from pipelines.kafka.admin import end_offsets, ensure_topics, topic_exists
    from pipelines.kafka.producer import produce_events
    from pipelines.settings import KafkaSettings
    from pipelines.synth.generator import generate_events

    kafka = KafkaSettings(bootstrap_servers=args.bootstrap, partitions=3)
    given = args.topic_given and topic_exists(kafka, args.topic)
    existing = sum(end_offsets(kafka, args.topic).values()) if given else 0
    if existing:
        print(f"[bench] topic {args.topic} already holds {existing} records: using them")
        return existing
    ensure_topics(kafka, [args.topic], log=lambda m: print(f"[bench] {m}"))
    minutes = args.events / args.rate / 60
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes)
    events = generate_events(
        seed=args.seed, start=start, duration=timedelta(minutes=minutes), rate_per_s=args.rate,
        scenarios=args.scenario,
    )  # fmt: skip
    t0 = time.perf_counter()
    sent = produce_events(kafka, args.topic, events, progress=None)
    print(f"[bench] produced {sent} events to {args.topic} in {time.perf_counter() - t0:.0f} s")
    return sent


def _run_child(args: argparse.Namespace, query: str) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--child", query, "--bootstrap", args.bootstrap,
        "--topic", args.topic, "--max-offsets", str(args.max_offsets),
        *(["--master", args.master] if args.master else []),
    ]  # fmt: skip
    print(f"[bench] running {query}: {DESCRIPTIONS[query]} …", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    msg = f"query {query} failed (exit {proc.returncode}):\n{tail}"
    raise SystemExit(msg)


def _table(results: dict[str, list[dict[str, Any]]], events: int) -> None:
    rate = {q: [r["rows"] / r["seconds"] for r in rs] for q, rs in results.items()}
    steady = {
        q: [r["steady_rows"] / r["steady_seconds"] if r["steady_seconds"] else 0.0 for r in rs]
        for q, rs in results.items()
    }
    job, job_steady = rate.get("job"), steady.get("job")
    print()
    print(f"{'query':<5} {'events':>9} {'events/s (each round)':>22} {'job / this':>11} "
          f"{'steady events/s':>17} {'job / this':>11} {'JVM peak':>9} {'Py peak':>8}  "
          "what")  # fmt: skip
    for q, rs in results.items():
        each = " / ".join(f"{x:,.0f}" for x in rate[q])
        ratio = " / ".join(f"{j / x:.2f}" for j, x in zip(job, rate[q], strict=True)) if job else ""
        warm = " / ".join(f"{x:,.0f}" for x in steady[q])
        warm_ratio = (
            " / ".join(
                f"{j / x:.2f}" if x else "-" for j, x in zip(job_steady, steady[q], strict=True)
            )
            if job_steady
            else ""
        )
        jvm = max(r["jvm_peak_mb"] for r in rs)
        py = max(r["python_peak_mb"] for r in rs)
        print(f"{q:<5} {rs[0]['rows']:>9,} {each:>22} {ratio:>11} {warm:>17} {warm_ratio:>11} "
              f"{jvm:>7.0f}MB {py:>6.0f}MB  {DESCRIPTIONS[q]}")  # fmt: skip
    print("(events/s: over the query's time; steady: over its batches after the first, which "
          "also starts the workers)")  # fmt: skip
    if "job" in results:
        last = results["job"][-1]
        total = sum(last["stages"].values())
        print()
        print(f"job, last round: {last['batches']} batches of up to {max(last['batch_sizes'])} "
              f"records; {last['aggregated']:,} aggregated of {last['rows']:,}; "
              f"{last['seconds']:.1f} s query time")  # fmt: skip
        print("seconds per stage, summed over the batches:")
        for name, seconds in sorted(last["stages"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<14} {seconds:8.2f} s  {100 * seconds / total:5.1f} %")
        print("after each commit, while the next batch is checked and counted ('wait' above "
              "is what the next commit waited for them):")  # fmt: skip
        for name, seconds in sorted(last.get("derived", {}).items(), key=lambda kv: -kv[1]):
            print(f"  {name:<14} {seconds:8.2f} s")
        print(f"  batch seconds: {last['batch_seconds']}")
    if events and "job" in results:
        print(f"\nevents in the topic: {events:,}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The streaming job against bare Spark on the same topic (prints figures)."
    )
    parser.add_argument("--events", type=int, default=300_000, help="events to produce (300000)")
    parser.add_argument("--rate", type=float, default=20.0, help="events/s of event time (20)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument(
        "--scenario", action="append", default=None,
        help="incident scenario(s) in the traffic (default violation-spike)",
    )  # fmt: skip
    parser.add_argument(
        "--max-offsets",
        type=int,
        default=50_000,
        help="maxOffsetsPerTrigger of every query (50000, the job's default)",
    )
    parser.add_argument(
        "--master", help="Spark master of every query (default: the job's, spark.master)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of A, B, job (1)")
    parser.add_argument("--only", nargs="+", choices=QUERIES, help="run only these queries")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--topic", help="use this topic (produced if empty)")
    parser.add_argument("--child", choices=QUERIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.scenario = args.scenario or ["violation-spike"]
    args.topic_given = args.topic is not None
    args.topic = args.topic or f"bench.interactions.{os.getpid()}"
    queries = args.only or list(QUERIES)
    print(f"[bench] {os.uname().nodename}: {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}; queries {', '.join(queries)}; "
          f"maxOffsetsPerTrigger {args.max_offsets}")  # fmt: skip
    with _broker(args) as bootstrap:
        args.bootstrap = bootstrap
        events = _produce(args)
        results: dict[str, list[dict[str, Any]]] = {q: [] for q in queries}
        for _round in range(args.rounds):
            for q in queries:
                result = _run_child(args, q)
                results[q].append(result)
                speed = result["rows"] / result["seconds"]
                print(f"[bench] {q}: {result['rows']:,} records in {result['seconds']:.1f} s = "
                      f"{speed:,.0f} events/s", flush=True)  # fmt: skip
    _table(results, events)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
