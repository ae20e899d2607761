"""A small client of Alertmanager's API v2 (`/api/v2/alerts`, `/-/ready`), standard library only.

An alert is a JSON object: `labels` (identity, e.g. `alertname`, `severity`, segment values),
`annotations` (summary, description, links), `startsAt`, optional `endsAt` (an alert whose
`endsAt` has passed is resolved) and optional `generatorURL`, timestamps in RFC 3339. Posting
the same labels again updates the alert; Alertmanager resolves an alert posted without `endsAt`
after its `resolve_timeout` unless it is posted again, so senders repeat firing alerts.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pipelines.errors import SafewatchError

_URL_SETTING = "SAFEWATCH_ALERTING__ALERTMANAGER_URL"
_BODY_EXCERPT = 300


class NotifierError(SafewatchError):
    """Alertmanager could not be reached, refused a request or answered nonsense.

    `url` is the endpoint called; `status` the HTTP status (None when there was no answer);
    `body` the start of the answer.
    """

    def __init__(
        self, message: str, *, url: str, status: int | None = None, body: str = ""
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


def post_alerts(url: str, alerts: Sequence[Mapping[str, Any]], timeout: float = 10.0) -> None:
    """POST `alerts` to `url`/api/v2/alerts; return when Alertmanager has accepted them all.

    `startsAt`/`endsAt` may be timezone-aware datetimes or RFC 3339 strings. Raises ValueError
    for a naive datetime and NotifierError (with the URL, HTTP status and the start of
    Alertmanager's answer, which names the invalid field) when the alerts are not accepted.
    """
    payload = [_encode_alert(alert) for alert in alerts]
    _request(_endpoint(url, "/api/v2/alerts"), timeout, json.dumps(payload).encode())


def get_alerts(
    url: str,
    *,
    active: bool = True,
    silenced: bool = False,
    inhibited: bool = False,
    unprocessed: bool = True,
    filters: Mapping[str, str] | None = None,
    receiver: str | None = None,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds (GET `url`/api/v2/alerts); resolved alerts are never listed.

    `active`, `silenced`, `inhibited` and `unprocessed` select alerts by state (`unprocessed`:
    received but not yet routed, as just after a POST); `filters` keeps alerts whose labels equal
    every given value (`{"alertname": "X"}` is the matcher `alertname="X"`); `receiver` is a
    regular expression on receiver names. Each alert is Alertmanager's JSON: `labels`,
    `annotations`, `startsAt`, `endsAt`, `fingerprint`, `receivers`, `status` (`state`,
    `silencedBy`, `inhibitedBy`), `updatedAt`, `generatorURL`. Raises NotifierError.
    """
    params: list[tuple[str, str]] = [
        ("active", _bool(active)),
        ("silenced", _bool(silenced)),
        ("inhibited", _bool(inhibited)),
        ("unprocessed", _bool(unprocessed)),
    ]
    params += [("filter", _matcher(name, value)) for name, value in (filters or {}).items()]
    if receiver is not None:
        params.append(("receiver", receiver))
    endpoint = _endpoint(url, "/api/v2/alerts")
    body = _request(f"{endpoint}?{urllib.parse.urlencode(params)}", timeout)
    try:
        alerts = json.loads(body)
    except ValueError as exc:
        msg = f"Alertmanager at {endpoint} answered with invalid JSON: {_excerpt(body)}"
        raise NotifierError(msg, url=endpoint, status=200, body=_excerpt(body)) from exc
    if not isinstance(alerts, list):
        msg = f"Alertmanager at {endpoint} answered with {type(alerts).__name__}, not a list"
        raise NotifierError(msg, url=endpoint, status=200, body=_excerpt(body))
    return alerts


def ready(url: str, timeout: float = 2.0) -> bool:
    """True when GET `url`/-/ready answers 200; False when it cannot be reached or is not ready."""
    try:
        _request(_endpoint(url, "/-/ready"), timeout)
    except NotifierError:
        return False
    return True


def _request(endpoint: str, timeout: float, data: bytes | None = None) -> bytes:
    """GET (or POST `data` as JSON) and return the body of a 2xx answer; NotifierError else."""
    method = "GET" if data is None else "POST"
    request = urllib.request.Request(endpoint, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        # Alertmanager explains a rejected request in the body, e.g. "start time must be
        # before end time" or a JSON validation error naming the field.
        excerpt = _excerpt(exc.read())
        msg = f"Alertmanager at {endpoint} answered HTTP {exc.code} to {method}: {excerpt}"
        raise NotifierError(msg, url=endpoint, status=exc.code, body=excerpt) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        msg = (
            f"cannot reach Alertmanager at {endpoint} ({reason}); check that it runs and "
            f"{_URL_SETTING}"
        )
        raise NotifierError(msg, url=endpoint) from exc
    except ValueError as exc:  # urllib's answer to a URL without scheme or host
        msg = f"{endpoint!r} is not a valid Alertmanager URL ({exc}); check {_URL_SETTING}"
        raise NotifierError(msg, url=endpoint) from exc


def _endpoint(url: str, path: str) -> str:
    return url.rstrip("/") + path


def _encode_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    encoded = dict(alert)
    for key in ("startsAt", "endsAt"):
        value = encoded.get(key)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                msg = f"alert {key} {value} has no time zone; use a timezone-aware UTC datetime"
                raise ValueError(msg)
            encoded[key] = value.isoformat()
    return encoded


def _matcher(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"'


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + " …"
