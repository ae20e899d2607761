"""`safewatch demo`: the whole slice end to end on the local machine, narrated.

Runs in its own sandbox so it never touches your data: warehouse var/demo/warehouse.db,
checkpoint var/demo/checkpoint, topic safety.interactions.demo (recreated each run).
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipelines.redact import redact_url
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
                # The demo's events arrive in order, all at once: a short watermark closes
                # (and so evaluates) the windows up to the last minutes of the hour.
                update={"checkpoint_dir": str(DEMO_DIR / "checkpoint"), "watermark": "2 minutes"}
            ),
            "warehouse": settings.warehouse.model_copy(
                update={"url": SecretStr(f"sqlite:///{DEMO_DIR / 'warehouse.db'}")}
            ),
        }
    )


def run_demo(args: argparse.Namespace, *, log: Callable[[str], None]) -> int:
    from jobs.streaming_aggregator import run
    from pipelines.durations import parse_duration
    from pipelines.errors import InfraError
    from pipelines.infra.alertmanager import LocalAlertmanager
    from pipelines.infra.kafka_broker import LocalKafkaBroker
    from pipelines.kafka.admin import ensure_topics, recreate_topic
    from pipelines.report.terminal import print_segments
    from pipelines.stream.session import build_session
    from pipelines.synth.produce import produce_scenario
    from pipelines.synth.scenarios import SCENARIOS

    t0 = time.monotonic()
    base = Settings.load(args.config)
    settings = demo_settings(base)
    if args.scenario not in SCENARIOS:
        known = ", ".join(sorted(SCENARIOS))
        log(f"unknown scenario {args.scenario!r}; known: {known}")
        return 2
    scenario = SCENARIOS[args.scenario]

    log("step 1/7: starting the local Kafka broker (KRaft, single node) and Alertmanager")
    broker = LocalKafkaBroker(settings.broker, log=log)
    started_here = not broker.status().running
    broker.start()
    alertmanager = LocalAlertmanager(settings.alerting, log=log)
    alertmanager_here = False
    try:
        alertmanager_here = not alertmanager.status().running
        alertmanager.start()
        settings = settings.model_copy(
            update={
                "alerting": settings.alerting.model_copy(
                    update={"alertmanager_url": alertmanager.url}
                )
            }
        )
        log(f"Alertmanager is up at {alertmanager.url} (alerts go there and to Kafka)")
    except InfraError as exc:
        alertmanager_here = False
        log(f"no local Alertmanager ({exc}); alerts go to Kafka only")
        settings = settings.model_copy(
            update={"alerting": settings.alerting.model_copy(update={"channels": ("kafka",)})}
        )
    try:
        log("step 2/7: creating topics and a fresh demo sandbox in var/demo/")
        ensure_topics(base.kafka, log=log)
        recreate_topic(settings.kafka, DEMO_TOPIC, log=log)
        shutil.rmtree(DEMO_DIR, ignore_errors=True)
        DEMO_DIR.mkdir(parents=True)

        duration = timedelta(minutes=args.minutes)
        # Traffic that ends at the start of the current window: every run fills the same
        # windows with the same events, so its figures are the same whenever it runs.
        window = parse_duration(settings.stream.window)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        start = epoch + (datetime.now(UTC) - epoch) // window * window - duration
        log(
            f"step 3/7: producing synthetic traffic with incident '{scenario.name}': "
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
            log=log,
        )

        log("step 4/7: running the streaming job until it has caught up (Spark, local[2])")
        spark = build_session(settings.spark)
        summary = run(spark, settings, until_caught_up=True, log=log)
        spark.stop()
        log(f"job done: {summary.input_rows} records in {len(summary.batches)} micro-batches")

        log("step 5/7: per-segment table from the warehouse")
        print_segments(
            settings, top=12, min_events=30, timeline=True, rate_id=SCENARIO_RATE[scenario.metric]
        )
        target = ", ".join(f"{k}={v}" for k, v in scenario.target.items())
        print(
            f"\nThe injected incident was on {target}, "
            f"from {start + duration * scenario.start_fraction:%H:%M} "
            f"to {start + duration * scenario.end_fraction:%H:%M} UTC."
        )
        log("step 6/7: alerts")
        print_alerts(settings)
        log("step 7/7: the weekly safety-posture report")
        html, md = weekly_report(settings)
        print(f"\nWeekly report: {html} (open it in a browser) and {md}")
        url = f"SAFEWATCH_WAREHOUSE__URL=sqlite:///{DEMO_DIR / 'warehouse.db'}"
        print(
            f"\nWarehouse: {DEMO_DIR / 'warehouse.db'}. Query it: {url} safewatch query "
            '"SELECT * FROM v_segment_daily LIMIT 5"; the segment table again: '
            f"{url} safewatch show (tables and views: docs/warehouse.md)"
        )
    finally:
        if args.keep_running:
            up = alertmanager.status().running
            also = f" and Alertmanager at {alertmanager.url}" if up else ""
            log(
                f"Kafka keeps running at {broker.bootstrap_servers}{also}; stop them: "
                "safewatch infra down"
            )
        else:
            if started_here:
                log("stopping the Kafka broker this demo started")
                broker.stop()
            if alertmanager_here:
                log("stopping the Alertmanager this demo started")
                alertmanager.stop()
    log(f"demo finished in {time.monotonic() - t0:.0f} s")
    return 0


def weekly_report(settings: Settings) -> tuple[Path, Path]:
    """The posture report of the demo's week, written to var/demo/reports/."""
    from pipelines.report.model import IsoWeek
    from pipelines.report.weekly import collect_weekly, latest_week, write_report
    from pipelines.warehouse.migrate import open_warehouse

    engine = open_warehouse(settings.warehouse, reader=True)
    week = latest_week(engine) or IsoWeek.containing(datetime.now(UTC))
    return write_report(collect_weekly(engine, settings, week), DEMO_DIR / "reports")


def print_alerts(settings: Settings) -> None:
    """What the alert rules did: every transition, and what Alertmanager holds now."""
    from pipelines.alerting import store
    from pipelines.alerting.alertmanager_client import NotifierError, get_alerts
    from pipelines.report.text import format_table
    from pipelines.segments import parse_segment, segment_label
    from pipelines.warehouse.migrate import open_warehouse
    from pipelines.warehouse.tables import Tables

    engine = open_warehouse(settings.warehouse, reader=True)
    t = Tables(engine)
    with engine.connect() as conn:
        history = store.transitions(conn, t)
        notices = store.notices(conn, t)
    unsent = [n for n in notices if n.sent_at is None]
    changes = [h for h in history if h["to_status"] in ("firing", "resolved")]
    if not changes:
        print("\nNo alert rule fired.")
        return
    print("\nAlert transitions (alert_history):\n")
    print(
        format_table(
            ["window (UTC)", "rule", "severity", "segment", "to", "summary"],
            [
                [
                    f"{h['window_start']:%H:%M}",
                    h["rule"],
                    h["severity"],
                    segment_label(parse_segment(h["segment"])),
                    h["to_status"],
                    h["summary"],
                ]
                for h in changes
            ],
        )
    )
    print(f"\n{notices_explained(history, notices)}")
    print(f"Notices waiting in the outbox: {len(unsent)}")
    if "alertmanager" in settings.alerting.channels:
        try:
            active = get_alerts(settings.alerting.alertmanager_url)
        except NotifierError as exc:
            print(f"Alertmanager: {exc}")
            return
        names = ", ".join(sorted(a["labels"]["alertname"] for a in active)) or "none"
        print(f"Active at Alertmanager ({redact_url(settings.alerting.alertmanager_url)}): {names}")


def notices_explained(history: Sequence[Mapping[str, Any]], notices: Sequence[Any]) -> str:
    """How the transitions and notices the job logged add up to the table of alerts: the
    transitions to pending are recorded but never sent; a firing alert is sent again for
    every window it keeps firing, and once when it resolves, on every channel.
    """
    became = Counter(h["to_status"] for h in history)
    shown = became["firing"] + became["resolved"]
    quiet = []
    if became["pending"]:
        quiet.append(
            f"{became['pending']} to pending (a rule true in one window, waiting for the next)"
        )
    if became["inactive"]:
        quiet.append(f"{became['inactive']} from pending back to inactive (not true again)")
    unsent = f", {' and '.join(quiet)}: recorded, never sent" if quiet else ""
    per_channel = Counter(n.channel for n in notices)
    kinds = Counter(n.dedup_key.rpartition("|")[2] for n in notices)
    channels = " and ".join(sorted(per_channel))
    counts = set(per_channel.values())
    if len(counts) == 1:
        each = f"{counts.pop()} per channel to {channels}"
    else:
        each = ", ".join(f"{n} to {c}" for c, n in sorted(per_channel.items()))
    firing = kinds["firing"] // max(1, len(per_channel))
    resolved = kinds["resolved"] // max(1, len(per_channel))
    return (
        f"{len(history)} alert transitions: the {shown} above{unsent}. A firing alert is sent "
        "again for each window it keeps firing, so that Alertmanager keeps it active, and once "
        f"when it resolves: {firing} firing and {resolved} resolved notices, {each}, "
        f"{len(notices)} in all."
    )
