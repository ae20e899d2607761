"""Events into Kafka: `safewatch produce` (synthetic traffic with incidents) and `replay`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs.cli.common import load_settings, log
from pipelines.errors import SafewatchError
from pipelines.synth.scenarios import describe_scenarios


def _parse_start(text: str | None, duration: timedelta) -> datetime:
    if text is None:
        now = datetime.now(UTC).replace(microsecond=0)
        return now - duration
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        msg = f"--start {text!r} needs a time zone, e.g. 2026-11-23T10:00:00Z"
        raise SafewatchError(msg)
    return value.astimezone(UTC)


def cmd_produce(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    duration = timedelta(minutes=args.minutes)
    from pipelines.synth.produce import produce_scenario

    produce_scenario(
        settings,
        scenarios=args.scenario,
        minutes=args.minutes,
        rate=args.rate,
        seed=args.seed,
        start=_parse_start(args.start, duration),
        topic=args.topic or settings.kafka.topic_interactions,
        log=log,
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pipelines.kafka.producer import iter_jsonl_lines, produce_raw
    from pipelines.synth.produce import progress_logger

    settings = load_settings(args)
    path = Path(args.file)
    if not path.is_file():
        msg = f"no such file: {path}"
        raise SafewatchError(msg)
    topic = args.topic or settings.kafka.topic_interactions
    log(f"replaying {path} to {topic} (each line as recorded; bad lines are the job's to reject)")
    sent = produce_raw(
        settings.kafka, topic, iter_jsonl_lines(path), progress=progress_logger(None, log)
    )
    log(f"replayed {sent} records to {topic}")
    return 0


def add_produce(sub: Any) -> None:
    p = sub.add_parser(
        "produce",
        help="produce synthetic interaction events with scenarios",
        description="Produce realistic synthetic interaction events (deterministic for a "
        "seed) to Kafka, optionally with incidents injected into one segment.",
        epilog=describe_scenarios(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="incident to inject (repeatable): violation-spike, injection-campaign, "
        "refusal-jump, pii-leak",
    )
    p.add_argument("--minutes", type=float, default=60.0, help="event-time span (default 60)")
    p.add_argument("--rate", type=float, default=10.0, help="events per second of event time")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument(
        "--start", help="first event time, ISO 8601 with zone (default: now minus --minutes)"
    )
    p.add_argument("--topic", help="topic (default: kafka.topic_interactions)")
    p.set_defaults(func=cmd_produce)


def add_replay(sub: Any) -> None:
    p = sub.add_parser("replay", help="produce recorded events from a JSONL file, line by line")
    p.add_argument("file", help="a .jsonl or .jsonl.gz file, one event per line")
    p.add_argument("--topic", help="topic (default: kafka.topic_interactions)")
    p.set_defaults(func=cmd_replay)
