"""The alert engine on a real SQLite warehouse: transitions, history, outbox, replay, delivery."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from scipy.stats import binomtest
from sqlalchemy import select, text

from pipelines.alerting.alertmanager_client import NotifierError
from pipelines.alerting.engine import AlertEngine
from pipelines.alerting.loader import parse_rules
from pipelines.alerting.outbox import DeliveryLoop, WebhookNotifier, backoff, deliver
from pipelines.errors import ConfigError
from pipelines.metrics.catalog import counter_ids
from pipelines.segments import SEGMENT_DIMENSIONS, parse_segment
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
DIMS = ("product_surface", "locale")
# (window index, locale) -> (events, violations): de-DE spikes in windows 2 and 3.
DATA = {
    **{(w, "en-US"): (400, 1) for w in range(6)},
    **{(w, "de-DE"): (200, 0) for w in range(6)},
    (2, "de-DE"): (200, 30),
    (3, "de-DE"): (180, 25),
    (1, "fr-FR"): (8, 4),  # a high rate on a handful of events: below min_events
}
RULES = """
rules:
  - name: HarmfulOutputSpike
    metric: violation_rate
    by: [locale]
    condition:
      threshold: {above: 0.05}
    min_events: 50
    severity: sev2
    owner: trust-safety
    runbook: runbooks/HarmfulOutputSpike.md
    summary: "Harmful output {value:.1%} in {segment}"
    description: "{numerator} of {denominator} events, 95% CI {lower:.1%}-{upper:.1%}"
    labels: {team: safety}
"""


@pytest.fixture
def warehouse(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    migrate(engine)
    sink = WarehouseSink(engine)
    sink.set_min_distinct_users(1)
    for w in range(6):
        start = T0 + w * WINDOW
        aggs = []
        for (wi, locale), (events, violations) in DATA.items():
            if wi != w:
                continue
            row = {
                "window_start": start,
                "window_end": start + WINDOW,
                "dimension_set": ",".join(DIMS),
                **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
                **dict.fromkeys(counter_ids(), 0),
                "product_surface": "chat",
                "locale": locale,
                "users_sketch": None,
            }
            row.update(events=events, violations=violations, events_seen=events)
            aggs.append(row)
        sink.commit(
            BatchResult(
                query_id="q", batch_id=w, topic="t", started_at=start, input_rows=1,
                late_rows=0, aggregated_rows=1, watermark_before=None, watermark_after=None,
                offsets=[OffsetRange("t", 0, w, w, 1)], aggregates=aggs,
            )
        )  # fmt: skip
    with engine.begin() as conn:  # the sketches are absent here: show every row to analysts
        conn.execute(text("UPDATE segment_window_agg SET distinct_users = 100"))
    return engine, sink


def _engine(sink, channels=("alertmanager", "webhook")):
    return AlertEngine(
        parse_rules(RULES, "safety.yaml"), sink.tables, DIMS, channels=channels, window=WINDOW
    )


def _evaluate(engine, alerts, windows):
    with engine.begin() as conn:
        return alerts.evaluate(conn, windows, now=T0 + timedelta(hours=1))


def _rows(engine, table):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def test_spike_fires_refreshes_and_resolves_and_small_segments_do_not_fire(warehouse):
    engine, sink = warehouse
    alerts = _engine(sink)
    windows = [T0 + w * WINDOW for w in range(6)]
    transitions = []
    for w in windows:  # one window at a time, as the job closes them
        transitions += _evaluate(engine, alerts, [w])

    # Independent expectation: a window fires iff its Wilson lower bound exceeds 5 % with
    # at least 50 events.
    def fires(events, violations):
        low = binomtest(violations, events).proportion_ci(method="wilson").low
        return events >= 50 and low > 0.05

    expected_firing = sorted((w, loc) for (w, loc), (n, k) in DATA.items() if fires(n, k))
    assert expected_firing == [(2, "de-DE"), (3, "de-DE")]
    got = [(t.window_start, dict(t.segment)["locale"], t.to_status) for t in transitions]
    assert got == [(windows[2], "de-DE", "firing"), (windows[4], "de-DE", "resolved")]
    fired = transitions[0]
    assert fired.summary == "Harmful output 15.0% in de-DE"
    assert fired.numerator == 30 and fired.denominator == 200

    history = _rows(engine, sink.tables.alert_history)
    assert [(h["to_status"], parse_segment(h["segment"])) for h in history] == [
        ("firing", (("locale", "de-DE"),)),
        ("resolved", (("locale", "de-DE"),)),
    ]
    outbox = _rows(engine, sink.tables.outbox)
    # firing (window 2), still firing (window 3), resolved (window 4), for each channel.
    assert len(outbox) == 6
    payloads = [json.loads(r["payload"]) for r in outbox if r["channel"] == "alertmanager"]
    assert [p["status"] for p in payloads] == ["firing", "firing", "resolved"]
    first = payloads[0]
    assert first["labels"] == {
        "alertname": "HarmfulOutputSpike",
        "severity": "sev2",
        "owner": "trust-safety",
        "metric": "violation_rate",
        "locale": "de-DE",
        "team": "safety",
    }
    assert first["annotations"]["runbook_url"] == "runbooks/HarmfulOutputSpike.md"
    evaluated = T0 + timedelta(hours=1)  # `now` of the evaluation
    assert datetime.fromisoformat(first["endsAt"]) == evaluated + WINDOW * 3
    assert datetime.fromisoformat(payloads[2]["endsAt"]) == windows[4]  # resolved: in the past
    # The triage query runs on the analyst view and shows the spike.
    with engine.connect() as conn:
        triage = conn.execute(text(first["annotations"]["triage_query"])).all()
    # (violations, events) of de-DE, newest window first.
    assert [(r[1], r[2]) for r in triage] == [
        (0, 200), (0, 200), (25, 180), (30, 200), (0, 200), (0, 200),
    ]  # fmt: skip


def test_replayed_windows_change_nothing_and_notify_nobody_twice(warehouse):
    engine, sink = warehouse
    alerts = _engine(sink)
    windows = [T0 + w * WINDOW for w in range(6)]
    _evaluate(engine, alerts, windows)
    before = (_rows(engine, sink.tables.alert_history), _rows(engine, sink.tables.outbox))
    assert _evaluate(engine, alerts, windows) == []
    assert _evaluate(engine, alerts, windows[2:4]) == []
    assert (_rows(engine, sink.tables.alert_history), _rows(engine, sink.tables.outbox)) == before


def test_all_windows_at_once_equal_window_by_window(warehouse):
    engine, sink = warehouse
    windows = [T0 + w * WINDOW for w in range(6)]
    together = _evaluate(engine, _engine(sink), windows)
    assert [(t.window_start, t.to_status) for t in together] == [
        (windows[2], "firing"),
        (windows[4], "resolved"),
    ]


def test_change_rules_must_group_by_the_stored_dimensions(warehouse):
    _, sink = warehouse
    rules = parse_rules(
        RULES.replace("threshold: {above: 0.05}", "change: {max_q: 0.01}"), "safety.yaml"
    )
    with pytest.raises(ConfigError, match="safety.yaml:3: rule HarmfulOutputSpike"):
        AlertEngine(rules, sink.tables, DIMS, channels=(), window=WINDOW)


class _Capture(BaseHTTPRequestHandler):
    received: list = []
    fail = 0

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Capture.fail:
            _Capture.fail -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Capture.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_outbox_retries_with_backoff_until_the_webhook_takes_the_notices(warehouse):
    engine, sink = warehouse
    alerts = _engine(sink, channels=("webhook",))
    _evaluate(engine, alerts, [T0 + w * WINDOW for w in range(6)])
    server = HTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Capture.received, _Capture.fail = [], 1
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook?token=secret"
        notifiers = {"webhook": WebhookNotifier(url)}
        now = T0 + timedelta(hours=2)
        first = deliver(engine, notifiers, now=now)
        assert (first.sent, first.failed, first.pending) == (0, 3, 3)
        assert "secret" not in first.errors[0]  # the query string (a token) is never shown
        rows = _rows(engine, sink.tables.outbox)
        assert {r["attempts"] for r in rows} == {1}
        assert {r["next_attempt_at"].replace(tzinfo=UTC) for r in rows} == {
            now + timedelta(seconds=5)
        }
        assert deliver(engine, notifiers, now=now + timedelta(seconds=1)).sent == 0  # not due
        later = deliver(engine, notifiers, now=now + timedelta(seconds=6))
        assert (later.sent, later.pending) == (3, 0)
        alerts_sent = _Capture.received[0]["alerts"]
        assert [a["status"] for a in alerts_sent] == ["firing", "firing", "resolved"]
        assert all(a["dedup_key"].startswith("HarmfulOutputSpike|") for a in alerts_sent)
        assert deliver(engine, notifiers, now=now + timedelta(minutes=1)).sent == 0
    finally:
        server.shutdown()


class _Redirecting(BaseHTTPRequestHandler):
    """A webhook moved elsewhere: POST answers 302; the new address takes anything."""

    gets = 0

    def do_POST(self):  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(302)
        self.send_header("Location", "/moved")
        self.end_headers()

    def do_GET(self):  # noqa: N802 - a redirected POST would arrive here, without its body
        _Redirecting.gets += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_redirecting_webhook_keeps_the_notices_pending_and_says_why(warehouse):
    """Following the redirect would turn the POST into a GET whose 200 marks the notices
    sent although no alert arrived anywhere.
    """
    engine, sink = warehouse
    alerts = _engine(sink, channels=("webhook",))
    _evaluate(engine, alerts, [T0 + w * WINDOW for w in range(6)])
    server = HTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Redirecting.gets = 0
    try:
        notifiers = {"webhook": WebhookNotifier(f"http://127.0.0.1:{server.server_port}/hook")}
        report = deliver(engine, notifiers, now=T0 + timedelta(hours=2))
    finally:
        server.shutdown()
    assert (report.sent, report.pending) == (0, 3)
    assert _Redirecting.gets == 0
    assert (
        "answered HTTP 302 (a redirect: set SAFEWATCH_ALERTING__NOTIFY_WEBHOOK_URL"
        in (report.errors[0])
    )
    assert all(r["sent_at"] is None for r in _rows(engine, sink.tables.outbox))


def test_the_delivery_loop_sends_held_notices_when_no_batch_comes(warehouse):
    engine, sink = warehouse
    alerts = _engine(sink, channels=("webhook",))
    _evaluate(engine, alerts, [T0 + w * WINDOW for w in range(6)])  # 3 notices queued
    server = HTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Capture.received, _Capture.fail = [], 2  # the webhook is down for two tries
    notifiers = {"webhook": WebhookNotifier(f"http://127.0.0.1:{server.server_port}/h")}
    delivered: list[str] = []
    reports = []

    def once() -> None:  # what the job's delivery does, on the loop's thread
        reports.append(
            deliver(
                engine, notifiers, now=datetime.now(UTC), log=delivered.append,
                retry_initial=timedelta(milliseconds=20), retry_max=timedelta(milliseconds=40),
            )
        )  # fmt: skip

    loop = DeliveryLoop(once, 0.05).start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (reports and reports[-1].pending == 0):
            time.sleep(0.05)
    finally:
        loop.stop()
        server.shutdown()
    assert reports[-1].pending == 0, reports[-1]
    # Two failed tries, then each notice delivered exactly once.
    assert len([line for line in delivered if "delivery failed" in line]) == 2
    keys = [a["dedup_key"] for body in _Capture.received for a in body["alerts"]]
    outbox = _rows(engine, sink.tables.outbox)
    assert sorted(keys) == sorted(r["dedup_key"] for r in outbox) and len(keys) == 3
    assert all(r["sent_at"] is not None and r["attempts"] == 3 for r in outbox)
    # While they waited, the oldest was known; once all were sent, none is.
    assert reports[0].oldest_pending_at == min(r["created_at"] for r in outbox).replace(tzinfo=UTC)
    assert reports[-1].oldest_pending_at is None


def test_backoff_doubles_to_the_maximum_however_many_attempts():
    second, five_min = timedelta(seconds=1), timedelta(minutes=5)
    waits = [backoff(5 * second, five_min, n) for n in range(8)]
    assert waits == [5 * second * 2**n for n in range(6)] + [five_min, five_min]
    # A channel down for days: thousands of attempts, still the maximum (2 ** 47 seconds
    # does not fit in a timedelta).
    assert backoff(5 * second, five_min, 10_000) == five_min
    assert backoff(five_min, second, 3) == second  # an initial wait above the maximum
    with pytest.raises(ValueError, match="negative"):
        backoff(second, five_min, -1)


def test_a_channel_down_for_days_keeps_its_notices_and_the_maximum_wait(warehouse):
    engine, sink = warehouse
    alerts = _engine(sink, channels=("webhook",))
    _evaluate(engine, alerts, [T0 + w * WINDOW for w in range(6)])
    with engine.begin() as conn:  # as after days of failed attempts every five minutes
        conn.execute(sink.tables.outbox.update().values(attempts=5000))
    notifiers = {"webhook": WebhookNotifier("http://127.0.0.1:9/h", timeout=1)}
    now = T0 + timedelta(days=3)
    report = deliver(engine, notifiers, now=now, retry_max=timedelta(minutes=5))
    assert (report.sent, report.failed, report.pending) == (0, 3, 3)
    rows = _rows(engine, sink.tables.outbox)
    assert {r["attempts"] for r in rows} == {5001}
    assert {r["next_attempt_at"].replace(tzinfo=UTC) for r in rows} == {now + timedelta(minutes=5)}


def test_the_delivery_loop_outlives_an_error_and_says_when_it_recovers():
    lines: list[str] = []
    outcomes = [RuntimeError("warehouse down\nsecond line"), RuntimeError("still down"), None]

    def once() -> None:
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is not None:
            raise outcome

    loop = DeliveryLoop(once, 60, log=lines.append)  # ticked by hand, not started
    for _ in range(4):
        loop.tick()
    assert lines == [
        "alerts: outbox delivery failed, trying again every 60 s: warehouse down",
        "alerts: outbox delivery works again",
    ]
    with pytest.raises(ValueError, match="positive"):
        DeliveryLoop(once, 0)


def test_unreachable_webhook_is_a_notifier_error_naming_the_setting():
    with pytest.raises(NotifierError, match="NOTIFY_WEBHOOK_URL"):
        WebhookNotifier("http://127.0.0.1:9/x", timeout=1).send([{"a": 1}])


def test_backtest_refuses_the_rules_the_job_refuses_and_replays_only_closed_windows(warehouse):
    from pipelines.alerting.backtest import backtest, stored_windows

    engine, _ = warehouse
    rules = parse_rules(
        RULES.replace("threshold: {above: 0.05}", "change: {max_q: 0.01}"), "safety.yaml"
    )
    with pytest.raises(ConfigError, match="change, drift and rise conditions"):
        backtest(engine, rules, DIMS, [T0], window=WINDOW)
    # The fixture's ledger has no watermark: no window is closed, none is replayed.
    assert stored_windows(engine, ",".join(DIMS), None, None) == []
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE batch_ledger SET watermark_after = :w WHERE batch_id = 5"),
            {"w": (T0 + 3 * WINDOW).strftime("%Y-%m-%d %H:%M:%S.%f")},
        )
    # Windows end 5 min after they start: those ending by T0 + 15 min are closed.
    assert stored_windows(engine, ",".join(DIMS), None, None) == [T0, T0 + WINDOW, T0 + 2 * WINDOW]
