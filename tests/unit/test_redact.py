"""What Safewatch shows of settings, URLs and error messages: tables written by hand."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from pydantic import SecretStr

from pipelines.alerting.alertmanager_client import NotifierError, post_alerts
from pipelines.alerting.outbox import WebhookNotifier
from pipelines.redact import (
    REDACTED,
    is_secret_key,
    redact_text,
    redact_tree,
    redact_webhook_url,
    url_secrets,
)

SECRET_NAMES = [
    "password",
    "sasl_password",
    "ssl.key.password",
    "ssl.truststore.password",
    "ssl.keystore.key",
    "sasl.jaas.config",
    "sasl.oauthbearer.client.credentials.client.secret",
    "spark.hadoop.fs.s3a.secret.key",
    "spark.hadoop.fs.s3a.access.key",
    "spark.hadoop.fs.s3a.session.token",
    "fs.azure.account.key.myaccount.blob.core.windows.net",
    "spark.ssl.keyPassword",
    "spark.authenticate.secret",
    "basic.auth.user.info",
    "api_key",
    "apiKey",
    "APIKEY",
    "db_passwd",
    "Authorization",
    "X-Auth-Token",
    "client_credentials",
    "keystorepassword",
    "token",
]
PLAIN_NAMES = [
    "bootstrap.servers",
    "key.serializer",
    "key.deserializer",
    "value.serializer",
    "ssl.keystore.location",
    "ssl.key.location",
    "ssl.keystore.type",
    "sasl.mechanism",
    "sasl.kerberos.service.name",
    "sasl.login.callback.handler.class",
    "sasl.oauthbearer.token.endpoint.url",
    "fs.s3a.aws.credentials.provider",
    "fs.azure.account.auth.type",
    "spark.authenticate",
    "request.timeout.ms",
    "max_tokens",
    "monkey",
    "keyboard",
    "alertmanager_url",
    "sasl_username",
    "spark.sql.shuffle.partitions",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert is_secret_key(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_names(name):
    assert not is_secret_key(name)


TEXTS = [
    # URL user information, whatever the scheme, several in one text
    ("http://am:hunter2@127.0.0.1:9093/", "http://***@127.0.0.1:9093/"),
    (
        "from postgresql+psycopg://bob:s3cr%40t@db.internal:5432/wh to s3a://AKIA:XYZ@bucket/p",
        "from postgresql+psycopg://***@db.internal:5432/wh to s3a://***@bucket/p",
    ),
    ("https://user@host/x", "https://***@host/x"),
    ("pa@ss in http://u:pa@ss@h:1/p", "pa@ss in http://***@h:1/p"),
    # no user information: unchanged (an @ in the path is not one)
    ("https://host:8443/@team/hook", "https://host:8443/@team/hook"),
    ("mail me at ops@example.com", "mail me at ops@example.com"),
    # secret-named pairs: JAAS, query strings, dict reprs, JSON
    (
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="svc" '
        'password="hunter2";',
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="svc" '
        'password="***";',
    ),
    ("GET /api/v2/alerts?token=abc123&active=true", "GET /api/v2/alerts?token=***&active=true"),
    ("x?api_key=k-123#frag", "x?api_key=***#frag"),
    (
        "{'sasl.jaas.config': 'a b c', 'acks': 'all'}",
        "{'sasl.jaas.config': '***', 'acks': 'all'}",
    ),
    (
        '{"ssl.key.password": "p\\"w", "linger.ms": "5"}',
        '{"ssl.key.password": "***", "linger.ms": "5"}',
    ),
    ("key.serializer=org.Foo timeout=5", "key.serializer=org.Foo timeout=5"),
    ("--ssl.key.password=hunter2 --linger.ms=5", "--ssl.key.password=*** --linger.ms=5"),
    # credentials of an Authorization header
    ("Authorization: Bearer eyJhbGciOi.xyz", "Authorization: Bearer ***"),
    ("Basic dXNlcjpwYXNz", "Basic ***"),
    # ordinary error text is left alone
    (
        "cannot reach Alertmanager at http://127.0.0.1:9/api/v2/alerts ([Errno 111] "
        "Connection refused); check SAFEWATCH_ALERTING__ALERTMANAGER_URL",
        "cannot reach Alertmanager at http://127.0.0.1:9/api/v2/alerts ([Errno 111] "
        "Connection refused); check SAFEWATCH_ALERTING__ALERTMANAGER_URL",
    ),
]


@pytest.mark.parametrize(("text", "expected"), TEXTS)
def test_redact_text(text, expected):
    assert redact_text(text) == expected


SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


def test_known_secrets_are_masked_wherever_a_library_quoted_them():
    # requests quotes the path of the URL it was given; other libraries decode it.
    secrets = url_secrets(SLACK + "?sig=abc%2Fdef", path=True)
    text = (
        "HTTPSConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded with url: "
        "/services/T000/B000/XXXXSECRET?sig=abc%2Fdef; decoded: sig=abc/def; whole: "
        + SLACK
        + "?sig=abc%2Fdef"
    )
    assert redact_text(text, secrets) == (
        "HTTPSConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded with url: "
        "***; decoded: ***; whole: ***"
    )
    assert redact_text("it refused user svc-writer", url_secrets("http://svc-writer:pw@h/")) == (
        "it refused user ***"
    )


def test_url_secrets():
    assert url_secrets("http://u:pw@h:1/a/b") == ("pw", "u", "u:pw")
    assert url_secrets("http://h:1/a/b") == ()
    assert url_secrets("http://h:1/a/b/?q=1#f", path=True) == (
        "http://h:1/a/b/?q=1#f",
        "/a/b",
        "q=1",
        "f",
        "/a/b?q=1",
    )
    assert url_secrets("http://h:1/", path=True) == ("http://h:1/",)


WEBHOOKS = [
    (SLACK, "https://hooks.slack.com/***"),
    ("http://user:pw@127.0.0.1:8080/hook?token=t", "http://127.0.0.1:8080/***"),
    ("http://127.0.0.1:8080?token=t", "http://127.0.0.1:8080/***"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("http://[::1]:9/x", "http://[::1]:9/***"),
    ("hooks.slack.com/services/T/B/X", REDACTED),
    ("http://host:notaport/x", REDACTED),
]


@pytest.mark.parametrize(("url", "expected"), WEBHOOKS)
def test_redact_webhook_url(url, expected):
    assert redact_webhook_url(url) == expected


def test_redact_tree():
    tree = {
        "kafka": {
            "sasl_password": SecretStr("s"),
            "sasl_username": "svc",
            "client_options": {"ssl.key.password": "k", "linger.ms": "5"},
            "unset_secret": None,
        },
        "warehouse": {"url": SecretStr("postgresql://u:p@h/db")},
        "alerting": {"alertmanager_url": "http://u:p@h:1/", "channels": ("kafka",), "port": 9},
        "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "x", "spark.ui.port": "4040"}},
        "token": None,
    }
    assert redact_tree(tree) == {
        "kafka": {
            "sasl_password": "***",
            "sasl_username": "svc",
            "client_options": {"ssl.key.password": "***", "linger.ms": "5"},
            "unset_secret": None,
        },
        "warehouse": {"url": "***"},
        "alerting": {"alertmanager_url": "http://***@h:1/", "channels": ["kafka"], "port": 9},
        "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "***", "spark.ui.port": "4040"}},
        "token": None,
    }


class _Echo(BaseHTTPRequestHandler):
    """Refuses every request with 401 and a body quoting the request: path and credentials."""

    seen: list[tuple[str, str]] = []

    def do_POST(self):
        auth = self.headers.get("Authorization", "")
        self.seen.append((self.path, auth))
        decoded = base64.b64decode(auth.removeprefix("Basic ")).decode() if auth else ""
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(401)
        self.end_headers()
        self.wfile.write(f"bad credentials {decoded} for {self.path}".encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    server = HTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Echo.seen = []
    try:
        yield server.server_port
    finally:
        server.shutdown()


def test_alertmanager_credentials_go_as_basic_auth_and_never_into_the_error(echo_server):
    url = f"http://am-user:Pa55-SENTINEL@127.0.0.1:{echo_server}/prefix"
    with pytest.raises(NotifierError) as caught:
        post_alerts(url, [{"labels": {"alertname": "A"}}], timeout=5)
    expected_auth = "Basic " + base64.b64encode(b"am-user:Pa55-SENTINEL").decode()
    assert _Echo.seen == [("/prefix/api/v2/alerts", expected_auth)]
    error = caught.value
    assert "Pa55-SENTINEL" not in str(error) and "am-user" not in str(error)
    assert str(error) == (
        f"Alertmanager at http://***@127.0.0.1:{echo_server}/prefix/api/v2/alerts answered "
        "HTTP 401 to POST: bad credentials *** for /prefix/api/v2/alerts"
    )
    assert error.url == f"http://***@127.0.0.1:{echo_server}/prefix/api/v2/alerts"


def test_webhook_errors_show_only_scheme_host_and_port(echo_server):
    url = f"http://hook:PW-SENTINEL@127.0.0.1:{echo_server}/services/T0/B0/PATH-SENTINEL?t=Q-S"
    with pytest.raises(NotifierError) as caught:
        WebhookNotifier(url, timeout=5).send([{"a": 1}])
    assert _Echo.seen[0][0] == "/services/T0/B0/PATH-SENTINEL?t=Q-S"
    assert _Echo.seen[0][1] == "Basic " + base64.b64encode(b"hook:PW-SENTINEL").decode()
    assert str(caught.value) == f"webhook http://127.0.0.1:{echo_server}/*** answered HTTP 401"
    with pytest.raises(NotifierError) as invalid:
        WebhookNotifier("http://127.0.0.1:PORT-SENTINEL/x", timeout=5).send([{"a": 1}])
    assert "SENTINEL" not in str(invalid.value)
    assert "NOTIFY_WEBHOOK_URL" in str(invalid.value)


def test_prometheus_gets_alertmanager_credentials_as_basic_auth_and_errors_hide_them():
    from pipelines.errors import ConfigError
    from pipelines.infra.prometheus import prometheus_config
    from pipelines.settings import AlertingSettings

    config = prometheus_config(
        AlertingSettings(),
        rule_files="r.yml",
        alertmanager_url="https://am%40ops:p%3Ass@am.example.org:9443/",
    )
    assert config["alerting"]["alertmanagers"] == [
        {
            "scheme": "https",
            "api_version": "v2",
            "static_configs": [{"targets": ["am.example.org:9443"]}],
            "basic_auth": {"username": "am@ops", "password": "p:ss"},
        }
    ]
    with pytest.raises(ConfigError) as caught:
        prometheus_config(
            AlertingSettings(), rule_files="r.yml", alertmanager_url="ftp://u:SECRET@h"
        )
    assert "SECRET" not in str(caught.value) and "ftp://***@h" in str(caught.value)


class _LeakyNotifier:
    """A channel whose errors quote what it was given (as some client libraries do)."""

    channel = "leaky"

    def send(self, payloads):
        msg = "rejected POST http://svc:hunter2@10.0.0.1/hook with api_key=k-SENTINEL-1"
        raise NotifierError(msg, url="http://10.0.0.1")


def test_deliver_masks_what_a_notifier_left_in_its_error(tmp_path):
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from pipelines.alerting.outbox import deliver
    from pipelines.warehouse.engine import make_engine
    from pipelines.warehouse.migrate import migrate
    from pipelines.warehouse.tables import Tables

    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    migrate(engine)
    outbox = Tables(engine).outbox
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(outbox),
            [
                {
                    "channel": "leaky",
                    "dedup_key": "k",
                    "payload": "{}",
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
            ],
        )
    logged: list[str] = []
    report = deliver(engine, {"leaky": _LeakyNotifier()}, now=now, log=logged.append)
    expected = "rejected POST http://***@10.0.0.1/hook with api_key=***"
    assert report.errors == (expected,)
    assert logged == [f"alerts: leaky delivery failed (1 pending, retried): {expected}"]
    with engine.connect() as conn:
        assert conn.execute(select(outbox.c.last_error)).scalar_one() == expected


def test_spark_redaction_regex_matches_every_secret_name_and_no_common_plain_one():
    import re

    from pipelines.redact import SPARK_REDACTION_REGEX

    pattern = re.compile(SPARK_REDACTION_REGEX)
    # Spark matches key or value with find(): Python's search is the same for this regex.
    missed = [n for n in SECRET_NAMES if not pattern.search(n)]
    assert missed == []
    plain = [
        "bootstrap.servers",
        "request.timeout.ms",
        "spark.sql.shuffle.partitions",
        "spark.ui.port",
        "sasl.mechanism",
        "spark.authenticate",
        "monkey",
        "keyboard",
    ]
    assert [n for n in plain if pattern.search(n)] == []
    # Coarser than is_secret_key (a substring for camelCase keys): Spark masks a little more.
    assert pattern.search("max_tokens") and pattern.search("key.serializer")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 200_000, None),
        ("a." * 100_000, None),
        ("a-" * 100_000, None),
        ("http://" + "a" * 200_000, None),
        ("x://" + "@" * 200_000, "x://***@"),
        ("k=" * 100_000, None),
    ],
)
def test_redaction_time_grows_linearly_with_the_text(text, expected):
    import time

    began = time.monotonic()
    assert redact_text(text) == (text if expected is None else expected)
    # Linear: well under a second here; a quadratic scan of 200,000 characters takes minutes.
    assert time.monotonic() - began < 5.0
