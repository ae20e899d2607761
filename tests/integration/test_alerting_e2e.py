"""End to end: real broker, Spark's Kafka source, the streaming job, a real Alertmanager.

Events are produced in real time (event_time = now) into three segments of one model:
- `de-DE`: normal, then a violation spike for a few windows, then normal again;
- `fr-FR`: a handful of events per window, all of them violations (fails the volume guard);
- `en-US`: a steady 3 % violation rate, moving only within noise.
The job runs continuously with 10-second windows. The spike must reach Alertmanager (through
its API) within a bounded time with the right labels and runbook_url, only for de-DE, and
resolve after the spike ends; the alert also lands on the alerts Kafka topic.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from jobs.streaming_aggregator import start_query
from pipelines.alerting.alertmanager_client import get_alerts
from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_events
from pipelines.settings import AlertingSettings, DriftSettings
from pipelines.warehouse.engine import make_engine
from tests.integration.streaming_support import consume_all, make_settings

pytestmark = pytest.mark.integration

EXAMPLE = json.loads(
    (
        Path(__file__).resolve().parents[2] / "schemas" / "examples" / "answered_clean.json"
    ).read_text()
)
RULES = """
rules:
  - name: E2EHarmfulOutputSpike
    metric: violation_rate
    by: [product_surface, model_version, locale]
    condition:
      threshold: {above: 0.05}
    min_events: 40
    severity: sev2
    owner: trust-safety-oncall
    runbook: runbooks/HarmfulOutputRateHigh.md
    summary: "Harmful output rate {value:.1%} in {segment}"
    description: "{numerator} of {denominator}, 95 % interval {lower:.1%}-{upper:.1%}"
"""
WINDOW_S = 10
SPIKE = (40.0, 70.0)  # seconds after the start: de-DE spikes
RUN_S = 130.0


def _event(rng: random.Random, locale: str, violation: bool) -> dict:
    e = copy.deepcopy(EXAMPLE)
    e["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    e["event_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    e["segment"]["locale"] = locale
    e["segment"]["product_surface"] = "chat"
    e["segment"]["model_version"] = "e2e-model"
    e["session_id"] = f"{rng.getrandbits(256):064x}"
    e["user_id"] = f"{rng.getrandbits(256):064x}"
    e["moderation"]["flagged_categories"] = ["violence"] if violation else []
    e["moderation"]["action"] = "block" if violation else "allow"
    e.pop("excerpts", None)
    return e


def _produce(kafka, topic: str, started: float, stop: threading.Event, log: list) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        elapsed = time.monotonic() - started
        if elapsed > RUN_S:
            return
        spiking = SPIKE[0] <= elapsed < SPIKE[1]
        events = [_event(rng, "de-DE", rng.random() < (0.3 if spiking else 0.01)) for _ in range(8)]
        events += [_event(rng, "en-US", rng.random() < 0.03) for _ in range(8)]
        if rng.random() < 0.5:
            events.append(_event(rng, "fr-FR", True))  # ~5 events per window, all violations
        produce_events(kafka, topic, events)
        if spiking and not log:
            log.append(time.monotonic())  # the first spike events were acknowledged
        time.sleep(1.0)


def test_spike_reaches_alertmanager_labelled_and_resolves(
    spark, kafka_broker, alertmanager, unique_topic, tmp_path
):
    topic = unique_topic("e2e")
    alerts_topic = unique_topic("alerts")
    ensure_topics(kafka_broker.kafka, [topic, alerts_topic])
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    base = make_settings(kafka_broker.kafka, topic, tmp_path / "ckpt", url, watermark="4 seconds")
    settings = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_alerts": alerts_topic}),
            "stream": base.stream.model_copy(
                update={
                    "window": f"{WINDOW_S} seconds",
                    "early_slice": f"{WINDOW_S} seconds",
                    "trigger_interval": "2 seconds",
                }
            ),
            "drift": DriftSettings(enabled=False),
            "alerting": AlertingSettings(
                rules=(str(rules),),
                channels=("alertmanager", "kafka"),
                alertmanager_url=alertmanager.url,
                retry_initial_s=1,
            ),
        }
    )
    stop = threading.Event()
    spike_sent: list[float] = []
    started = time.monotonic()
    producer = threading.Thread(
        target=_produce, args=(kafka_broker.kafka, topic, started, stop, spike_sent), daemon=True
    )
    producer.start()
    job_log: list[tuple[float, str]] = []
    job = start_query(
        spark,
        settings,
        until_caught_up=False,
        log=lambda m: job_log.append((time.monotonic(), m)),
    )
    fired_at = resolved_at = None
    seen: list[dict] = []
    warehouse = make_engine(url)

    def resolved_in_warehouse() -> bool:
        with warehouse.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT count(*) FROM alert_history WHERE to_status = 'resolved'")
                ).scalar()
            )

    try:
        deadline = started + RUN_S + 90
        while time.monotonic() < deadline and resolved_at is None:
            current = get_alerts(alertmanager.url, filters={"alertname": "E2EHarmfulOutputSpike"})
            if current and fired_at is None:
                fired_at = time.monotonic()
                job_log.append((fired_at, "test: alert seen at Alertmanager"))
                seen = current
            if fired_at is not None and resolved_in_warehouse():
                # The resolved notice was delivered with the batch that wrote it.
                time.sleep(1.0)
                if not get_alerts(alertmanager.url, filters={"alertname": "E2EHarmfulOutputSpike"}):
                    resolved_at = time.monotonic()
                    job_log.append((resolved_at, "test: resolved, gone from Alertmanager"))
            time.sleep(1.0)
    finally:
        stop.set()
        job_log.append((time.monotonic(), "test: stopping the query"))
        job.stop()
        producer.join(timeout=30)

    print("\n".join(f"{t - started:6.1f} {m}" for t, m in job_log))
    assert spike_sent, "the producer never reached the spike"
    assert fired_at is not None, "the spike never reached Alertmanager"
    latency = fired_at - spike_sent[0]
    print(f"\nfirst spike event produced -> alert at Alertmanager: {latency:.1f} s")
    # One window to fill, the watermark, a trigger and a micro-batch or two.
    assert latency < 60
    assert len(seen) == 1  # only de-DE: not the low-volume fr-FR, not the noisy en-US
    alert = seen[0]
    assert alert["labels"]["locale"] == "de-DE"
    assert alert["labels"]["severity"] == "sev2"
    assert alert["labels"]["model_version"] == "e2e-model"
    assert alert["annotations"]["runbook_url"] == "runbooks/HarmfulOutputRateHigh.md"
    assert "de-DE" in alert["annotations"]["summary"]
    assert resolved_at is not None, "the alert did not resolve after the spike"

    notices = [json.loads(m.value) for m in consume_all(kafka_broker.kafka, alerts_topic)]
    statuses = [(n["labels"]["locale"], n["status"]) for n in notices]
    assert ("de-DE", "firing") in statuses and ("de-DE", "resolved") in statuses
    assert {loc for loc, _ in statuses} == {"de-DE"}
