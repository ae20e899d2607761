"""Early firing through the alert engine, on SQLite and PostgreSQL: open windows' running
counts page once, marked early; closed windows still decide and never page twice.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from pipelines.alerting.engine import AlertEngine
from pipelines.alerting.loader import parse_rules
from pipelines.alerting.model import EARLY_ALPHA
from pipelines.alerting.sequential import rate_exceeds
from pipelines.segments import parse_segment
from pipelines.warehouse.sink import WarehouseSink
from tests.integration.alert_windows import DIMS, commit_windows, warehouse_engine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
# (window, locale) -> (events, violations, redaction failures). Window 3 is still open when
# the rules look at it: de-DE's running counts are a spike, fr-FR holds one leak.
DATA = {
    **{(w, "en-US"): (400, 1, 0) for w in range(4)},
    **{(w, "de-DE"): (200, 0, 0) for w in range(3)},
    (3, "de-DE"): (120, 40, 0),
    **{(w, "fr-FR"): (60, 0, 0) for w in range(3)},
    (3, "fr-FR"): (20, 0, 1),
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
  - name: RedactionFailures
    metric: redaction_failure_rate
    by: [locale]
    condition:
      threshold: {above: 0.0}
    min_events: 1
    severity: sev1
    owner: privacy
    runbook: runbooks/RedactionFailures.md
    summary: "Redaction failed in {segment}"
  - name: HarmfulOutputTicket
    metric: violation_rate
    by: [locale]
    condition:
      threshold: {above: 0.05}
    min_events: 50
    severity: sev3
    owner: trust-safety
    runbook: runbooks/HarmfulOutputSpike.md
    summary: "Harmful output {value:.1%} in {segment} (ticket)"
"""
NOW = T0 + timedelta(hours=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request, tmp_path):
    engine = warehouse_engine(request, tmp_path, "early")
    sink = WarehouseSink(engine)
    windows: dict[int, dict[str, dict[str, int]]] = {}
    for (w, locale), (events, violations, leaks) in DATA.items():
        windows.setdefault(w, {})[locale] = {
            "events": events, "violations": violations, "redaction_failures": leaks,
        }  # fmt: skip
    commit_windows(sink, T0, WINDOW, windows)
    alerts = AlertEngine(
        parse_rules(RULES, "early.yaml"), sink.tables, DIMS, channels=("alertmanager",),
        window=WINDOW,
    )  # fmt: skip
    yield engine, alerts
    engine.dispose()


def _closed(engine, alerts, *windows):
    with engine.begin() as conn:
        return alerts.evaluate(conn, [T0 + w * WINDOW for w in windows], now=NOW)


def _open(engine, alerts, watermark_window):
    with engine.begin() as conn:
        return alerts.evaluate_open(conn, T0 + watermark_window * WINDOW, now=NOW, batch_id=7)


def _table(engine, name):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(f"SELECT * FROM {name}")).mappings()]


def test_open_window_pages_early_once_and_the_closed_window_does_not_page_again(warehouse):
    engine, alerts = warehouse
    _closed(engine, alerts, 0, 1, 2)
    assert _table(engine, "alert_history") == []
    fired = _open(engine, alerts, 3)  # window 3 is open: its end is after the watermark

    # Independent expectation: the anytime-valid test on the running counts, tuned on the
    # segment's previous window; one leak is conclusive for a limit of 0; sev3 is not early.
    spike = rate_exceeds(40, 120, 0.05, alpha=EARLY_ALPHA, v_opt=200 * 0.05 * 0.95)
    assert spike.fired
    assert not rate_exceeds(1, 400, 0.05, alpha=EARLY_ALPHA, v_opt=400 * 0.05 * 0.95).fired
    assert sorted((t.rule, dict(t.segment)["locale"]) for t in fired) == [
        ("HarmfulOutputSpike", "de-DE"),
        ("RedactionFailures", "fr-FR"),
    ]
    assert all(t.early and t.window_start == T0 + 3 * WINDOW for t in fired)
    history = {r["rule"]: r for r in _table(engine, "alert_history")}
    assert set(history) == {"HarmfulOutputSpike", "RedactionFailures"}
    spike_row = history["HarmfulOutputSpike"]
    assert bool(spike_row["early"]) and spike_row["batch_id"] == 7
    assert spike_row["evidence"] == pytest.approx(spike.e_value)
    assert (spike_row["numerator"], spike_row["denominator"]) == (40, 120)
    assert history["RedactionFailures"]["evidence"] is None  # one event was conclusive
    outbox = _table(engine, "notification_outbox")
    assert len(outbox) == 2
    for row in outbox:
        payload = json.loads(row["payload"])
        assert payload["annotations"]["early"] == "true"
        assert "early" not in payload["labels"]  # the same alert as the later re-sends
    with engine.connect() as conn:
        states = {
            (r.rule, dict(parse_segment(r.segment))["locale"]): r
            for r in conn.execute(text("SELECT * FROM alert_state"))
        }
    spike_state = states[("HarmfulOutputSpike", "de-DE")]
    assert spike_state.status == "firing" and spike_state.true_windows == 0

    # Looking again after the next batch changes nothing.
    assert _open(engine, alerts, 3) == []
    # The window closes with its condition true: still firing, no new transition, and the
    # re-send of the window is the notice already queued (same key), not a second page.
    assert [t.rule for t in _closed(engine, alerts, 3)] == ["HarmfulOutputTicket"]
    assert len(_table(engine, "alert_history")) == 3
    assert {
        json.loads(r["payload"])["alertname"] for r in _table(engine, "notification_outbox")
    } == {
        "HarmfulOutputSpike",
        "RedactionFailures",
        "HarmfulOutputTicket",
    }
    assert len(_table(engine, "notification_outbox")) == 3


def test_earlier_windows_closing_after_an_early_page_do_not_resolve_it(warehouse):
    engine, alerts = warehouse
    _closed(engine, alerts, 0, 1)
    fired = _open(engine, alerts, 2)  # windows 2 and 3 are open; only 3 holds the spike
    assert {(t.rule, t.window_start) for t in fired} == {
        ("HarmfulOutputSpike", T0 + 3 * WINDOW),
        ("RedactionFailures", T0 + 3 * WINDOW),
    }
    sent = len(_table(engine, "notification_outbox"))
    # Window 2 closes: de-DE's condition is false there, before the incident began.
    assert _closed(engine, alerts, 2) == []
    assert len(_table(engine, "notification_outbox")) == sent  # no re-send with window 2
    with engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM alert_state WHERE rule = 'HarmfulOutputSpike' AND "
                 "segment LIKE '%de-DE%'")
        ).scalar()  # fmt: skip
    assert status == "firing"
    # Window 3 closes with the spike: still firing, nothing new for the early rule.
    assert {t.rule for t in _closed(engine, alerts, 3)} == {"HarmfulOutputTicket"}


def test_the_analyst_view_shows_the_early_flag(warehouse):
    engine, alerts = warehouse
    _closed(engine, alerts, 0, 1, 2)
    _open(engine, alerts, 3)
    with engine.begin() as conn:
        conn.execute(text("UPDATE segment_window_agg SET distinct_users = 100"))
        rows = conn.execute(select(text("rule, early")).select_from(text("v_alert_history")))
        assert {(r.rule, bool(r.early)) for r in rows} == {
            ("HarmfulOutputSpike", True),
            ("RedactionFailures", True),
        }
