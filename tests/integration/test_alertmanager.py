"""The Alertmanager API v2 client against a real Alertmanager (session fixture `alertmanager`)."""

import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.alerting.alertmanager_client import NotifierError, get_alerts, post_alerts, ready

pytestmark = pytest.mark.integration


def _alert(name: str, starts: datetime, **extra):
    return {
        "labels": {"alertname": name, "severity": "page", "product_surface": "chat"},
        "annotations": {
            "summary": "Refusal rate above 12 % on chat",
            "description": "window 10:00-10:05, 340 events",
        },
        "startsAt": starts.isoformat(),
        "generatorURL": "http://safewatch.local/rules/refusal-rate",
        **extra,
    }


@pytest.fixture
def alertname() -> str:
    return f"SafewatchTest{uuid.uuid4().hex[:10]}"


def test_fixture_alertmanager_is_ready(alertmanager):
    assert ready(alertmanager.url)
    assert alertmanager.status().running


def test_posted_alert_is_read_back_with_labels_annotations_and_start(alertmanager, alertname):
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    post_alerts(alertmanager.url, [_alert(alertname, starts)])

    alerts = get_alerts(alertmanager.url, filters={"alertname": alertname})

    assert len(alerts) == 1
    (alert,) = alerts
    assert alert["labels"] == {
        "alertname": alertname,
        "severity": "page",
        "product_surface": "chat",
    }
    assert alert["annotations"] == {
        "summary": "Refusal rate above 12 % on chat",
        "description": "window 10:00-10:05, 340 events",
    }
    assert datetime.fromisoformat(alert["startsAt"]) == starts
    assert alert["generatorURL"] == "http://safewatch.local/rules/refusal-rate"
    assert [r["name"] for r in alert["receivers"]] == ["safewatch"]
    assert alert["status"]["state"] in ("active", "unprocessed")


def test_filter_on_a_label_value_the_alert_lacks_returns_nothing(alertmanager, alertname):
    starts = datetime.now(UTC).replace(microsecond=0)
    post_alerts(alertmanager.url, [_alert(alertname, starts)])

    assert (
        get_alerts(alertmanager.url, filters={"alertname": alertname, "severity": "ticket"}) == []
    )
    assert len(get_alerts(alertmanager.url, filters={"alertname": alertname})) == 1


def test_alert_posted_again_with_past_end_is_no_longer_active(alertmanager, alertname):
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    post_alerts(alertmanager.url, [_alert(alertname, starts)])
    assert len(get_alerts(alertmanager.url, filters={"alertname": alertname})) == 1

    ended = datetime.now(UTC) - timedelta(seconds=1)
    post_alerts(alertmanager.url, [_alert(alertname, starts, endsAt=ended.isoformat())])

    assert get_alerts(alertmanager.url, filters={"alertname": alertname}) == []


def test_rejected_alert_is_a_notifier_error_with_status_and_reason(alertmanager, alertname):
    starts = datetime.now(UTC)
    bad = _alert(alertname, starts, endsAt=(starts - timedelta(hours=1)).isoformat())

    with pytest.raises(NotifierError, match="HTTP 400") as caught:
        post_alerts(alertmanager.url, [bad])

    assert caught.value.status == 400
    assert "/api/v2/alerts" in caught.value.url
    assert "start time must be before end time" in caught.value.body


def test_unreachable_alertmanager_is_a_notifier_error_naming_the_url():
    with socket.socket() as reserved:  # bound, never listening: connections are refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        url = f"http://127.0.0.1:{port}"

        with pytest.raises(NotifierError, match=f"127.0.0.1:{port}/api/v2/alerts") as caught:
            post_alerts(url, [_alert("Unreachable", datetime.now(UTC))], timeout=2)
        assert caught.value.status is None
        assert "SAFEWATCH_ALERTING__ALERTMANAGER_URL" in str(caught.value)

        with pytest.raises(NotifierError, match=f"127.0.0.1:{port}"):
            get_alerts(url, timeout=2)
        assert not ready(url)
