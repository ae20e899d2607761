"""Reading what the job stored: `show`, `metrics`, `drift`, `report`, `query`."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.cli.common import load_settings, log, parse_time, rate_id
from pipelines.errors import SafewatchError


def cmd_show(args: argparse.Namespace) -> int:
    from pipelines.report.terminal import print_segments

    print_segments(
        load_settings(args),
        top=args.top,
        min_events=args.min_events,
        timeline=not args.no_timeline,
        rate_id=args.rate,
    )
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from pipelines.metrics.catalog import QUANTILES, RATES
    from pipelines.metrics.docs import metrics_reference
    from pipelines.report.text import format_table

    if args.action == "docs":
        print(metrics_reference())
        return 0
    print(
        format_table(
            ["metric", "definition", "description"],
            [[r.id, f"{r.numerator} / {r.denominator}", r.description] for r in RATES]
            + [[q.id, f"q{q.q:g} of {q.distribution}", q.description] for q in QUANTILES],
        )
    )
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from pipelines.drift.compute import Baseline
    from pipelines.drift.step import recompute_drift
    from pipelines.report.terminal import print_changes
    from pipelines.warehouse.migrate import open_warehouse
    from pipelines.warehouse.queries import drift_windows
    from pipelines.warehouse.tables import Tables

    settings = load_settings(args)
    dims = settings.stream.dimensions
    engine = open_warehouse(settings.warehouse, reader=True)
    windows = drift_windows(engine, dimension_set=",".join(dims))
    since = parse_time(args.since, "--from") if args.since else None
    until = parse_time(args.until, "--to") if args.until else None
    windows = [w for w in windows if (since is None or w >= since) and (until is None or w < until)]
    if not windows:
        print("No windows with aggregates in that period for dimensions " + ",".join(dims) + ".")
        return 0
    baseline = Baseline.from_settings(settings.drift).describe()
    log(f"computing drift for {len(windows)} windows against the {baseline} baseline")

    def progress(done: int, total: int) -> None:
        if done % 20 == 0 or done == total:
            log(f"{done}/{total} windows done")

    segments, seconds = recompute_drift(
        engine, Tables(engine), windows, settings=settings.drift, dimensions=dims,
        now=lambda: datetime.now(UTC), progress=progress,
    )  # fmt: skip
    per = 1000 * seconds / segments if segments else 0.0
    log(f"drift stored for {segments} window x segments in {seconds:.1f} s ({per:.1f} ms each)")
    print_changes(engine, dims, limit=args.top)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report.model import IsoWeek
    from pipelines.report.weekly import collect_weekly, latest_week, write_report
    from pipelines.warehouse.engine import describe
    from pipelines.warehouse.migrate import open_warehouse

    settings = load_settings(args)
    if args.pdf or args.screenshot:
        from pipelines.report.browser import find_chromium

        find_chromium()  # before the warehouse is read: a missing browser is said at once
    engine = open_warehouse(settings.warehouse, reader=True, log=log)
    found = latest_week(engine)
    if found is None:
        log(
            f"the warehouse {describe(engine)} has no aggregates yet (the job writes them: "
            "`safewatch run`): the report will be empty"
        )
    if args.week:
        try:
            week = IsoWeek.parse(args.week)
        except ValueError as exc:
            raise SafewatchError(str(exc)) from exc
    else:
        week = found or IsoWeek.containing(datetime.now(UTC))
        log(
            f"no --week given: reporting {week}, the "
            + ("week of the newest window in the warehouse" if found else "current week")
        )
    log(
        f"collecting {week} ({week.start:%Y-%m-%d} .. {week.end:%Y-%m-%d}) from the "
        f"warehouse {describe(engine)}"
    )
    report = collect_weekly(engine, settings, week)
    out_dir = Path(args.out or settings.report.out_dir)
    html_path, md_path = write_report(report, out_dir)
    log(f"wrote {html_path} and {md_path}")
    if args.pdf:
        from pipelines.report.browser import print_pdf

        pdf = print_pdf(html_path, html_path.with_suffix(".pdf"))
        log(f"wrote {pdf} (headless Chromium, A4)")
    if args.screenshot:
        from pipelines.report.browser import screenshot

        shot = screenshot(html_path, Path(args.screenshot))
        log(f"wrote {shot} (headless Chromium)")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from pipelines.report.text import format_result
    from pipelines.warehouse.query import query_engine, run_query

    if (args.sql is None) == (args.file is None):
        msg = "give the SQL as an argument or with --file, not both"
        raise SafewatchError(msg)
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            msg = f"no such SQL file: {path}"
            raise SafewatchError(msg)
        sql = path.read_text(encoding="utf-8")
    else:
        sql = args.sql
    settings = load_settings(args)
    warehouse = settings.warehouse
    engine = query_engine(warehouse.url.get_secret_value())
    result = run_query(
        engine,
        sql,
        max_rows=args.max_rows or None,
        timeout_s=warehouse.query_timeout_s,
        allow_writer_login=warehouse.query_allow_writer_login,
        warn=lambda message: print(f"safewatch: {message}", file=sys.stderr),
    )
    if result.columns:
        print(format_result(result, args.format))
    if args.format == "table":
        more = f" (first {len(result.rows)}; --max-rows 0 for all)" if result.truncated else ""
        print(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''}{more})")
    elif result.truncated:
        print(f"safewatch: output cut at {len(result.rows)} rows (--max-rows)", file=sys.stderr)
    return 0


def add_show(sub: Any) -> None:
    p = sub.add_parser("show", help="print the per-segment table from the warehouse")
    p.add_argument("--top", type=int, default=12, help="segments to list (default 12)")
    p.add_argument(
        "--min-events", type=int, default=30, help="least events for a window to count as peak"
    )
    p.add_argument(
        "--rate", type=rate_id, default="violation_rate",
        help="rate to rank segments by (`safewatch metrics` lists them; default violation_rate)",
    )  # fmt: skip
    p.add_argument("--no-timeline", action="store_true", help="skip the worst segment's timeline")
    p.set_defaults(func=cmd_show)


def add_metrics(sub: Any) -> None:
    p = sub.add_parser(
        "metrics",
        help="list the metric catalog or print its Markdown reference",
        description="The metric catalog: every rate (numerator / denominator counters) and "
        "quantile Safewatch computes per window x segment.",
    )
    p.add_argument(
        "action", choices=["list", "docs"], help="list: a table; docs: Markdown (docs/metrics.md)"
    )
    p.set_defaults(func=cmd_metrics)


def add_drift(sub: Any) -> None:
    p = sub.add_parser(
        "drift",
        help="(re)compute drift statistics and rate tests for stored windows",
        description="Compare every segment of each stored window with its baseline (settings "
        "[drift]) and replace that window's rows in segment_window_drift and "
        "segment_window_rate_tests. The streaming job does this for every window its "
        "watermark closes; run this after changing the baseline, or for still-open windows.",
    )
    p.add_argument("--from", dest="since", help="first window start, ISO 8601 with zone")
    p.add_argument("--to", dest="until", help="windows starting before this time")
    p.add_argument("--top", type=int, default=10, help="significant changes to list (default 10)")
    p.set_defaults(func=cmd_drift)


def add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write the weekly safety-posture report (HTML and Markdown)",
        description="Collects one ISO week from the warehouse: KPIs against their targets "
        "(settings [report.targets]), week-over-week change with significance, trend charts "
        "with confidence bands, top risk segments, alerts with time to acknowledge and "
        "resolve, changes after new versions, data quality. Writes "
        "safety-posture-<week>.html (self-contained) and .md to --out, and with --pdf "
        "safety-posture-<week>.pdf.",
    )
    p.add_argument("kind", choices=["weekly"], help="the report to write")
    p.add_argument("--week", help="ISO week, e.g. 2026-W47 (default: the week of the newest data)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: setting report.out_dir)")
    p.add_argument(
        "--pdf",
        action="store_true",
        help="also print the report to safety-posture-<week>.pdf (A4) with headless Chromium "
        "(needs chromium)",
    )
    p.add_argument(
        "--screenshot",
        metavar="PNG",
        help="also render the page with headless Chromium to this PNG (needs chromium)",
    )
    p.set_defaults(func=cmd_report)


def add_query(sub: Any) -> None:
    p = sub.add_parser(
        "query",
        help="run read-only SQL against the warehouse; print a table, CSV or JSON",
        description="Runs one SELECT statement in a read-only transaction against the "
        "configured warehouse (SAFEWATCH_WAREHOUSE__URL; the analyst login for PostgreSQL), "
        "cancelled after warehouse.query_timeout_s. The tables and views are documented in "
        "docs/warehouse.md.",
        epilog='example: safewatch query "SELECT day, locale, events, violation_rate FROM '
        'v_segment_daily ORDER BY violation_rate DESC LIMIT 5"',
    )
    p.add_argument("sql", nargs="?", help="the SQL statement")
    p.add_argument("-f", "--file", help="read the SQL from this file instead")
    p.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="default table"
    )
    p.add_argument(
        "--max-rows", type=int, default=1000, help="print at most this many rows (0: all)"
    )
    p.set_defaults(func=cmd_query)
