"""`safewatch alerts`: check, backtest, status, acknowledge, deliver the outbox."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs.cli.common import load_settings, log, parse_time
from pipelines.errors import SafewatchError
from pipelines.redact import redact_text
from pipelines.settings import Settings


def _rules(settings: Settings, paths: Sequence[str] | None) -> list[Any]:
    from pipelines.alerting.loader import load_rules

    chosen = [Path(p) for p in (paths or settings.alerting.rules)]
    missing = [str(p) for p in chosen if not p.exists()]
    if missing:
        msg = f"no such rule file or directory: {', '.join(missing)}"
        raise SafewatchError(msg)
    return load_rules(chosen)


def cmd_alerts(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.action == "check":
        from pipelines.alerting.engine import bind_rules

        rules = bind_rules(_rules(settings, args.rules), settings.stream.dimensions)
        problems = [
            f"{r.path}:{r.line}: rule {r.name}: runbook {r.runbook} does not exist"
            for r in rules
            if not Path(r.runbook).is_file()
        ]
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{len(rules)} rule(s) valid" + (f", {len(problems)} problem(s)" if problems else ""))
        return 1 if problems else 0
    if args.action == "backtest":
        return alerts_backtest(settings, args)
    if args.action == "status":
        return alerts_status(settings)
    if args.action == "ack":
        return alerts_ack(settings, args)
    return alerts_deliver(settings)


def alerts_ack(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.alerting.ack import acknowledge
    from pipelines.warehouse.migrate import open_warehouse
    from pipelines.warehouse.tables import Tables

    if not args.by:
        msg = "alerts ack needs --by NAME (who takes the alert)"
        raise SafewatchError(msg)
    engine = open_warehouse(settings.warehouse, reader=True)
    with engine.begin() as conn:
        done = acknowledge(
            conn,
            Tables(engine),
            rule=args.rule,
            segment=args.segment,
            by=args.by,
            now=datetime.now(UTC),
            note=args.note or "",
        )
    for a in done:
        print(
            f"acknowledged {a.rule} on {a.segment} (firing since {a.firing_since:%Y-%m-%d %H:%M})"
        )
    if not done:
        print("No unacknowledged firing alert matches (see `safewatch alerts status`).")
        return 1
    return 0


def alerts_backtest(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.alerting.backtest import backtest, stored_windows
    from pipelines.durations import parse_duration
    from pipelines.report.text import format_table
    from pipelines.segments import segment_label
    from pipelines.warehouse.migrate import open_warehouse

    rules = _rules(settings, args.rules)
    engine = open_warehouse(settings.warehouse, reader=True)
    dims = settings.stream.dimensions
    since = parse_time(args.since, "--from") if args.since else None
    until = parse_time(args.until, "--to") if args.until else None
    windows = stored_windows(engine, ",".join(dims), since, until)
    if not windows:
        print(
            "No closed windows in that period for dimensions " + ",".join(dims) + " (a "
            "window is evaluated once the job's watermark has passed its end)."
        )
        return 0
    window = parse_duration(settings.stream.window)
    log(
        f"backtesting {len(rules)} rule(s) over {len(windows)} windows, "
        f"{windows[0]:%Y-%m-%d %H:%M}..{windows[-1]:%Y-%m-%d %H:%M} UTC"
    )
    # ConfigError for a rule the job refuses
    results = backtest(engine, rules, dims, windows, window=window)
    table = []
    for r in results:
        table.append(
            [
                r.rule.name,
                r.rule.severity,
                len(r.episodes),
                r.firing_windows,
                "; ".join(r.segments()) or "-",
            ]
        )
    print(format_table(["rule", "severity", "fired", "firing windows", "segments"], table))
    for r in results:
        for e in r.episodes:
            end = f"{e.resolved_at:%H:%M}" if e.resolved_at else "still firing"
            length = f" ({e.windows * window.total_seconds() / 60:.0f} min)"
            print(
                f"  {r.rule.name}: {segment_label(e.segment)} fired "
                f"{e.fired_at:%Y-%m-%d %H:%M}, resolved {end}{length}"
            )
    return 0


def alerts_status(settings: Settings) -> int:
    from pipelines.alerting import store
    from pipelines.report.text import format_table
    from pipelines.segments import parse_segment, segment_label
    from pipelines.warehouse.migrate import open_warehouse
    from pipelines.warehouse.tables import Tables

    engine = open_warehouse(settings.warehouse, reader=True)
    t = Tables(engine)
    with engine.connect() as conn:
        states = store.active_states(conn, t)
        pending = store.unsent_notices(conn, t)
    if not states:
        print("No alert is firing or pending.")
    else:
        print(
            format_table(
                ["rule", "segment", "status", "since", "last window"],
                [
                    [
                        s["rule"],
                        segment_label(parse_segment(s["segment"])),
                        s["status"],
                        f"{s['firing_since'] or s['started_at']:%Y-%m-%d %H:%M}",
                        f"{s['last_window']:%Y-%m-%d %H:%M}",
                    ]
                    for s in states
                ],
            )  # fmt: skip
        )
    if pending:
        last = redact_text(pending[-1].last_error or "not tried yet")
        print(f"\n{len(pending)} notice(s) waiting in the outbox; last error: {last}")
    return 0


def alerts_deliver(settings: Settings) -> int:
    from jobs.streaming_aggregator import build_notifiers
    from pipelines.alerting.outbox import deliver
    from pipelines.warehouse.migrate import open_warehouse

    a = settings.alerting
    engine = open_warehouse(settings.warehouse, reader=True)
    report = deliver(
        engine,
        build_notifiers(settings),
        now=datetime.now(UTC) + timedelta(seconds=a.retry_max_s),  # due now, whatever the wait
        log=log,
    )
    log(f"{report.sent} notice(s) delivered, {report.pending} still pending")
    return 0 if report.pending == 0 else 1


def add_alerts(sub: Any) -> None:
    p = sub.add_parser(
        "alerts",
        help="check, backtest and inspect alert rules; deliver waiting notices",
        description="check: validate the rule files and that each runbook exists; backtest: "
        "replay the rules over the stored windows of a period and print how often each would "
        "have fired, how long, on which segments (writes nothing, notifies nobody); status: "
        "firing and pending alerts and the outbox; deliver: send the notices waiting in the "
        "outbox now; ack: acknowledge firing alerts (--by NAME), which the weekly report's "
        "time to acknowledge is measured from.",
    )
    p.add_argument("action", choices=["check", "backtest", "status", "deliver", "ack"])
    p.add_argument(
        "--rules",
        action="append",
        metavar="PATH",
        help="rule file or directory (repeatable; default: setting alerting.rules)",
    )
    p.add_argument("--from", dest="since", help="backtest: first window, ISO 8601 with zone")
    p.add_argument("--to", dest="until", help="backtest: windows starting before this time")
    p.add_argument("--rule", help="ack: only this rule (default: every firing rule)")
    p.add_argument(
        "--segment", help="ack: only this segment, e.g. 'chat / atlas-l-2026.10.2 / de-DE'"
    )
    p.add_argument("--by", help="ack: who acknowledges (recorded for time-to-acknowledge)")
    p.add_argument("--note", help="ack: a note kept with the acknowledgement")
    p.set_defaults(func=cmd_alerts)
