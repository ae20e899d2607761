import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binomtest

from pipelines.errors import InfraError
from pipelines.metrics.catalog import counter_ids
from pipelines.monitoring import JobMetrics, serve
from pipelines.stream.reports import BatchReport

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
# The headline rates as the metric catalog defines them, restated here as the expectation.
HEADLINE = {
    "violation_rate": ("violations", "events"),
    "refusal_rate": ("refusals", "events"),
    "injection_success_rate": ("injection_successes", "injection_attempts"),
    "jailbreak_success_rate": ("jailbreak_successes", "jailbreak_attempts"),
    "pii_output_rate": ("pii_outputs", "events"),
    "telemetry_completeness": ("telemetry_complete", "events_seen"),
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry) -> JobMetrics:
    return JobMetrics(registry, clock=lambda: NOW)


def _value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def _report(**kw) -> BatchReport:
    base = dict(
        batch_id=7,
        skipped=False,
        input_rows=100,
        aggregated_rows=80,
        late_rows=5,
        duplicate_rows=3,
        rejected_by_reason={"schema_violation": 10, "unprocessable": 2},
        text_dropped_rows=6,
        seconds=12.5,
        watermark=datetime(2026, 3, 2, 11, 50, tzinfo=UTC),
    )
    return BatchReport(**{**base, **kw})


def _row(surface, **counts):
    """An aggregate row of segment_window_agg: every counter column, zero unless given."""
    row = {c: 0 for c in counter_ids()}
    row.update(
        window_start=NOW,
        dimension_set="product_surface,model_version,locale",
        product_surface=surface,
        model_version="m1",
        locale="en",
        feature="*",
        **counts,
    )
    return row


def _wilson(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


# -- batches ---------------------------------------------------------------------------------


def test_committed_batches_add_their_counts(registry, metrics):
    metrics.observe_batch(_report())
    metrics.observe_batch(
        _report(
            batch_id=8,
            input_rows=50,
            aggregated_rows=49,
            late_rows=0,
            duplicate_rows=1,
            text_dropped_rows=1,
            rejected_by_reason={},
            seconds=0.7,
            watermark=datetime(2026, 3, 2, 11, 55, tzinfo=UTC),
        )
    )

    assert _value(registry, "safewatch_batches_total", outcome="committed") == 2
    assert _value(registry, "safewatch_batches_total", outcome="skipped") == 0
    assert _value(registry, "safewatch_input_rows_total") == 150
    assert _value(registry, "safewatch_aggregated_rows_total") == 129
    assert _value(registry, "safewatch_late_rows_total") == 5
    assert _value(registry, "safewatch_duplicate_rows_total") == 4
    assert _value(registry, "safewatch_rejected_rows_total", reason="schema_violation") == 10
    assert _value(registry, "safewatch_rejected_rows_total", reason="unprocessable") == 2
    assert _value(registry, "safewatch_text_dropped_rows_total") == 7
    assert _value(registry, "safewatch_rejected_rows_total", reason="invalid_json") == 0
    assert _value(registry, "safewatch_batch_duration_seconds_count") == 2
    assert _value(registry, "safewatch_batch_duration_seconds_sum") == pytest.approx(13.2)
    assert _value(registry, "safewatch_batch_duration_seconds_bucket", le="1.0") == 1
    assert _value(registry, "safewatch_batch_duration_seconds_bucket", le="10.0") == 1
    assert _value(registry, "safewatch_batch_duration_seconds_bucket", le="15.0") == 2
    assert _value(registry, "safewatch_batch_duration_seconds_bucket", le="300.0") == 2
    assert _value(registry, "safewatch_last_successful_batch_timestamp_seconds") == 1772452800
    # 2026-03-02 11:55 UTC
    assert _value(registry, "safewatch_watermark_timestamp_seconds") == 1772452500


def test_batch_without_watermark_keeps_the_previous_one(registry, metrics):
    metrics.observe_batch(_report())
    metrics.observe_batch(_report(watermark=None))
    assert _value(registry, "safewatch_watermark_timestamp_seconds") == 1772452200


def test_replayed_batch_counts_only_as_skipped_progress(registry, metrics):
    metrics.observe_batch(BatchReport(batch_id=3, skipped=True))

    assert _value(registry, "safewatch_batches_total", outcome="skipped") == 1
    assert _value(registry, "safewatch_batches_total", outcome="committed") == 0
    assert _value(registry, "safewatch_input_rows_total") == 0
    assert _value(registry, "safewatch_batch_duration_seconds_count") == 0
    assert _value(registry, "safewatch_last_successful_batch_timestamp_seconds") == NOW.timestamp()


def test_unknown_reject_reason_raises_before_counting_anything(registry, metrics):
    with pytest.raises(ValueError, match="unknown reject reason.*'too_spicy'"):
        metrics.observe_batch(_report(rejected_by_reason={"too_spicy": 1, "invalid_json": 2}))

    assert _value(registry, "safewatch_batches_total", outcome="committed") == 0
    assert _value(registry, "safewatch_input_rows_total") == 0
    assert _value(registry, "safewatch_rejected_rows_total", reason="invalid_json") == 0
    assert _value(registry, "safewatch_last_successful_batch_timestamp_seconds") == 0


def test_failed_batch_counts_as_failed_with_its_duration(registry, metrics):
    metrics.observe_failure(42.0)

    assert _value(registry, "safewatch_batches_total", outcome="failed") == 1
    assert _value(registry, "safewatch_batch_duration_seconds_sum") == 42.0
    assert _value(registry, "safewatch_batch_duration_seconds_bucket", le="30.0") == 0
    assert _value(registry, "safewatch_batch_duration_seconds_bucket", le="45.0") == 1
    assert _value(registry, "safewatch_last_successful_batch_timestamp_seconds") == 0


def test_start_time_is_the_clock_at_construction(registry, metrics):
    assert _value(registry, "safewatch_start_timestamp_seconds") == NOW.timestamp()


def test_labelled_counters_exist_at_zero_before_any_event(registry, metrics):
    for outcome in ("committed", "skipped", "failed"):
        assert _value(registry, "safewatch_batches_total", outcome=outcome) == 0
    for reason in (
        "message_too_large",
        "invalid_json",
        "unknown_schema_version",
        "schema_violation",
        "event_time_out_of_range",
        "unprocessable",
    ):
        assert _value(registry, "safewatch_rejected_rows_total", reason=reason) == 0
    for channel in ("alertmanager", "webhook", "kafka"):
        assert _value(registry, "safewatch_notifications_sent_total", channel=channel) == 0
    for severity in ("sev1", "sev2", "sev3", "sev4"):
        assert _value(registry, "safewatch_alerts_firing", severity=severity) == 0


# -- polled state ----------------------------------------------------------------------------


def test_lag_is_set_per_topic(registry, metrics):
    metrics.set_lag("safety.interactions.v1", 1200)
    metrics.set_lag("safety.interactions.v1", 300)
    metrics.set_lag("safety.alerts.v1", 0)

    assert _value(registry, "safewatch_consumer_lag_records", topic="safety.interactions.v1") == 300
    assert _value(registry, "safewatch_consumer_lag_records", topic="safety.alerts.v1") == 0
    with pytest.raises(ValueError, match=">= 0"):
        metrics.set_lag("safety.interactions.v1", -1)


def test_notifications_set_pending_and_add_deltas(registry, metrics):
    metrics.set_notifications(4, 1, {"alertmanager": 3, "kafka": 2})
    metrics.set_notifications(0, 2, {"alertmanager": 1, "webhook": 5})

    assert _value(registry, "safewatch_notifications_pending") == 0
    assert _value(registry, "safewatch_notifications_failed_total") == 3
    assert _value(registry, "safewatch_notifications_sent_total", channel="alertmanager") == 4
    assert _value(registry, "safewatch_notifications_sent_total", channel="webhook") == 5
    assert _value(registry, "safewatch_notifications_sent_total", channel="kafka") == 2


def test_the_oldest_pending_notice_age_is_measured_at_each_scrape(registry):
    now = [NOW]
    metrics = JobMetrics(registry, clock=lambda: now[0])
    name = "safewatch_notifications_oldest_pending_age_seconds"
    assert _value(registry, name) == 0  # nothing waiting yet
    metrics.set_notifications(2, 0, {}, NOW - timedelta(seconds=90))
    assert _value(registry, name) == 90
    now[0] = NOW + timedelta(minutes=10)  # no delivery since: the page has waited longer
    assert _value(registry, name) == 690
    metrics.set_notifications(0, 0, {"alertmanager": 2}, None)
    assert _value(registry, name) == 0
    # A stale time with nothing pending is not an age.
    metrics.set_notifications(0, 0, {}, NOW - timedelta(hours=1))
    assert _value(registry, name) == 0


def test_unknown_channel_raises_and_changes_nothing(registry, metrics):
    with pytest.raises(ValueError, match="unknown notification channel.*'pager'"):
        metrics.set_notifications(7, 1, {"pager": 1, "kafka": 1})

    assert _value(registry, "safewatch_notifications_pending") == 0
    assert _value(registry, "safewatch_notifications_failed_total") == 0
    assert _value(registry, "safewatch_notifications_sent_total", channel="kafka") == 0


def test_firing_counts_reset_severities_not_given(registry, metrics):
    metrics.set_firing({"sev1": 1, "sev3": 4})
    metrics.set_firing({"sev3": 2})

    assert _value(registry, "safewatch_alerts_firing", severity="sev1") == 0
    assert _value(registry, "safewatch_alerts_firing", severity="sev3") == 2
    with pytest.raises(ValueError, match="unknown severity"):
        metrics.set_firing({"page": 1})


# -- headline rates --------------------------------------------------------------------------


def test_rates_sum_rows_per_surface_with_wilson_bounds(registry, metrics):
    rows = [
        # chat, two windows
        _row("chat", events=400, violations=3, refusals=20, jailbreak_attempts=10,
             jailbreak_successes=1, pii_outputs=0, telemetry_complete=395, events_seen=410),
        _row("chat", events=600, violations=2, refusals=30, jailbreak_attempts=5,
             jailbreak_successes=0, pii_outputs=1, telemetry_complete=600, events_seen=600),
        _row("search", events=50, violations=0, refusals=1, injection_attempts=4,
             injection_successes=2, telemetry_complete=49, events_seen=52),
    ]  # fmt: skip
    metrics.set_rates(rows)

    chat = {
        "violation_rate": (5, 1000),
        "refusal_rate": (50, 1000),
        "jailbreak_success_rate": (1, 15),
        "pii_output_rate": (1, 1000),
        "telemetry_completeness": (995, 1010),
    }
    search = {
        "violation_rate": (0, 50),
        "refusal_rate": (1, 50),
        "injection_success_rate": (2, 4),
        "pii_output_rate": (0, 50),
        "telemetry_completeness": (49, 52),
    }
    for surface, expected in (("chat", chat), ("search", search)):
        for rate_id, (k, n) in expected.items():
            labels = {"rate": rate_id, "product_surface": surface}
            low, high = _wilson(k, n)
            assert _value(registry, "safewatch_rate", **labels) == pytest.approx(k / n)
            assert _value(registry, "safewatch_rate_lower", **labels) == pytest.approx(low)
            assert _value(registry, "safewatch_rate_upper", **labels) == pytest.approx(high)
    # No attempts: no series rather than a made-up 0.
    labels = {"rate": "injection_success_rate", "product_surface": "chat"}
    assert _value(registry, "safewatch_rate", **labels) is None
    labels = {"rate": "jailbreak_success_rate", "product_surface": "search"}
    assert _value(registry, "safewatch_rate_lower", **labels) is None


def test_set_rates_replaces_the_previous_rates(registry, metrics):
    metrics.set_rates([_row("chat", events=10, violations=5, events_seen=10)])
    metrics.set_rates([_row("search", events=10, violations=1, events_seen=10)])

    labels = {"rate": "violation_rate", "product_surface": "chat"}
    assert _value(registry, "safewatch_rate", **labels) is None
    labels = {"rate": "violation_rate", "product_surface": "search"}
    assert _value(registry, "safewatch_rate", **labels) == pytest.approx(0.1)


def _surface_values(registry) -> set[str]:
    return {
        s.labels["product_surface"]
        for family in registry.collect()
        if family.name.startswith("safewatch_rate")
        for s in family.samples
    }


def test_hundred_surfaces_keep_the_twenty_largest_and_fold_the_rest(registry, metrics):
    # surface-000 has the most records, surface-099 the fewest.
    rows = [
        _row(f"surface-{i:03d}", events=1000 - i, violations=i % 7, events_seen=1000 - i)
        for i in range(100)
    ]
    metrics.set_rates(rows)

    values = _surface_values(registry)
    assert len(values) <= metrics.max_label_values + 1
    assert values == {f"surface-{i:03d}" for i in range(20)} | {"other"}
    folded = range(20, 100)
    k, n = sum(i % 7 for i in folded), sum(1000 - i for i in folded)
    labels = {"rate": "violation_rate", "product_surface": "other"}
    assert _value(registry, "safewatch_rate", **labels) == pytest.approx(k / n)
    series = sum(
        len(f.samples) for f in registry.collect() if f.name == "safewatch_rate"
    )  # 21 values x (violation, refusal, pii, telemetry): the others have no denominator
    assert series == 21 * 4


def test_admitted_surfaces_stay_when_a_larger_one_arrives_later(registry):
    metrics = JobMetrics(registry, max_label_values=2)
    metrics.set_rates(
        [_row("chat", events=5, events_seen=5), _row("search", events=3, events_seen=3)]
    )
    metrics.set_rates(
        [_row("new-huge", events=10**6, events_seen=10**6), _row("chat", events=1, events_seen=1)]
    )

    assert metrics.rate_label_values == {"chat", "search"}
    assert _surface_values(registry) == {"chat", "other"}


def test_rows_folded_by_the_warehouse_stay_other_and_missing_values_are_unknown(registry):
    metrics = JobMetrics(registry, max_label_values=1)
    metrics.set_rates(
        [
            _row("other", events=10, violations=1, events_seen=10),
            _row(None, events=10, violations=2, events_seen=100),
            _row("chat", events=10, violations=3, events_seen=20),
        ]
    )

    labels = {"rate": "violation_rate", "product_surface": "unknown"}
    assert _value(registry, "safewatch_rate", **labels) == pytest.approx(0.2)
    labels = {"rate": "violation_rate", "product_surface": "other"}
    assert _value(registry, "safewatch_rate", **labels) == pytest.approx(4 / 20)


def test_rows_not_grouped_by_the_dimension_are_ignored(registry, metrics):
    metrics.set_rates(
        [
            _row("chat", events=10, violations=1, events_seen=10),
            {**_row("*", events=99, violations=99, events_seen=99), "dimension_set": "locale"},
        ]
    )
    assert _surface_values(registry) == {"chat"}


def test_rows_of_two_dimension_sets_raise_and_keep_the_previous_rates(registry, metrics):
    metrics.set_rates([_row("chat", events=10, violations=1, events_seen=10)])
    rows = [
        _row("chat", events=10, events_seen=10),
        {**_row("chat", events=10, events_seen=10), "dimension_set": "product_surface"},
    ]
    with pytest.raises(ValueError, match="mix dimension sets"):
        metrics.set_rates(rows)
    labels = {"rate": "violation_rate", "product_surface": "chat"}
    assert _value(registry, "safewatch_rate", **labels) == pytest.approx(0.1)


def test_row_without_a_counter_column_raises(metrics):
    row = _row("chat", events=10, events_seen=10)
    del row["jailbreak_successes"]
    with pytest.raises(ValueError, match="jailbreak_successes"):
        metrics.set_rates([row])


def test_rates_can_be_broken_down_by_another_dimension(registry):
    metrics = JobMetrics(registry, rate_dimension="locale")
    metrics.set_rates([_row("chat", events=10, violations=1, events_seen=10)])
    labels = {"rate": "violation_rate", "locale": "en"}
    assert _value(registry, "safewatch_rate", **labels) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="not one of"):
        JobMetrics(CollectorRegistry(), rate_dimension="user_id")


# -- registry and exposition -----------------------------------------------------------------


def test_exposition_parses_and_names_every_metric(registry, metrics):
    metrics.observe_batch(_report())
    metrics.set_lag("safety.interactions.v1", 10)
    metrics.set_rates([_row("chat", events=10, violations=1, events_seen=10)])

    text = generate_latest(registry).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}

    assert names >= {
        "safewatch_batches_total",
        "safewatch_batch_duration_seconds_bucket",
        "safewatch_batch_duration_seconds_sum",
        "safewatch_batch_duration_seconds_count",
        "safewatch_input_rows_total",
        "safewatch_aggregated_rows_total",
        "safewatch_late_rows_total",
        "safewatch_duplicate_rows_total",
        "safewatch_rejected_rows_total",
        "safewatch_last_successful_batch_timestamp_seconds",
        "safewatch_start_timestamp_seconds",
        "safewatch_watermark_timestamp_seconds",
        "safewatch_consumer_lag_records",
        "safewatch_notifications_pending",
        "safewatch_notifications_failed_total",
        "safewatch_notifications_sent_total",
        "safewatch_alerts_firing",
        "safewatch_rate",
        "safewatch_rate_lower",
        "safewatch_rate_upper",
    }
    assert 'safewatch_rate{product_surface="chat",rate="violation_rate"} 0.1' in text


def test_every_metric_is_in_the_observability_docs(registry, metrics):
    docs = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    names = {f.name for f in registry.collect()}  # counters without their _total suffix
    for name in names:
        suffixed = f"{name}_total" if f"`{name}_total`" in docs else name
        assert f"| `{suffixed}` |" in docs, name


def test_each_registry_is_independent_and_holds_one_job_metrics(registry, metrics):
    other = CollectorRegistry()
    JobMetrics(other).observe_batch(_report())

    assert _value(registry, "safewatch_input_rows_total") == 0
    assert _value(other, "safewatch_input_rows_total") == 100
    with pytest.raises(ValueError, match="Duplicated"):
        JobMetrics(registry)


def test_serve_exposes_the_registry_until_closed(registry, metrics):
    metrics.observe_batch(_report())
    with serve(0, registry) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
    assert "safewatch_input_rows_total 100.0" in body
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_serve_on_a_taken_port_names_the_setting(registry):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(InfraError, match="SAFEWATCH_ALERTING__METRICS_PORT"):
            serve(sock.getsockname()[1], registry)
