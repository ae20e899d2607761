"""A real Prometheus scrapes the job's metrics endpoint (session fixture `prometheus`)."""

import json
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from pipelines.monitoring import JobMetrics, serve
from pipelines.stream.reports import BatchReport

pytestmark = pytest.mark.integration


def _api(base_url: str, path: str, **params: str):
    url = f"{base_url}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _poll(base_url: str, query: str, accept, timeout_s: float = 30.0) -> list[dict]:
    """Query until `accept(result)` holds; the last result, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    result: list[dict] = []
    while time.monotonic() < deadline:
        result = _api(base_url, "/api/v1/query", query=query)["result"]
        if accept(result):
            return result
        time.sleep(0.5)
    pytest.fail(f"{query} did not reach the expected value within {timeout_s} s: {result}")


def test_prometheus_scrapes_the_observed_batch(prometheus):
    registry = CollectorRegistry()
    metrics = JobMetrics(registry)
    report = BatchReport(
        batch_id=1,
        skipped=False,
        input_rows=1234,
        aggregated_rows=1200,
        late_rows=4,
        duplicate_rows=10,
        rejected_by_reason={"schema_violation": 17, "unprocessable": 3},
        text_dropped_rows=2,
        seconds=2.5,
        watermark=datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
    )
    with serve(prometheus.settings.metrics_port, registry):
        metrics.observe_batch(report)
        # A scrape may have seen the zeros before the batch; wait for one after it.
        (sample,) = _poll(
            prometheus.url,
            "safewatch_input_rows_total",
            lambda r: len(r) == 1 and float(r[0]["value"][1]) != 0,
        )
        rejected = _api(
            prometheus.url,
            "/api/v1/query",
            query='safewatch_rejected_rows_total{reason="unprocessable"}',
        )["result"]
        dropped = _api(prometheus.url, "/api/v1/query", query="safewatch_text_dropped_rows_total")[
            "result"
        ]

    assert float(sample["value"][1]) == 1234
    assert sample["metric"] == {
        "__name__": "safewatch_input_rows_total",
        "job": "safewatch",
        "instance": f"127.0.0.1:{prometheus.settings.metrics_port}",
    }
    assert [float(r["value"][1]) for r in rejected] == [3]
    assert [float(r["value"][1]) for r in dropped] == [2]


def test_prometheus_loads_the_pipeline_alert_rules(prometheus):
    groups = _api(prometheus.url, "/api/v1/rules", type="alert")["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert names == {
        "SafewatchPipelineStalled",
        "SafewatchBatchesFailing",
        "SafewatchDeadLetterRateHigh",
        "SafewatchConsumerLagHigh",
        "SafewatchNotificationsFailing",
        "SafewatchRedactionFailures",
    }
    assert all(rule["health"] != "err" for group in groups for rule in group["rules"])
