"""The jobs: `safewatch run` (the streaming aggregator), `backfill`, and `demo` end to end."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from jobs.cli.common import load_settings, log, parse_time
from pipelines.errors import SafewatchError
from pipelines.redact import redact_text
from pipelines.synth.scenarios import SCENARIOS, describe_scenarios


def cmd_run(args: argparse.Namespace) -> int:
    from jobs.streaming_aggregator import run
    from pipelines.kafka.admin import topic_exists
    from pipelines.stream.session import build_session

    settings = load_settings(args)
    if not topic_exists(settings.kafka, settings.kafka.topic_interactions):
        msg = (
            f"topic {settings.kafka.topic_interactions} does not exist on "
            f"{settings.kafka.bootstrap_servers}: run `safewatch infra up` (local broker) or "
            "create it, or set kafka.topic_interactions"
        )
        raise SafewatchError(msg)
    mode = "until caught up" if args.until_caught_up else "continuously (Ctrl-C to stop)"
    log(
        f"starting the streaming job {mode}: {settings.kafka.topic_interactions} -> warehouse, "
        f"window {settings.stream.window}, dimensions {','.join(settings.stream.dimensions)}, "
        f"checkpoint {settings.stream.checkpoint_dir}"
    )
    t0 = time.monotonic()
    spark = build_session(settings.spark)
    log(f"Spark {spark.version} session ready ({redact_text(settings.spark.master)})")
    port = None if args.no_metrics else (args.metrics_port or settings.alerting.metrics_port)
    summary = run(spark, settings, until_caught_up=args.until_caught_up, log=log, metrics_port=port)
    committed = [b for b in summary.batches if not b.skipped]
    what = (
        f"{len(committed)} batches committed ({summary.input_rows:,} records read, "
        f"{summary.aggregated_rows:,} aggregated)"
    )
    if committed:
        what += f", the last batch {committed[-1].batch_id}"
    if summary.interrupted:
        log(
            f"stopped: {what} in {time.monotonic() - t0:.0f} s; the next run continues "
            f"after them (checkpoint {settings.stream.checkpoint_dir})"
        )
        return 130
    log(f"done: {what} in {time.monotonic() - t0:.0f} s")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from jobs.backfill import run_backfill
    from pipelines.stream.session import build_session

    settings = load_settings(args)
    since = parse_time(args.since, "--from")
    until = parse_time(args.until, "--to")
    spark = build_session(settings.spark)
    log(f"Spark {spark.version} session ready ({redact_text(settings.spark.master)})")
    try:
        report = run_backfill(
            spark,
            settings,
            since=since,
            until=until,
            archives=[Path(p) for p in args.archive or []],
            force=args.force,
            log=log,
        )
    finally:
        spark.stop()
    log(report.describe())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    return run_demo(args, log=log)


def add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run the streaming aggregation job")
    p.add_argument(
        "--until-caught-up",
        action="store_true",
        help="process everything available now, then exit (default: run continuously)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (default: setting alerting.metrics_port)",
    )
    p.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    p.set_defaults(func=cmd_run)


def add_backfill(sub: Any) -> None:
    p = sub.add_parser(
        "backfill",
        help="recompute a period's aggregates from retained Kafka data or a JSONL archive",
        description="Reads the interactions topic (records produced from --from minus "
        "contract.max_future to the end of the topic) or the --archive files (one event per "
        "line), classifies them with the same contract, privacy and metric definitions as the "
        "streaming job, and replaces the period's windows (widened to whole windows) in "
        "segment_window_agg, segment_window_hist, segment_window_drift and "
        "segment_window_rate_tests in one transaction, then recomputes their drift. Every "
        "valid event of the period counts once, including events the stream rejected as late. "
        "Running the same backfill again changes nothing. Alerts are not re-evaluated and "
        "nothing is sent to the DLQ. Each run is logged in backfill_runs.",
    )
    p.add_argument("--from", dest="since", required=True, help="period start, ISO 8601 with zone")
    p.add_argument("--to", dest="until", required=True, help="period end (exclusive)")
    p.add_argument(
        "--archive",
        action="append",
        metavar="FILE",
        help="JSONL archive of events to read instead of Kafka (repeatable)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="allow windows the streaming job's watermark has not closed yet (only when that "
        "job is stopped for good: it would add to the replaced windows)",
    )
    p.set_defaults(func=cmd_backfill)


def add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="end to end: start Kafka and Alertmanager, produce an incident, run the job, "
        "show the segments and the alerts, write the weekly report",
        description="Everything end to end on this machine, in about two minutes: start a "
        "local Kafka broker and Alertmanager (unless running), produce an hour of synthetic "
        "traffic with one incident injected, run the streaming job until caught up into "
        "var/demo/warehouse.db, then print the segments, the alerts and where the weekly "
        "report was written. Deterministic for a seed. The incidents --scenario can inject:",
        epilog=describe_scenarios(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario", default="violation-spike", choices=sorted(SCENARIOS), metavar="NAME",
        help="incident to inject, one of those below (default violation-spike)",
    )  # fmt: skip
    p.add_argument("--minutes", type=float, default=60.0, help="event-time span (default 60)")
    p.add_argument("--rate", type=float, default=12.0, help="events per second (default 12)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the Kafka broker and Alertmanager running afterwards (stop them with "
        "`safewatch infra down`)",
    )
    p.set_defaults(func=cmd_demo)
