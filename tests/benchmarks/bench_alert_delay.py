"""Benchmark: how long an incident takes to reach a real Alertmanager, per trigger interval.

For each scenario and trigger interval, in its own Spark driver (a child process, fresh JVM)
with a fresh checkpoint, warehouse and topic, the streaming job runs with its default
settings (5-minute windows, 10-minute watermark, the repository's alert rules in
alerts/rules, notices to Alertmanager) except for the trigger interval:

1. history: one hour of past traffic (event times in the last hour) is produced, so that the
   job has closed windows, rate tests and a baseline per segment when the incident starts;
2. live traffic then runs in real time (event_time = now): ~10 events/s in the incident
   segment (chat / <model version of the run> / de-DE) and 1 event/s in each of three other
   segments, 1 % of the events flagged (harassment) everywhere;
3. once the job has consumed the history, derived two live batches and stored a rate test
   (with a baseline) for the window before the first open one, the incident starts at T0,
   the wall clock just before the producer sends its first incident events:
     sev1  one event whose response excerpt still holds an e-mail address (a redaction
           failure: counted with the text dropped, rule RedactionFailures, sev1);
     rate  the incident segment's violation rate goes from its 1 % baseline to 5 %
           (5 x, above the 2 % limit of HarmfulOutputRateHigh, sev2; the rule's early
           reference is max(2 %, baseline) = 2 %);
4. Alertmanager's /api/v2/alerts is polled every 0.5 s for the rule's alertname on the
   incident segment; the delay is from T0 to the first answer that lists it. The page's
   row in the warehouse's alert_history says whether it was early (an open window) or a
   closed window's.

Targets: a sev1 event pages within 2 trigger intervals + 10 s; a 5x rate incident in a
segment of ~10 events/s within 2 minutes. One Kafka broker and one Alertmanager (free
loopback ports) serve every combination; each combination has its own topic and model
version, so no alert of one is mistaken for another's. A benchmark, not a test: it prints
figures; the job's log of each combination is kept in the log directory it names.

    .venv/bin/python tests/benchmarks/bench_alert_delay.py                 # both, both
    .venv/bin/python tests/benchmarks/bench_alert_delay.py --scenarios sev1 --triggers 5
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SCENARIOS = ("sev1", "rate")
RULE = {"sev1": "RedactionFailures", "rate": "HarmfulOutputRateHigh"}
DESCRIPTIONS = {
    "sev1": "one event with a redaction failure (an e-mail address in its response excerpt)",
    "rate": "violation rate of the segment 1 % -> 5 % (5x its baseline)",
}
WINDOW = timedelta(minutes=5)  # the job's default stream.window
DIMENSION_SET = "product_surface,model_version,locale"  # the job's default stream.dimensions
SURFACE = "chat"
INCIDENT_LOCALE = "de-DE"
# Events per second of each segment (same product surface and model version).
SEGMENTS = {INCIDENT_LOCALE: 10.0, "en-US": 1.0, "fr-FR": 1.0, "ja-JP": 1.0}
BASELINE_RATE = 0.01  # share of flagged outputs, every segment, history and live
INCIDENT_RATE = 0.05  # the incident segment's share during the rate incident
HISTORY = timedelta(hours=1)
RATE_TARGET_S = 120.0
POLL_S = 0.5
TICK_S = 0.5  # the live producer sends what is due every TICK_S
LEAK = "Done: the account now lists maria.keller84@gmail.com as its contact address."
EXAMPLE = json.loads((REPO / "schemas" / "examples" / "answered_clean.json").read_text())


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _trigger_seconds(trigger: str) -> float:
    if trigger == "default":
        from pipelines.durations import parse_duration
        from pipelines.settings import StreamSettings

        return parse_duration(StreamSettings().trigger_interval).total_seconds()
    return float(trigger)


def _trigger_label(trigger: str) -> str:
    seconds = _trigger_seconds(trigger)
    return f"default ({seconds:g} s)" if trigger == "default" else f"{seconds:g} s"


def _target_s(scenario: str, trigger: str) -> float:
    if scenario == "sev1":
        return 2 * _trigger_seconds(trigger) + 10
    return RATE_TARGET_S


def _target_label(scenario: str, trigger: str) -> str:
    if scenario == "sev1":
        return f"<= {_target_s(scenario, trigger):g} s (2 triggers + 10 s)"
    return f"<= {RATE_TARGET_S:g} s"


def _window_start(t: datetime) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((t - epoch) // WINDOW) * WINDOW


def _phase(epoch_s: float) -> str:
    """Seconds of `epoch_s` into its 5-minute window, as m:ss."""
    into = int(epoch_s % WINDOW.total_seconds())
    return f"{into // 60}:{into % 60:02d}"


# -- events ---------------------------------------------------------------------------------


def _iso(t: datetime) -> str:
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


def _event(
    rng: random.Random,
    when: datetime,
    model_version: str,
    locale: str,
    *,
    violation: bool = False,
    leak: bool = False,
) -> dict[str, Any]:
    """The example event of the contract, in one segment, one user and session of its own."""
    e = copy.deepcopy(EXAMPLE)
    e["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    e["event_time"] = _iso(when)
    e["user_id"] = f"{rng.getrandbits(256):064x}"
    e["session_id"] = f"{rng.getrandbits(256):064x}"
    e["segment"]["product_surface"] = SURFACE
    e["segment"]["model_version"] = model_version
    e["segment"]["locale"] = locale
    if violation:
        e["moderation"]["scores"]["harassment"] = 0.91
        e["moderation"]["flagged_categories"] = ["harassment"]
        e["moderation"]["action"] = "block"
        e["request"]["outcome"] = "blocked"
    if leak:
        # Upstream redaction missed an e-mail address: the job's PII screen reads the excerpts.
        e["excerpts"] = {"prompt": "Please change the contact of my account.", "response": LEAK}
    return e


def _history(rng: random.Random, model_version: str, end: datetime) -> list[dict[str, Any]]:
    """HISTORY of traffic before `end`, every segment a Poisson process, in event-time order
    (so that no batch of the backlog moves the watermark past another segment's events).
    """
    span = HISTORY.total_seconds()
    arrivals: list[tuple[float, str, bool]] = []
    for locale, per_s in SEGMENTS.items():
        t = rng.expovariate(per_s)
        while t < span:
            arrivals.append((t, locale, rng.random() < BASELINE_RATE))
            t += rng.expovariate(per_s)
    arrivals.sort()
    start = end - HISTORY
    return [
        _event(rng, start + timedelta(seconds=t), model_version, locale, violation=v)
        for t, locale, v in arrivals
    ]


class LiveTraffic(threading.Thread):
    """Real-time events (event_time = now) into every segment, sent every TICK_S; `begin`
    starts the incident, and `t0` is the wall clock just before its first events were sent.
    """

    def __init__(self, kafka: Any, topic: str, model_version: str, seed: int) -> None:
        super().__init__(name="live-traffic", daemon=True)
        self.kafka, self.topic, self.model_version = kafka, topic, model_version
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.scenario: str | None = None
        self.t0: float | None = None
        self.sent = 0
        self.error: BaseException | None = None

    def begin(self, scenario: str) -> None:
        self.scenario = scenario

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = None
        try:
            producer = KafkaProducer(**self.kafka.python_client_options(), acks="all", linger_ms=5)
            due = dict.fromkeys(SEGMENTS, 0.0)
            last = time.time()
            while not self.halt.is_set():
                now = time.time()
                when = datetime.fromtimestamp(now, UTC)
                scenario = self.scenario
                starting = scenario is not None and self.t0 is None
                events = []
                for locale, per_s in SEGMENTS.items():
                    due[locale] += per_s * (now - last)
                    n, due[locale] = int(due[locale]), due[locale] - int(due[locale])
                    rate = BASELINE_RATE
                    if scenario == "rate" and locale == INCIDENT_LOCALE:
                        rate = INCIDENT_RATE
                    events += [
                        _event(self.rng, when, self.model_version, locale,
                               violation=self.rng.random() < rate)
                        for _ in range(n)
                    ]  # fmt: skip
                if starting and scenario == "sev1":
                    events.append(
                        _event(self.rng, when, self.model_version, INCIDENT_LOCALE, leak=True)
                    )
                last = now
                if starting:
                    self.t0 = time.time()
                for e in events:
                    producer.send(
                        self.topic,
                        key=e["session_id"].encode(),
                        value=json.dumps(e, separators=(",", ":")).encode(),
                    )
                producer.flush()
                self.sent += len(events)
                self.halt.wait(max(0.0, TICK_S - (time.time() - now)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            if producer is not None:
                with suppress(Exception):
                    producer.close(timeout=10)


# -- one combination (runs in a child process) ----------------------------------------------


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

    trigger = {} if args.trigger == "default" else {"trigger_interval": f"{args.trigger} seconds"}
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=args.bootstrap, topic_interactions=args.topic,
                            topic_dlq=args.topic + ".dlq", topic_alerts=args.topic + ".alerts"),
        spark=SparkSettings(jars_dir=REPO / "var" / "jars" / "spark"),
        stream=StreamSettings(checkpoint_dir=str(tmp / "checkpoint"), **trigger),
        contract=ContractSettings(dedup_state_dir=str(tmp / "dedup")),
        warehouse=WarehouseSettings(url=SecretStr(f"sqlite:///{tmp}/warehouse.db")),
        alerting=AlertingSettings(rules=(str(REPO / "alerts" / "rules"),),
                                  channels=("alertmanager",), alertmanager_url=args.alertmanager),
    )  # fmt: skip


class Recorder:
    """The job's log lines, batch reports and derivations, with the wall clock of each."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, Any]] = []
        self.derived: list[tuple[float, Any]] = []
        self.lines: list[tuple[float, str]] = []
        self.t0: float | None = None

    def log(self, message: str) -> None:
        now = time.time()
        self.lines.append((now, message))
        clock = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S.%f")[:-3]
        since = f" T0{now - self.t0:+.1f}s" if self.t0 is not None else ""
        print(f"JOB {clock}{since} {message}", flush=True)

    def batch(self, report: Any) -> None:
        self.batches.append((time.time(), report))

    def derive(self, done: Any) -> None:
        self.derived.append((time.time(), done))


def _segment_of(key: str) -> dict[str, str]:
    return {d: v for d, v in json.loads(key)}


def _rows(engine: Any, table: Any) -> list[dict[str, Any]]:
    from sqlalchemy import select

    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def _baseline(engine: Any, tables: Any, model_version: str, watermark: datetime) -> Any:
    """The incident segment's violation_rate test of the window before the first open one
    (what an early evaluation takes its baseline from), or None.
    """
    from pipelines.warehouse.tables import as_utc

    previous = _window_start(watermark) - WINDOW
    for r in _rows(engine, tables.rate_tests):
        if (
            r["rate_id"] == "violation_rate"
            and r["dimension_set"] == DIMENSION_SET
            and r["model_version"] == model_version
            and r["locale"] == INCIDENT_LOCALE
            and as_utc(r["window_start"]) == previous
            and r["baseline_denominator"]
        ):
            return r
    return None


def _wait_ready(
    args: argparse.Namespace, job: Any, live: LiveTraffic, rec: Recorder, history: int, engine: Any
) -> dict[str, Any]:
    """Wait until the job consumed the history, derived two live batches and stored the
    incident segment's rate test for the window before the first open one.
    """
    from pipelines.warehouse.tables import Tables

    started = time.time()
    deadline = started + args.catchup_timeout
    caught: int | None = None
    tables = None
    baseline_since: float | None = None
    while True:
        _check_alive(job, live)
        consumed = 0
        for _t, report in list(rec.batches):
            consumed += report.input_rows
            if caught is None and consumed >= history:
                caught = report.batch_id
                _say(f"history consumed by batch {caught} after {time.time() - started:.0f} s")
        derived = [d for _t, d in list(rec.derived) if caught is not None and d.batch_id > caught]
        if len(derived) >= 2 and derived[-1].watermark is not None:
            baseline_since = baseline_since or time.time()
            tables = tables or Tables(engine)
            test = _baseline(engine, tables, args.model_version, derived[-1].watermark)
            if test is not None:
                rate = test["baseline_numerator"] / test["baseline_denominator"]
                _say(f"job ready after {time.time() - started:.0f} s: watermark "
                     f"{derived[-1].watermark:%H:%M:%S}, baseline of {INCIDENT_LOCALE} "
                     f"{rate:.2%} ({test['baseline_numerator']}/{test['baseline_denominator']})"
                     )  # fmt: skip
                return {"catchup_s": time.time() - started, "baseline": rate}
            if time.time() - baseline_since > WINDOW.total_seconds() + 60:
                _say("WARNING: no rate test with a baseline for the window before the first "
                     "open one; starting the incident anyway")  # fmt: skip
                return {"catchup_s": time.time() - started, "baseline": None}
        if time.time() > deadline:
            msg = f"the job did not catch up within {args.catchup_timeout:.0f} s"
            raise RuntimeError(msg)
        time.sleep(1.0)


def _check_alive(job: Any, live: LiveTraffic) -> None:
    if live.error is not None:
        msg = f"the live producer failed: {live.error!r}"
        raise RuntimeError(msg)
    if not job.query.isActive:
        msg = f"the streaming query stopped: {job.query.exception()}"
        raise RuntimeError(msg)


def _poll(args: argparse.Namespace, job: Any, live: LiveTraffic, t0: float) -> Any:
    """(wall clock, alert) of the first answer of Alertmanager that lists the alert, or None."""
    from pipelines.alerting.alertmanager_client import NotifierError, get_alerts

    filters = {
        "alertname": RULE[args.scenario],
        "model_version": args.model_version,
        "locale": INCIDENT_LOCALE,
    }
    deadline = t0 + args.timeout
    next_poll = time.time()
    while time.time() < deadline:
        _check_alive(job, live)
        try:
            alerts = get_alerts(args.alertmanager, filters=filters, timeout=5)
        except NotifierError as exc:
            _say(f"Alertmanager did not answer: {exc}")
            alerts = []
        if alerts:
            return time.time(), alerts[0]
        next_poll += POLL_S
        time.sleep(max(0.0, next_poll - time.time()))
    return None


def _history_rows(engine: Any, model_version: str, t0: float) -> list[dict[str, Any]]:
    from pipelines.warehouse.tables import Tables, as_utc

    rows = []
    for r in _rows(engine, Tables(engine).alert_history):
        segment = _segment_of(r["segment"])
        if segment.get("model_version") != model_version:
            continue
        recorded = as_utc(r["recorded_at"])
        rows.append(
            {
                "rule": r["rule"],
                "locale": segment.get("locale"),
                "window_start": str(as_utc(r["window_start"])),
                "transition": f"{r['from_status']} -> {r['to_status']}",
                "to_status": r["to_status"],
                "early": bool(r["early"]),
                "evidence": r["evidence"],
                "numerator": r["numerator"],
                "denominator": r["denominator"],
                "baseline_rate": r["baseline_rate"],
                "batch_id": r["batch_id"],
                "recorded_after_t0": recorded.timestamp() - t0 if recorded else None,
            }
        )
    return rows


def _diagnose(
    args: argparse.Namespace, engine: Any, rec: Recorder, rows: list[dict[str, Any]], t0: float
) -> None:
    """What the job did with the incident, when it did not page in time."""
    from pipelines.alerting.early import early_evidence, early_reference
    from pipelines.alerting.evaluate import OpenWindow
    from pipelines.alerting.loader import load_rules
    from pipelines.metrics.catalog import rate
    from pipelines.segments import segment_key
    from pipelines.warehouse.tables import Tables, as_utc

    rule_name = RULE[args.scenario]
    _say(f"{rule_name} not paged: job log from T0 (last 25 lines):")
    for t, line in [x for x in rec.lines if x[0] >= t0][-25:]:
        _say(f"  T0{t - t0:+7.1f}s  {line}")
    _say(f"alert_history rows of model version {args.model_version}: {len(rows)}")
    for r in rows:
        _say(f"  {r}")
    tables = Tables(engine)
    segment = (
        ("product_surface", SURFACE),
        ("model_version", args.model_version),
        ("locale", INCIDENT_LOCALE),
    )
    for r in _rows(engine, tables.alert_state):
        if r["rule"] == rule_name and r["segment"] == segment_key(segment):
            _say(f"alert_state: {r['status']}, true_windows {r['true_windows']}, last_window "
                 f"{r['last_window']}, firing_since {r['firing_since']}")  # fmt: skip
    (rule,) = [r for r in load_rules([REPO / "alerts" / "rules"]) if r.name == rule_name]
    r_ = rate(rule.metric)
    watermark = next((d.watermark for _t, d in reversed(rec.derived) if d.watermark), None)
    test = _baseline(engine, tables, args.model_version, watermark) if watermark else None
    baseline = test["baseline_numerator"] / test["baseline_denominator"] if test else None
    _say(f"latest derived watermark {watermark}; baseline {baseline}; early reference "
         f"{early_reference(rule, baseline)}")  # fmt: skip
    since = _window_start(datetime.fromtimestamp(t0, UTC)) - WINDOW
    previous = {}
    for r in sorted(_rows(engine, tables.agg), key=lambda r: r["window_start"]):
        if (r["dimension_set"], r["model_version"], r["locale"]) != (
            DIMENSION_SET, args.model_version, INCIDENT_LOCALE,
        ):  # fmt: skip
            continue
        start = as_utc(r["window_start"])
        num, den = int(r[r_.numerator]), int(r[r_.denominator])
        if start is not None and start >= since:
            window = OpenWindow(segment, num, den, baseline_rate=baseline,
                                typical_denominator=previous.get("den"))  # fmt: skip
            _say(f"window {start:%H:%M}: {r_.numerator} {num} of {r_.denominator} {den}; "
                 f"early evidence now: {early_evidence(rule, window)}")  # fmt: skip
        previous = {"den": den}


def child(args: argparse.Namespace) -> None:
    """Run one (scenario, trigger) combination and print its figures as one JSON line."""
    from jobs.streaming_aggregator import start_query
    from pipelines.kafka.admin import ensure_topics
    from pipelines.kafka.producer import produce_events
    from pipelines.stream.session import build_session
    from pipelines.warehouse.engine import make_engine

    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix=f"bench-alert-{args.scenario}-") as tmp_name:
        tmp = Path(tmp_name)
        settings = _settings(args, tmp)
        rng = random.Random(args.seed)
        spark = job = live = None
        try:
            t = time.time()
            spark = build_session(settings.spark)
            _say(f"Spark session up in {time.time() - t:.0f} s")
            ensure_topics(
                settings.kafka, [args.topic, settings.kafka.topic_dlq], log=lambda _m: None
            )
            t = time.time()
            events = _history(rng, args.model_version, datetime.now(UTC))
            history = produce_events(settings.kafka, args.topic, events)
            del events
            _say(f"produced {history:,} events of the last hour in {time.time() - t:.0f} s")
            live = LiveTraffic(settings.kafka, args.topic, args.model_version, rng.getrandbits(64))
            live.start()
            rec = Recorder()
            job = start_query(
                spark, settings, until_caught_up=False, log=rec.log,
                on_batch=rec.batch, on_derived=rec.derive,
            )  # fmt: skip
            engine = make_engine(settings.warehouse.url.get_secret_value())
            ready = _wait_ready(args, job, live, rec, history, engine)
            if args.phase is not None:
                wait = (args.phase - time.time()) % WINDOW.total_seconds()
                _say(f"waiting {wait:.0f} s for {args.phase:.0f} s into a window")
                time.sleep(wait)
            live.begin(args.scenario)
            while live.t0 is None:
                _check_alive(job, live)
                time.sleep(0.01)
            t0 = rec.t0 = live.t0
            clock = datetime.fromtimestamp(t0, UTC).strftime("%H:%M:%S.%f")[:-3]
            _say(f"T0 {clock} UTC ({_phase(t0)} into its window): {DESCRIPTIONS[args.scenario]}")
            seen = _poll(args, job, live, t0)
            rows = _history_rows(engine, args.model_version, t0)
            result = _result(args, rec, rows, seen, t0, ready)
            if seen is None:
                _diagnose(args, engine, rec, rows, t0)
            engine.dispose()
        finally:
            if live is not None:
                live.stop()
            if job is not None:
                with suppress(Exception):
                    job.stop()
            if spark is not None:
                with suppress(Exception):
                    spark.stop()
    print("RESULT " + json.dumps(result), flush=True)


def _result(
    args: argparse.Namespace,
    rec: Recorder,
    rows: list[dict[str, Any]],
    seen: Any,
    t0: float,
    ready: dict[str, Any],
) -> dict[str, Any]:
    rule = RULE[args.scenario]
    page = next(
        (r for r in rows
         if r["rule"] == rule and r["locale"] == INCIDENT_LOCALE and r["to_status"] == "firing"),
        None,
    )  # fmt: skip
    others = [
        f"{r['rule']}/{r['locale']}" for r in rows if r["to_status"] == "firing" and r is not page
    ]
    until = seen[0] if seen else time.time()
    after = [(t, b) for t, b in rec.batches if t0 <= t <= until and not b.skipped]
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "trigger": args.trigger,
        "t0": datetime.fromtimestamp(t0, UTC).isoformat(),
        "phase": _phase(t0),
        "delay_s": seen[0] - t0 if seen else None,
        "annotated_early": seen[1]["annotations"].get("early") == "true" if seen else None,
        "page": page,
        "other_pages": others,
        "batches_after_t0": len(after),
        "batch_seconds": [round(b.seconds, 1) for _t, b in after],
        "live_events": sum(b.input_rows for _t, b in after),
        **ready,
    }
    if page is not None:
        fired = [t - t0 for t, b in rec.batches if b.batch_id == page["batch_id"]]
        done = [t - t0 for t, d in rec.derived if d.batch_id == page["batch_id"]]
        result["page_batch_reported_s"] = fired[0] if fired else None
        result["page_batch_derived_s"] = done[0] if done else None
    return result


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


# -- the parent: broker, Alertmanager, the children, the table ------------------------------


@contextmanager
def _services(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """A Kafka broker and an Alertmanager on free loopback ports (or the ones given)."""
    from pipelines.infra.alertmanager import LocalAlertmanager
    from pipelines.infra.kafka_broker import LocalKafkaBroker
    from pipelines.settings import AlertingSettings, BrokerSettings
    from tests.integration.conftest import _free_ports

    port, controller, am_port = _free_ports(3)
    with tempfile.TemporaryDirectory(prefix="bench-alert-services-") as data:
        broker = alertmanager = None
        try:
            bootstrap = args.bootstrap
            if not bootstrap:
                broker = LocalKafkaBroker(
                    BrokerSettings(port=port, controller_port=controller,
                                   data_dir=Path(data) / "kafka",
                                   jars_dir=REPO / "var" / "jars" / "kafka", start_timeout_s=120),
                    log=_say,
                )  # fmt: skip
                broker.start()
                bootstrap = broker.bootstrap_servers
            url = args.alertmanager
            if not url:
                url = f"http://127.0.0.1:{am_port}"
                alertmanager = LocalAlertmanager(
                    AlertingSettings(alertmanager_url=url, alertmanager_port=am_port),
                    Path(data) / "alerting", log=_say,
                )  # fmt: skip
                alertmanager.start()
                _say(f"Alertmanager at {url}")
            yield bootstrap, url
        finally:
            if alertmanager is not None:
                alertmanager.stop()
            if broker is not None:
                broker.stop()


def _run_child(
    args: argparse.Namespace, scenario: str, trigger: str, index: int, log_dir: Path
) -> dict[str, Any]:
    tag = f"{scenario}-{'default' if trigger == 'default' else trigger + 's'}"
    model_version = f"bench-{args.run}-{tag}"
    cmd = [
        sys.executable, __file__, "--child", "--scenario", scenario, "--trigger", trigger,
        "--bootstrap", args.bootstrap, "--alertmanager", args.alertmanager,
        "--topic", f"bench.alert-delay.{args.run}.{tag}", "--model-version", model_version,
        "--seed", str(args.seed * 100 + index), "--timeout", str(args.timeout),
        "--catchup-timeout", str(args.catchup_timeout),
        *(["--phase", str(args.phase)] if args.phase is not None else []),
    ]  # fmt: skip
    log_file = log_dir / f"{tag}.log"
    _say(f"{scenario} / trigger {_trigger_label(trigger)}: {DESCRIPTIONS[scenario]} "
         f"(model version {model_version}; log {log_file})")  # fmt: skip
    result: dict[str, Any] | None = None
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            start_new_session=True,  # Ctrl-C reaches this process only; it stops the child
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.startswith("[bench]"):
                    print(f"[bench]   {line[len('[bench] ') :]}", end="", flush=True)
                elif line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT ") :])
            proc.wait()
        finally:
            _stop_child(proc, log)
    if result is None:
        tail = "\n".join(log_file.read_text().splitlines()[-30:])
        msg = f"{tag} failed (exit {proc.returncode}); end of {log_file}:\n{tail}"
        raise SystemExit(msg)
    return result


def _stop_child(proc: subprocess.Popen[str], log: Any) -> None:
    """Stop the child (SIGTERM: it stops its query, producer and Spark), then whatever is left
    of its process group (its Spark JVM and Python workers) after a grace period.
    """
    if proc.poll() is None:
        _say(f"stopping child {proc.pid} …")
        # Keep reading its output, so that it never blocks on a full pipe while it stops.
        drain = threading.Thread(target=lambda: log.writelines(proc.stdout or ()), daemon=True)
        drain.start()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for _ in range(20):
            if not _group_alive(proc.pid):
                return
            time.sleep(0.5)
        _signal_group(proc.pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _table(results: list[dict[str, Any]], timeout: float) -> None:
    header = (f"{'scenario':<8} {'trigger':<16} {'T0 in window':>12} {'delay to AM':>24} "
              f"{'page':<13} {'recorded':>9} {'target':<30} met?")  # fmt: skip
    print()
    print(header)
    for r in results:
        page = r["page"]
        if r["delay_s"] is None:
            delay = f"not paged within {timeout:g} s"
        else:
            delay = f"{r['delay_s']:.1f} s"
        kind = "-" if page is None else ("early" if page["early"] else "closed window")
        recorded = "-" if page is None else f"{page['recorded_after_t0']:.1f} s"
        target = _target_s(r["scenario"], r["trigger"])
        met = r["delay_s"] is not None and r["delay_s"] <= target
        print(f"{r['scenario']:<8} {_trigger_label(r['trigger']):<16} {r['phase']:>12} "
              f"{delay:>24} {kind:<13} {recorded:>9} "
              f"{_target_label(r['scenario'], r['trigger']):<30} {'yes' if met else 'NO'}"
              )  # fmt: skip
    print("(delay to AM: from T0, the wall clock before the first incident event was sent, to "
          f"the first poll of /api/v2/alerts (every {POLL_S:g} s) that lists the alert; "
          "recorded: to its alert_history row; page: that row's `early`)")  # fmt: skip
    print()
    for r in results:
        page = r["page"]
        baseline = "none" if r["baseline"] is None else f"{r['baseline']:.2%}"
        line = (f"{r['scenario']} / {_trigger_label(r['trigger'])}: job ready "
                f"{r['catchup_s']:.0f} s after its start (baseline of {INCIDENT_LOCALE} "
                f"{baseline}); {r['batches_after_t0']} batch(es) from T0 to the page, "
                f"{r['live_events']} records, seconds {r['batch_seconds']}")  # fmt: skip
        if page is not None:
            evidence = "inf" if page["evidence"] is None else f"{page['evidence']:.3g}"
            line += (f"; page by batch {page['batch_id']} (reported T0+"
                     f"{_s(r.get('page_batch_reported_s'))}, derived T0+"
                     f"{_s(r.get('page_batch_derived_s'))}) on window "
                     f"{page['window_start'][11:16]}, {page['numerator']}/{page['denominator']}"
                     f", evidence {evidence if page['early'] else '-'}")  # fmt: skip
        if r["other_pages"]:
            line += f"; other pages: {', '.join(r['other_pages'])}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Delay from an incident to its page at a real Alertmanager (prints figures)."
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--triggers", nargs="+", default=["default", "5"],
        help="trigger intervals: 'default' (the job's) or seconds (default: default 5)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument(
        "--timeout", type=float, default=360.0,
        help="seconds after T0 to wait for the page (360)",
    )  # fmt: skip
    parser.add_argument(
        "--phase", type=float,
        help="start the incident this many seconds into a 5-minute window (default: as soon "
        "as the job is ready)",
    )  # fmt: skip
    parser.add_argument(
        "--catchup-timeout", type=float, default=900.0,
        help="seconds the job may take to consume the history (900)",
    )  # fmt: skip
    parser.add_argument("--bootstrap", help="use this Kafka broker instead of starting one")
    parser.add_argument("--alertmanager", help="use this Alertmanager (URL) instead of one")
    parser.add_argument("--log-dir", type=Path, help="where the job logs go (a new temp dir)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--trigger", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--model-version", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    for trigger in args.triggers:
        if trigger != "default" and not _positive(trigger):
            parser.error(f"--triggers: {trigger!r} is neither 'default' nor a number of seconds")
    if args.phase is not None and not 0 <= args.phase < WINDOW.total_seconds():
        parser.error("--phase must be within a window: 0 to 300 seconds")
    args.run = uuid.uuid4().hex[:6]
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-alert-delay-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    print(f"[bench] {os.uname().nodename}: {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}; scenarios {', '.join(args.scenarios)}; triggers "
          f"{', '.join(_trigger_label(t) for t in args.triggers)}; run {args.run}")  # fmt: skip
    _say(f"traffic: {', '.join(f'{k} {v:g}/s' for k, v in SEGMENTS.items())} "
         f"({SURFACE}, one model version per combination), {BASELINE_RATE:.0%} flagged; "
         f"history {HISTORY.total_seconds() / 3600:g} h")  # fmt: skip
    results = []
    try:
        with _services(args) as (bootstrap, url):
            args.bootstrap, args.alertmanager = bootstrap, url
            index = 0
            for scenario in args.scenarios:
                for trigger in args.triggers:
                    result = _run_child(args, scenario, trigger, index, log_dir)
                    index += 1
                    results.append(result)
                    delay = result["delay_s"]
                    _say(f"{scenario} / {_trigger_label(trigger)}: "
                         + (f"paged after {delay:.1f} s" if delay is not None
                            else f"not paged within {args.timeout:g} s"))  # fmt: skip
    except KeyboardInterrupt:
        _say("interrupted: services stopped")
        if not results:
            raise SystemExit(130) from None
    _table(results, args.timeout)
    print(f"\ntotal run time {time.monotonic() - started:.0f} s; job logs in {log_dir}")


def _s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s"


def _positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
