"""The streaming job's Prometheus metrics, as the job sets them, against the warehouse.

Runs the job on a topic with a violation spike and the default alert rules, with a
JobMetrics on a fresh registry, and compares what the registry holds with what the ledger,
the warehouse and the alert state say (computed here independently, with scipy for the
Wilson bounds).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from scipy.stats import binomtest

from jobs.streaming_aggregator import start_query
from pipelines.alerting.loader import load_rules
from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_events
from pipelines.monitoring.exporter import JobMetrics
from pipelines.synth.generator import generate_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.queries import aggregate_rows, ledger_rows
from tests.integration.streaming_support import make_settings

pytestmark = pytest.mark.integration


def test_metrics_match_the_ledger_and_the_newest_closed_window(
    spark, kafka_broker, unique_topic, tmp_path
):
    topic = unique_topic("metrics")
    ensure_topics(kafka_broker.kafka, [topic])
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    # Windows are aligned to the epoch: start on a 5-minute boundary so that the minutes below
    # are the windows' (otherwise the closed windows shift with the clock's minute).
    start -= timedelta(minutes=start.minute % 5)
    # 30 minutes with the spike from minute 15 to 21, cut at minute 24: the last window the
    # watermark closes (15-20) is in the incident, so its alerts fire when the job catches up.
    cut = (start + timedelta(minutes=24)).strftime("%Y-%m-%dT%H:%M:%S")
    events = [
        e
        for e in generate_events(
            seed=5, start=start, duration=timedelta(minutes=30), rate_per_s=12,
            scenarios=["violation-spike"],
        )
        if e["event_time"] < cut
    ]  # fmt: skip
    produce_events(kafka_broker.kafka, topic, events)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    settings = make_settings(
        kafka_broker.kafka, topic, tmp_path / "ckpt", url, max_offsets=4000, watermark="2 minutes"
    )
    settings = settings.model_copy(
        update={"alerting": settings.alerting.model_copy(update={"channels": ()})}
    )
    registry = CollectorRegistry()
    metrics = JobMetrics(registry)
    job = start_query(spark, settings, until_caught_up=True, log=lambda _m: None, metrics=metrics)
    job.await_termination()

    def value(name, **labels):
        return registry.get_sample_value(f"safewatch_{name}", labels)

    engine = make_engine(url)
    ledger = ledger_rows(engine)
    assert value("batches_total", outcome="committed") == len(ledger)
    assert value("input_rows_total") == sum(r["input_rows"] for r in ledger) == len(events)
    assert value("aggregated_rows_total") == len(events)
    assert value("consumer_lag_records", topic=topic) == 0  # caught up
    watermark = max(r["watermark_after"] for r in ledger)
    assert value("watermark_timestamp_seconds") == pytest.approx(watermark.timestamp())

    # Headline rates: the newest closed window, summed per product surface.
    rows = aggregate_rows(engine)
    newest = max(r["window_start"] for r in rows if r["window_end"] <= watermark)
    per_surface: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r["window_start"] == newest:
            per_surface[r["product_surface"]][0] += r["violations"]
            per_surface[r["product_surface"]][1] += r["events"]
    assert per_surface
    for surface, (k, n) in per_surface.items():
        labels = {"rate": "violation_rate", "product_surface": surface}
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert value("rate", **labels) == pytest.approx(k / n)
        assert value("rate_lower", **labels) == pytest.approx(ci.low, abs=1e-12)
        assert value("rate_upper", **labels) == pytest.approx(ci.high, abs=1e-12)

    # Firing alerts by severity equal the alert_state rows that are firing.
    with engine.connect() as conn:
        firing = (
            conn.exec_driver_sql("SELECT rule FROM alert_state WHERE status = 'firing'")
            .scalars()
            .all()
        )
    severities = {r.name: r.severity for r in load_rules([Path("alerts/rules")])}
    expected: dict[str, int] = defaultdict(int)
    for rule in firing:
        expected[severities[rule]] += 1
    assert firing, "the spike should be firing at the end of the topic"
    for severity in ("sev1", "sev2", "sev3", "sev4"):
        assert value("alerts_firing", severity=severity) == expected[severity]
