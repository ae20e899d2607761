"""The `safewatch` command: one entry point, a subcommand per task, `--help` on each.

Each command group is a module of this package (infra, events, run, read, alerts, admin):
its `cmd_*` functions and the `add_*` function that declares each command's arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.cli import admin, alerts, events, infra, read, run
from pipelines.errors import SafewatchError
from pipelines.redact import redact_text

# The commands in the order `safewatch --help` lists them.
COMMANDS = (
    infra.add_infra,
    events.add_produce,
    events.add_replay,
    run.add_run,
    read.add_show,
    read.add_metrics,
    read.add_drift,
    read.add_report,
    run.add_backfill,
    alerts.add_alerts,
    admin.add_warehouse,
    read.add_query,
    admin.add_config,
    run.add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safewatch",
        description="Safety monitoring for LLM products: Kafka events -> Spark -> warehouse.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file (default: $SAFEWATCH_CONFIG, else ./safewatch.toml if present)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SafewatchError as exc:
        print(f"safewatch: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("safewatch: interrupted", file=sys.stderr)
        return 130
