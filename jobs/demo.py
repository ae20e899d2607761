"""`safewatch demo`: the whole slice end to end on the local machine, narrated.

Runs in its own sandbox so it never touches your data: warehouse var/demo/warehouse.db,
checkpoint var/demo/checkpoint, topic safety.interactions.demo (recreated each run).
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from pipelines.settings import Settings

DEMO_DIR = Path("var/demo")
DEMO_TOPIC = "safety.interactions.demo"


# The rate that shows each scenario's incident (its label -> the catalog's rate id).
SCENARIO_RATE = {
    "violation": "violation_rate",
    "injection_attempt": "injection_attempt_rate",
    "refused": "refusal_rate",
    "pii_in_output": "pii_output_rate",
}


def demo_settings(settings: Settings) -> Settings:
    """The user's settings with the warehouse, checkpoint and input topic of the sandbox."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_interactions": DEMO_TOPIC}),
            "stream": settings.stream.model_copy(
                update={"checkpoint_dir": str(DEMO_DIR / "checkpoint")}
            ),
            "warehouse": settings.warehouse.model_copy(
                update={"url": SecretStr(f"sqlite:///{DEMO_DIR / 'warehouse.db'}")}
            ),
        }
    )


def run_demo(args: argparse.Namespace, *, log: Callable[[str], None]) -> int:
    from jobs.cli import print_segments, produce_scenario
    from jobs.streaming_aggregator import run
    from pipelines.infra.kafka_broker import LocalKafkaBroker
    from pipelines.kafka.admin import ensure_topics, recreate_topic
    from pipelines.stream.session import build_session
    from pipelines.synth.scenarios import SCENARIOS

    t0 = time.monotonic()
    base = Settings.load(args.config)
    settings = demo_settings(base)
    if args.scenario not in SCENARIOS:
        known = ", ".join(sorted(SCENARIOS))
        log(f"unknown scenario {args.scenario!r}; known: {known}")
        return 2
    scenario = SCENARIOS[args.scenario]

    log("step 1/5: starting the local Kafka broker (KRaft, single node)")
    broker = LocalKafkaBroker(settings.broker, log=log)
    started_here = not broker.status().running
    broker.start()
    try:
        log("step 2/5: creating topics and a fresh demo sandbox in var/demo/")
        ensure_topics(base.kafka, log=log)
        recreate_topic(settings.kafka, DEMO_TOPIC, log=log)
        shutil.rmtree(DEMO_DIR, ignore_errors=True)
        DEMO_DIR.mkdir(parents=True)

        duration = timedelta(minutes=args.minutes)
        start = datetime.now(UTC).replace(second=0, microsecond=0) - duration
        log(
            f"step 3/5: producing synthetic traffic with incident '{scenario.name}': "
            f"{scenario.description}"
        )
        produce_scenario(
            settings,
            scenarios=[scenario.name],
            minutes=args.minutes,
            rate=args.rate,
            seed=args.seed,
            start=start,
            topic=DEMO_TOPIC,
        )

        log("step 4/5: running the streaming job until it has caught up (Spark, local[2])")
        spark = build_session(settings.spark)
        summary = run(spark, settings, until_caught_up=True, log=log)
        spark.stop()
        log(f"job done: {summary.input_rows} records in {len(summary.batches)} micro-batches")

        log("step 5/5: per-segment table from the warehouse")
        print_segments(
            settings, top=12, min_events=30, timeline=True, rate_id=SCENARIO_RATE[scenario.metric]
        )
        target = ", ".join(f"{k}={v}" for k, v in scenario.target.items())
        print(
            f"\nThe injected incident was on {target}, "
            f"from {start + duration * scenario.start_fraction:%H:%M} "
            f"to {start + duration * scenario.end_fraction:%H:%M} UTC."
        )
        print(
            f"Warehouse: {DEMO_DIR / 'warehouse.db'}; show it again with "
            f"SAFEWATCH_WAREHOUSE__URL=sqlite:///{DEMO_DIR / 'warehouse.db'} safewatch show "
            "(tables: docs/warehouse.md)"
        )
    finally:
        if args.keep_running:
            log(f"Kafka keeps running at {broker.bootstrap_servers}; stop it: safewatch infra down")
        elif started_here:
            log("stopping the Kafka broker this demo started")
            broker.stop()
    log(f"demo finished in {time.monotonic() - t0:.0f} s")
    return 0
