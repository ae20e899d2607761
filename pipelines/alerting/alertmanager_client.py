"""A small client of Alertmanager's API v2 (`/api/v2/alerts`, `/-/ready`), over httpx.

An alert is a JSON object: `labels` (identity, e.g. `alertname`, `severity`, segment values),
`annotations` (summary, description, links), `startsAt`, optional `endsAt` (an alert whose
`endsAt` has passed is resolved) and optional `generatorURL`, timestamps in RFC 3339. Posting
the same labels again updates the alert; Alertmanager resolves an alert posted without `endsAt`
after its `resolve_timeout` unless it is posted again, so senders repeat firing alerts.

User information in the URL (`http://user:pass@host:9093`) is sent as HTTP basic
authentication, never in the request line; errors show the URL with it masked (`***@`).

Every call takes an optional `client` (`http_client`) whose connections it reuses; without
one it opens its own for the call. A notifier keeps one client for its lifetime.
"""

from __future__ import annotations

import functools
import json
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from pipelines.errors import SafewatchError
from pipelines.redact import redact_text, redact_url, url_secrets

_URL_SETTING = "SAFEWATCH_ALERTING__ALERTMANAGER_URL"
_BODY_EXCERPT = 300


class NotifierError(SafewatchError):
    """Alertmanager could not be reached, refused a request or answered nonsense.

    `url` is the endpoint called, its user information masked; `status` the HTTP status (None
    when there was no answer); `body` the start of the answer.
    """

    def __init__(
        self, message: str, *, url: str, status: int | None = None, body: str = ""
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


def post_alerts(
    url: str,
    alerts: Sequence[Mapping[str, Any]],
    timeout: float = 10.0,
    *,
    client: httpx.Client | None = None,
) -> None:
    """POST `alerts` to `url`/api/v2/alerts; return when Alertmanager has accepted them all.

    `startsAt`/`endsAt` may be timezone-aware datetimes or RFC 3339 strings. Raises ValueError
    for a naive datetime and NotifierError (with the URL, HTTP status and the start of
    Alertmanager's answer, which names the invalid field) when the alerts are not accepted.
    """
    payload = [_encode_alert(alert) for alert in alerts]
    _request(_endpoint(url, "/api/v2/alerts"), timeout, json.dumps(payload).encode(), client)


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
    client: httpx.Client | None = None,
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
    body = _request(f"{endpoint}?{urllib.parse.urlencode(params)}", timeout, client=client)
    endpoint = redact_url(endpoint)
    try:
        alerts = json.loads(body)
    except ValueError as exc:
        msg = f"Alertmanager at {endpoint} answered with invalid JSON: {_excerpt(body)}"
        raise NotifierError(msg, url=endpoint, status=200, body=_excerpt(body)) from exc
    if not isinstance(alerts, list):
        msg = f"Alertmanager at {endpoint} answered with {type(alerts).__name__}, not a list"
        raise NotifierError(msg, url=endpoint, status=200, body=_excerpt(body))
    return alerts


def ready(url: str, timeout: float = 2.0, *, client: httpx.Client | None = None) -> bool:
    """True when GET `url`/-/ready answers 200; False when it cannot be reached or is not ready."""
    try:
        _request(_endpoint(url, "/-/ready"), timeout, client=client)
    except NotifierError:
        return False
    return True


def http_client(timeout: float) -> httpx.Client:
    """An HTTP client for alert delivery; close it when done (it pools connections).

    `timeout` seconds for each of connecting, sending, reading and waiting for a pooled
    connection. Redirects are not followed: a POST redirected with 301, 302 or 303 would be
    sent on as a GET, whose 2xx would mark a notice delivered that never arrived; a redirect
    is an error that names the setting to correct instead. Certificates are checked against
    the system's trust store, not certifi's bundle, so that an internal CA the host trusts
    is trusted here too.
    Proxies come from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY).
    """
    return httpx.Client(
        timeout=httpx.Timeout(timeout), follow_redirects=False, verify=_system_trust()
    )


@functools.cache
def _system_trust() -> ssl.SSLContext:
    # One per process: loading the trust store costs tens of milliseconds.
    return ssl.create_default_context()


def split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """`url` without its user information, and that as basic authentication (None: none).

    httpx would send it as basic authentication too, but would keep it in the URL of every
    request, response and exception it builds; here it never enters them. Raises ValueError
    for a URL that cannot be split (the caller reports it as invalid, masked).
    """
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    auth = httpx.BasicAuth(urllib.parse.unquote(user), urllib.parse.unquote(password))
    return urllib.parse.urlunsplit(parts._replace(netloc=hostport)), auth


def _request(
    endpoint: str, timeout: float, data: bytes | None = None, client: httpx.Client | None = None
) -> bytes:
    """GET (or POST `data` as JSON) and return the body of a 2xx answer; NotifierError else.

    Errors show the endpoint without its user information, and the text of httpx's error
    and of the answer with any part of it masked.
    """
    if client is None:
        with http_client(timeout) as own:
            return _request(endpoint, timeout, data, own)
    method = "GET" if data is None else "POST"
    shown, secrets = redact_url(endpoint), url_secrets(endpoint)
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        url, auth = split_credentials(endpoint)
        response = client.request(
            method, url, content=data, headers=headers, auth=auth, timeout=timeout
        )
    except (ValueError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # No scheme or host, a bad port.
        msg = (
            f"{shown!r} is not a valid Alertmanager URL ({redact_text(str(exc), secrets)}); "
            f"check {_URL_SETTING}"
        )
        raise NotifierError(msg, url=shown) from exc
    except (httpx.HTTPError, OSError) as exc:
        msg = (
            f"cannot reach Alertmanager at {shown} ({redact_text(str(exc), secrets)}); "
            f"check that it runs and {_URL_SETTING}"
        )
        raise NotifierError(msg, url=shown) from exc
    if not response.is_success:
        # Alertmanager explains a rejected request in the body, e.g. "start time must be
        # before end time" or a JSON validation error naming the field.
        excerpt = redact_text(_excerpt(response.content), secrets)
        msg = f"Alertmanager at {shown} answered HTTP {response.status_code} to {method}: {excerpt}"
        if response.is_redirect:
            msg += f" (a redirect: set {_URL_SETTING} to the address it points to)"
        raise NotifierError(msg, url=shown, status=response.status_code, body=excerpt)
    return response.content


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
