"""The `safewatch` command: one entry point, a subcommand per task, `--help` on each."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.errors import SafewatchError
from pipelines.redact import redact_text
from pipelines.settings import Settings, settings_reference, settings_shown
from pipelines.synth.scenarios import SCENARIOS, describe_scenarios


def _log(message: str) -> None:
    print(f"[safewatch {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(args.config)


# ---------------------------------------------------------------- infra
def cmd_infra(args: argparse.Namespace) -> int:
    from pipelines.errors import InfraError
    from pipelines.infra.alertmanager import LocalAlertmanager
    from pipelines.infra.kafka_broker import LocalKafkaBroker
    from pipelines.kafka.admin import ensure_topics

    settings = _settings(args)
    if args.cluster and args.action != "status":
        return infra_cluster(settings, args.action)
    broker = LocalKafkaBroker(settings.broker, log=_log)
    alertmanager = LocalAlertmanager(settings.alerting, log=_log)
    if args.action == "up":
        broker.start()
        created = ensure_topics(settings.kafka, log=_log)
        _log(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
        _log(f"Kafka is up at {broker.bootstrap_servers}")
        try:
            alertmanager.start()
            _log(f"Alertmanager is up at {alertmanager.url}")
        except InfraError as exc:
            _log(f"Alertmanager not started: {exc}")
        _log("stop them with: safewatch infra down")
    elif args.action == "down":
        broker.stop()
        alertmanager.stop()
    else:
        print(broker.status().describe())
        print(alertmanager.status().describe())
        infra_cluster(settings, "status")
    return 0


def infra_cluster(settings: Settings, action: str) -> int:
    """up, down or status of the loopback cluster: Kafka brokers, Spark master and workers."""
    from pipelines.infra.kafka_cluster import LocalKafkaCluster
    from pipelines.infra.spark_cluster import LocalSparkCluster
    from pipelines.kafka.admin import ensure_topics

    kafka_cluster = LocalKafkaCluster(settings.cluster, jars_dir=settings.broker.jars_dir, log=_log)
    spark_cluster = LocalSparkCluster(settings.cluster, log=_log)
    if action == "status":
        for node in kafka_cluster.status():
            print(node.describe())
        print(spark_cluster.status().describe())
    elif action == "down":
        spark_cluster.stop()
        kafka_cluster.stop()
    else:
        kafka_was_up = all(node.running for node in kafka_cluster.status())
        kafka_cluster.start()
        try:
            kafka = kafka_cluster.kafka_settings(settings.kafka)
            created = ensure_topics(kafka, log=_log)
            _log(f"topics created: {', '.join(created) if created else 'none (all exist)'}")
            spark_cluster.start()
        except SafewatchError:
            if not kafka_was_up:
                kafka_cluster.stop()
            raise
        c = settings.cluster
        _log("the cluster is up; point the job at it with:")
        print(f"  export SAFEWATCH_SPARK__MASTER={spark_cluster.master_url}")
        print(f"  export SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS={kafka_cluster.bootstrap_servers}")
        print(f"  export SAFEWATCH_KAFKA__REPLICATION_FACTOR={c.kafka_replication_factor}")
        _log(
            f"then e.g. `safewatch produce` and `safewatch run --until-caught-up`; Spark's UI: "
            f"{spark_cluster.webui_url}; stop it all with: safewatch infra down --cluster"
        )
    return 0


# ---------------------------------------------------------------- produce / replay
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
    settings = _settings(args)
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
        log=_log,
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pipelines.kafka.producer import iter_jsonl_lines, produce_raw
    from pipelines.synth.produce import progress_logger

    settings = _settings(args)
    path = Path(args.file)
    if not path.is_file():
        msg = f"no such file: {path}"
        raise SafewatchError(msg)
    topic = args.topic or settings.kafka.topic_interactions
    _log(f"replaying {path} to {topic} (each line as recorded; bad lines are the job's to reject)")
    sent = produce_raw(
        settings.kafka, topic, iter_jsonl_lines(path), progress=progress_logger(None, _log)
    )
    _log(f"replayed {sent} records to {topic}")
    return 0


# ---------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    from jobs.streaming_aggregator import run
    from pipelines.kafka.admin import topic_exists
    from pipelines.stream.session import build_session

    settings = _settings(args)
    if not topic_exists(settings.kafka, settings.kafka.topic_interactions):
        msg = (
            f"topic {settings.kafka.topic_interactions} does not exist on "
            f"{settings.kafka.bootstrap_servers}: run `safewatch infra up` (local broker) or "
            "create it, or set kafka.topic_interactions"
        )
        raise SafewatchError(msg)
    mode = "until caught up" if args.until_caught_up else "continuously (Ctrl-C to stop)"
    _log(
        f"starting the streaming job {mode}: {settings.kafka.topic_interactions} -> warehouse, "
        f"window {settings.stream.window}, dimensions {','.join(settings.stream.dimensions)}, "
        f"checkpoint {settings.stream.checkpoint_dir}"
    )
    t0 = time.monotonic()
    spark = build_session(settings.spark)
    _log(f"Spark {spark.version} session ready ({redact_text(settings.spark.master)})")
    port = None if args.no_metrics else (args.metrics_port or settings.alerting.metrics_port)
    summary = run(
        spark, settings, until_caught_up=args.until_caught_up, log=_log, metrics_port=port
    )
    committed = [b for b in summary.batches if not b.skipped]
    what = (
        f"{len(committed)} batches committed ({summary.input_rows:,} records read, "
        f"{summary.aggregated_rows:,} aggregated)"
    )
    if committed:
        what += f", the last batch {committed[-1].batch_id}"
    if summary.interrupted:
        _log(
            f"stopped: {what} in {time.monotonic() - t0:.0f} s; the next run continues "
            f"after them (checkpoint {settings.stream.checkpoint_dir})"
        )
        return 130
    _log(f"done: {what} in {time.monotonic() - t0:.0f} s")
    return 0


# ---------------------------------------------------------------- show
def cmd_show(args: argparse.Namespace) -> int:
    from pipelines.report.terminal import print_segments

    print_segments(
        _settings(args),
        top=args.top,
        min_events=args.min_events,
        timeline=not args.no_timeline,
        rate_id=args.rate,
    )
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from pipelines.metrics.catalog import QUANTILES, RATES
    from pipelines.metrics.reference import metrics_reference
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
    from pipelines.drift.compute import Baseline, BaselineCache, compute_drift
    from pipelines.report.terminal import print_changes
    from pipelines.warehouse.migrate import open_warehouse
    from pipelines.warehouse.queries import drift_windows
    from pipelines.warehouse.sink import WarehouseSink

    settings = _settings(args)
    dims = settings.stream.dimensions
    engine = open_warehouse(settings.warehouse, reader=True)
    sink = WarehouseSink(engine)
    windows = drift_windows(engine, dimension_set=",".join(dims))
    since = _parse_time(args.since, "--from") if args.since else None
    until = _parse_time(args.until, "--to") if args.until else None
    windows = [w for w in windows if (since is None or w >= since) and (until is None or w < until)]
    if not windows:
        print("No windows with aggregates in that period for dimensions " + ",".join(dims) + ".")
        return 0
    baseline = Baseline.from_settings(settings.drift).describe()
    _log(f"computing drift for {len(windows)} windows against the {baseline} baseline")
    segments = 0
    seconds = 0.0
    cache = BaselineCache()
    for i, w in enumerate(windows, 1):
        with engine.begin() as conn:
            run = compute_drift(
                conn, sink.tables, [w], dimensions=dims, settings=settings.drift,
                now=datetime.now(UTC), cache=cache,
            )  # fmt: skip
        segments += run.segments
        seconds += run.seconds
        if i % 20 == 0 or i == len(windows):
            _log(f"{i}/{len(windows)} windows done")
    per = 1000 * seconds / segments if segments else 0.0
    _log(f"drift stored for {segments} window x segments in {seconds:.1f} s ({per:.1f} ms each)")
    print_changes(engine, dims, limit=args.top)
    return 0


def _rate_id(text: str) -> str:
    """`text` if it is a rate of the metric catalog; else an argparse error with the closest."""
    from pipelines.metrics.catalog import RATES

    ids = [r.id for r in RATES]
    if text in ids:
        return text
    close = difflib.get_close_matches(text, ids, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    msg = f"no rate {text!r}: {hint}rates: {', '.join(ids)}"
    raise argparse.ArgumentTypeError(msg)


def _parse_time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        msg = f"{option} {text!r} is not an ISO 8601 time, e.g. 2026-11-23T10:00:00Z"
        raise SafewatchError(msg) from exc
    if value.tzinfo is None:
        msg = f"{option} {text!r} needs a time zone, e.g. 2026-11-23T10:00:00Z"
        raise SafewatchError(msg)
    return value.astimezone(UTC)


def cmd_backfill(args: argparse.Namespace) -> int:
    from jobs.backfill import run_backfill
    from pipelines.stream.session import build_session

    settings = _settings(args)
    since = _parse_time(args.since, "--from")
    until = _parse_time(args.until, "--to")
    spark = build_session(settings.spark)
    _log(f"Spark {spark.version} session ready ({redact_text(settings.spark.master)})")
    try:
        report = run_backfill(
            spark,
            settings,
            since=since,
            until=until,
            archives=[Path(p) for p in args.archive or []],
            force=args.force,
            log=_log,
        )
    finally:
        spark.stop()
    _log(report.describe())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report.model import IsoWeek
    from pipelines.report.weekly import collect_weekly, latest_week, write_report
    from pipelines.warehouse.engine import describe
    from pipelines.warehouse.migrate import open_warehouse

    settings = _settings(args)
    if args.pdf or args.screenshot:
        from pipelines.report.browser import find_chromium

        find_chromium()  # before the warehouse is read: a missing browser is said at once
    engine = open_warehouse(settings.warehouse, reader=True, log=_log)
    found = latest_week(engine)
    if found is None:
        _log(
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
        _log(
            f"no --week given: reporting {week}, the "
            + ("week of the newest window in the warehouse" if found else "current week")
        )
    _log(
        f"collecting {week} ({week.start:%Y-%m-%d} .. {week.end:%Y-%m-%d}) from the "
        f"warehouse {describe(engine)}"
    )
    report = collect_weekly(engine, settings, week)
    out_dir = Path(args.out or settings.report.out_dir)
    html_path, md_path = write_report(report, out_dir)
    _log(f"wrote {html_path} and {md_path}")
    if args.pdf:
        from pipelines.report.browser import print_pdf

        pdf = print_pdf(html_path, html_path.with_suffix(".pdf"))
        _log(f"wrote {pdf} (headless Chromium, A4)")
    if args.screenshot:
        from pipelines.report.browser import screenshot

        shot = screenshot(html_path, Path(args.screenshot))
        _log(f"wrote {shot} (headless Chromium)")
    return 0


# ---------------------------------------------------------------- alerts
def _rules(settings: Settings, paths: Sequence[str] | None) -> list[Any]:
    from pipelines.alerting.loader import load_rules

    chosen = [Path(p) for p in (paths or settings.alerting.rules)]
    missing = [str(p) for p in chosen if not p.exists()]
    if missing:
        msg = f"no such rule file or directory: {', '.join(missing)}"
        raise SafewatchError(msg)
    return load_rules(chosen)


def cmd_alerts(args: argparse.Namespace) -> int:
    settings = _settings(args)
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
    engine = open_warehouse(settings.warehouse)
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
    from pipelines.alerting.evaluate import segment_label
    from pipelines.durations import parse_duration
    from pipelines.report.text import format_table
    from pipelines.warehouse.migrate import open_warehouse

    rules = _rules(settings, args.rules)
    engine = open_warehouse(settings.warehouse, reader=True)
    dims = settings.stream.dimensions
    since = _parse_time(args.since, "--from") if args.since else None
    until = _parse_time(args.until, "--to") if args.until else None
    windows = stored_windows(engine, ",".join(dims), since, until)
    if not windows:
        print(
            "No closed windows in that period for dimensions " + ",".join(dims) + " (a "
            "window is evaluated once the job's watermark has passed its end)."
        )
        return 0
    window = parse_duration(settings.stream.window)
    _log(
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
    from sqlalchemy import select

    from pipelines.alerting.engine import parse_segment
    from pipelines.alerting.evaluate import segment_label
    from pipelines.report.text import format_table
    from pipelines.warehouse.migrate import open_warehouse
    from pipelines.warehouse.tables import Tables

    engine = open_warehouse(settings.warehouse, reader=True)
    t = Tables(engine)
    with engine.connect() as conn:
        states = (
            conn.execute(select(t.alert_state).where(t.alert_state.c.status != "inactive"))
            .mappings()
            .all()
        )
        pending = conn.execute(
            select(t.outbox.c.channel, t.outbox.c.attempts, t.outbox.c.last_error).where(
                t.outbox.c.sent_at.is_(None)
            )
        ).all()
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
    engine = open_warehouse(settings.warehouse)
    report = deliver(
        engine,
        build_notifiers(settings),
        now=datetime.now(UTC) + timedelta(seconds=a.retry_max_s),  # due now, whatever the wait
        log=_log,
    )
    _log(f"{report.sent} notice(s) delivered, {report.pending} still pending")
    return 0 if report.pending == 0 else 1


# ---------------------------------------------------------------- warehouse / config
def cmd_warehouse(args: argparse.Namespace) -> int:
    import os

    from pipelines.warehouse.engine import describe, make_engine
    from pipelines.warehouse.migrate import migrate

    settings = _settings(args)
    engine = make_engine(settings.warehouse.url.get_secret_value())
    if args.action == "roles":
        from pipelines.infra.postgres import RolePlan, create_roles

        plan = RolePlan(
            writer=args.writer,
            analyst=args.analyst,
            writer_password=os.environ.get("SAFEWATCH_WRITER_PASSWORD"),
            analyst_password=os.environ.get("SAFEWATCH_ANALYST_PASSWORD"),
        )
        create_roles(engine, plan, log=_log)
        return 0
    applied = migrate(engine, log=_log)
    _log(f"warehouse {describe(engine)} is at the latest schema ({len(applied)} applied now)")
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
    settings = _settings(args)
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


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "docs":
        print(settings_reference())
        return 0
    settings = _settings(args)
    print(settings_shown(settings))
    return 0


# ---------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    return run_demo(args, log=_log)


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

    p = sub.add_parser(
        "infra",
        help="start, stop or inspect the local Kafka broker and Alertmanager, or the loopback "
        "cluster",
        description="Local infrastructure. Without --cluster: one Kafka broker and "
        "Alertmanager (settings [broker], [alerting]). With --cluster: a Kafka cluster of "
        "three KRaft brokers and a Spark standalone master with two workers, all on loopback "
        "(settings [cluster]; docs/cluster.md).",
    )
    p.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="up: start the broker (KRaft, single node), create the topics, start Alertmanager; "
        "down: stop them; status: are they running, where (the cluster's processes too)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="up: start the Kafka cluster, create the topics replicated on every broker, start "
        "the Spark master and workers, and print the settings that point the job at them; "
        "down: stop them",
    )
    p.set_defaults(func=cmd_infra)

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

    p = sub.add_parser("replay", help="produce recorded events from a JSONL file, line by line")
    p.add_argument("file", help="a .jsonl or .jsonl.gz file, one event per line")
    p.add_argument("--topic", help="topic (default: kafka.topic_interactions)")
    p.set_defaults(func=cmd_replay)

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

    p = sub.add_parser("show", help="print the per-segment table from the warehouse")
    p.add_argument("--top", type=int, default=12, help="segments to list (default 12)")
    p.add_argument(
        "--min-events", type=int, default=30, help="least events for a window to count as peak"
    )
    p.add_argument(
        "--rate", type=_rate_id, default="violation_rate",
        help="rate to rank segments by (`safewatch metrics` lists them; default violation_rate)",
    )  # fmt: skip
    p.add_argument("--no-timeline", action="store_true", help="skip the worst segment's timeline")
    p.set_defaults(func=cmd_show)

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

    p = sub.add_parser(
        "warehouse",
        help="manage the warehouse schema and its PostgreSQL roles",
        description="migrate: apply pending migrations. roles (PostgreSQL, run with an admin "
        "login in SAFEWATCH_WAREHOUSE__URL): create or update the writer role (owns the "
        "tables; the job connects with it) and the analyst role (reads the v_* views only), "
        "then migrate. Passwords come from $SAFEWATCH_WRITER_PASSWORD and "
        "$SAFEWATCH_ANALYST_PASSWORD when set. See docs/warehouse.md#roles.",
    )
    p.add_argument("action", choices=["migrate", "roles"])
    p.add_argument("--writer", default="safewatch_writer", help="writer role name")
    p.add_argument("--analyst", default="safewatch_analyst", help="analyst role name")
    p.set_defaults(func=cmd_warehouse)

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

    p = sub.add_parser("config", help="show the effective settings or their reference")
    p.add_argument(
        "action", choices=["show", "docs"], help="show: effective values; docs: Markdown reference"
    )
    p.set_defaults(func=cmd_config)

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


if __name__ == "__main__":
    sys.exit(main())
