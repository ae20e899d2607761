"""The settings of alerting (`[alerting]`): the rules, the channels alert notices go to and
their retries, and the local Alertmanager and Prometheus.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from pipelines.settings.types import GoDuration, PositiveGoDuration, Section

_PROM_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")


class AlertingSettings(Section):
    """Alert rules, where alerts go, and the local Alertmanager and Prometheus (tests, trials)."""

    rules: Annotated[tuple[str, ...], NoDecode] = Field(
        ("alerts/rules",),
        description="Alert rule files or directories (their *.yaml), evaluated for every "
        "window the job's watermark closes; see docs/alert-rules.md.",
    )
    evaluate: bool = Field(True, description="Evaluate the alert rules in the streaming job.")
    channels: Annotated[tuple[str, ...], NoDecode] = Field(
        ("alertmanager", "kafka"),
        description="Where alert notices go: alertmanager (API v2 at alertmanager_url), kafka "
        "(topic kafka.topic_alerts), webhook (notify_webhook_url). Undelivered notices wait in "
        "the warehouse's notification_outbox and are retried.",
    )
    notify_webhook_url: SecretStr | None = Field(
        None,
        description="URL Safewatch POSTs each alert notice to as JSON, for the webhook channel "
        "(never printed).",
    )
    retry_initial_s: float = Field(
        5.0, gt=0, description="Wait before retrying a failed delivery; doubles per failure."
    )
    retry_max_s: float = Field(300.0, gt=0, description="Longest wait between delivery retries.")
    deliver_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often the job delivers the outbox on its own, besides right after "
        "each batch: notices held by a channel that was down are sent once it is back, "
        "even when no events arrive.",
    )
    ttl_windows: int = Field(
        3,
        ge=1,
        description="A firing alert is sent with endsAt this many windows after its window: "
        "it is re-sent every window while firing, and expires if the job stops.",
    )
    runbook_base_url: str = Field(
        "",
        description="Prefix of runbook links in alerts, e.g. https://git.example.com/safewatch/"
        "blob/main/ (empty: the path in the repository, e.g. runbooks/X.md).",
    )

    @field_validator("rules", "channels", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in value if c not in ("alertmanager", "kafka", "webhook")]
        if unknown:
            msg = f"unknown alert channel(s) {unknown}; choose from alertmanager, kafka, webhook"
            raise ValueError(msg)
        return tuple(dict.fromkeys(value))

    alertmanager_url: str = Field(
        "http://127.0.0.1:9193",
        description="Base URL of the Alertmanager that receives alerts (API v2); the local "
        "instance is http://127.0.0.1:<alertmanager_port>. user:pass@ in it is sent as basic "
        "authentication and never printed.",
    )
    request_timeout_s: float = Field(
        10.0, gt=0, description="Seconds an HTTP call to Alertmanager may take."
    )
    alertmanager_port: int = Field(
        9193, ge=1, le=65535, description="Port of the local Alertmanager (web UI and API)."
    )
    prometheus_port: int = Field(
        9190, ge=1, le=65535, description="Port of the local Prometheus (web UI and API)."
    )
    metrics_port: int = Field(
        9108,
        ge=1,
        le=65535,
        description="Port of the streaming job's /metrics endpoint, scraped by the local "
        "Prometheus.",
    )
    data_dir: Path = Field(
        Path("var/alerting"),
        description="Config, data, pid and log files of the local Alertmanager and Prometheus.",
    )
    prometheus_rules: str = Field(
        "alerts/prometheus/*.rules.yml",
        description="Glob of the rule files the local Prometheus evaluates (relative: to the "
        "working directory).",
    )
    webhook_url: SecretStr | None = Field(
        None,
        description="Webhook the local Alertmanager notifies (e.g. a chat or paging hook; never "
        "printed); none: alerts are only kept in Alertmanager.",
    )
    group_wait: GoDuration = Field(
        "1s", description="Local Alertmanager: wait before the first notification of a group."
    )
    group_interval: PositiveGoDuration = Field(
        "5s",
        description="Local Alertmanager: wait before notifying changes (new or resolved alerts) "
        "of a group.",
    )
    repeat_interval: PositiveGoDuration = Field(
        "1h", description="Local Alertmanager: resend a still-firing alert after this long."
    )
    resolve_timeout: PositiveGoDuration = Field(
        "5m",
        description="Local Alertmanager: an alert posted without endsAt is resolved after this "
        "long without an update.",
    )
    start_timeout_s: float = Field(
        30.0, gt=0, description="Seconds to wait for the local Alertmanager or Prometheus."
    )

    @field_validator("group_wait", "group_interval", "repeat_interval", "resolve_timeout")
    @classmethod
    def _prometheus_duration(cls, value: str) -> str:
        if not value or not _PROM_DURATION.match(value):
            msg = f"{value!r} is not a Prometheus duration such as 30s, 5m, 1h30m or 2d"
            raise ValueError(msg)
        return value
