"""No secret is printed: sentinel secrets in every secret-bearing setting never reach the output
of `safewatch config show`, the logs and errors of a failed alert delivery, `alerts status`, or
the outbox's `last_error` column (SQLite and PostgreSQL).

Each sentinel is a unique string set through the environment variables a deployment uses
(`SAFEWATCH_<SECTION>__<NAME>`) or the TOML file; the assertions search every captured byte
for each of them. The non-secret values next to them are asserted to be shown, so the
output is not simply blank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from jobs.cli import main
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.tables import Tables

pytestmark = pytest.mark.integration

SENTINELS = {
    "kafka_sasl": "S3NT-KAFKA-SASL-PW",
    "jaas": "S3NT-JAAS-PW",
    "ssl_key": "S3NT-SSL-KEY-PW",
    "keystore_key": "S3NT-KEYSTORE-PEM",
    "s3_secret": "S3NT-S3-SECRET-KEY",
    "s3_access": "S3NT-S3-ACCESS-KEY",
    "spark_auth": "S3NT-SPARK-AUTH-SECRET",
    "checkpoint_user": "S3NT-CKPT-USER",
    "checkpoint_pw": "S3NT-CKPT-PW",
    "am_user": "S3NT-AM-USER",
    "am_pw": "S3NT-AM-PW",
    "hook_user": "S3NT-HOOK-USER",
    "hook_pw": "S3NT-HOOK-PW",
    "hook_path": "S3NT-HOOK-PATH",
    "hook_query": "S3NT-HOOK-QUERY",
    "local_hook_path": "S3NT-LOCAL-AM-HOOK",
    "runbook_pw": "S3NT-RUNBOOK-PW",
    "warehouse_pw": "S3NT-WAREHOUSE-PW",
    "toml_option": "S3NT-TOML-OPTION-PW",
}
S = SENTINELS


@pytest.fixture
def closed_port():
    """A loopback port bound for the whole test but never listening: connections are refused."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield int(reserved.getsockname()[1])


def _environment(port: int, warehouse_url: str) -> dict[str, str]:
    """Every secret-bearing setting, with a sentinel in each secret part."""
    return {
        "SAFEWATCH_KAFKA__SASL_MECHANISM": "PLAIN",
        "SAFEWATCH_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "SAFEWATCH_KAFKA__SASL_USERNAME": "svc-safewatch",
        "SAFEWATCH_KAFKA__SASL_PASSWORD": S["kafka_sasl"],
        "SAFEWATCH_KAFKA__CLIENT_OPTIONS": json.dumps(
            {
                "sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule "
                f'required username="svc" password="{S["jaas"]}";',
                "ssl.key.password": S["ssl_key"],
                "ssl.keystore.key": S["keystore_key"],
                "request.timeout.ms": "5000",
            }
        ),
        "SAFEWATCH_SPARK__CONF": json.dumps(
            {
                "spark.hadoop.fs.s3a.secret.key": S["s3_secret"],
                "spark.hadoop.fs.s3a.access.key": S["s3_access"],
                "spark.authenticate.secret": S["spark_auth"],
                "spark.ui.port": "4050",
            }
        ),
        "SAFEWATCH_STREAM__CHECKPOINT_DIR": (
            f"s3a://{S['checkpoint_user']}:{S['checkpoint_pw']}@bucket/checkpoints"
        ),
        "SAFEWATCH_ALERTING__CHANNELS": "alertmanager,webhook",
        "SAFEWATCH_ALERTING__ALERTMANAGER_URL": (
            f"http://{S['am_user']}:{S['am_pw']}@127.0.0.1:{port}/"
        ),
        "SAFEWATCH_ALERTING__NOTIFY_WEBHOOK_URL": (
            f"http://{S['hook_user']}:{S['hook_pw']}@127.0.0.1:{port}"
            f"/services/T000/B000/{S['hook_path']}?token={S['hook_query']}"
        ),
        "SAFEWATCH_ALERTING__WEBHOOK_URL": (
            f"https://hooks.example.com/services/{S['local_hook_path']}"
        ),
        "SAFEWATCH_ALERTING__RUNBOOK_BASE_URL": (
            f"https://reader:{S['runbook_pw']}@git.example.com/safewatch/blob/main/"
        ),
        "SAFEWATCH_ALERTING__REQUEST_TIMEOUT_S": "3",
        "SAFEWATCH_WAREHOUSE__URL": warehouse_url,
    }


def _assert_no_sentinel(text: str, where: str) -> None:
    leaked = sorted(name for name, value in SENTINELS.items() if value in text)
    assert not leaked, f"{where} shows the secret(s) {leaked}:\n{text}"


def test_config_show_prints_no_secret(tmp_path, closed_port):
    port = closed_port
    config = tmp_path / "safewatch.toml"
    config.write_text(
        f'[kafka.client_options]\n"basic.auth.user.info" = "svc:{S["toml_option"]}"\n'
        '"linger.ms" = "7"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEWATCH_")}
    env |= _environment(
        port, f"postgresql+psycopg://writer:{S['warehouse_pw']}@db.example.com/safewatch"
    )
    env["SAFEWATCH_CONFIG"] = str(config)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("safewatch")), "config", "show"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _assert_no_sentinel(result.stdout + result.stderr, "safewatch config show")
    shown = json.loads(result.stdout)
    kafka, spark, alerting = shown["kafka"], shown["spark"], shown["alerting"]
    assert kafka["sasl_password"] == "***" and kafka["sasl_username"] == "svc-safewatch"
    assert kafka["client_options"] == {
        "sasl.jaas.config": "***",
        "ssl.key.password": "***",
        "ssl.keystore.key": "***",
        "request.timeout.ms": "5000",
        "basic.auth.user.info": "***",  # from the file, merged with the environment's options
        "linger.ms": "7",
    }
    assert spark["conf"] == {
        "spark.hadoop.fs.s3a.secret.key": "***",
        "spark.hadoop.fs.s3a.access.key": "***",
        "spark.authenticate.secret": "***",
        "spark.ui.port": "4050",
    }
    assert shown["stream"]["checkpoint_dir"] == "s3a://***@bucket/checkpoints"
    assert alerting["alertmanager_url"] == f"http://***@127.0.0.1:{port}/"
    assert alerting["notify_webhook_url"] == "***" and alerting["webhook_url"] == "***"
    assert alerting["runbook_base_url"] == "https://***@git.example.com/safewatch/blob/main/"
    assert alerting["channels"] == ["alertmanager", "webhook"]
    assert shown["warehouse"]["url"] == "***"


def _pending_notice(engine) -> None:
    """One firing notice per channel waiting in the outbox, as the alert engine writes it."""
    now = datetime.now(UTC)
    payload = {
        "labels": {"alertname": "HarmfulOutputSpike", "locale": "de-DE"},
        "annotations": {"summary": "Harmful output 15.0% in de-DE"},
        "startsAt": now.isoformat(),
        "endsAt": now.isoformat(),
        "status": "firing",
    }
    with engine.begin() as conn:
        conn.execute(
            insert(Tables(engine).outbox),
            [
                {
                    "channel": channel,
                    "dedup_key": f"HarmfulOutputSpike|locale=de-DE|{channel}",
                    "payload": json.dumps(payload),
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_error": None,
                    "sent_at": None,
                }
                for channel in ("alertmanager", "webhook")
            ],
        )


def _failed_delivery_prints_no_secret(warehouse_url, port, monkeypatch, capfd) -> None:
    engine = make_engine(warehouse_url.replace(f":{S['warehouse_pw']}@", "@"))
    migrate(engine)
    _pending_notice(engine)
    for key in [k for k in os.environ if k.startswith("SAFEWATCH_")]:
        monkeypatch.delenv(key)
    for key, value in _environment(port, warehouse_url).items():
        monkeypatch.setenv(key, value)

    assert main(["alerts", "deliver"]) == 1  # both notices still pending
    assert main(["alerts", "status"]) == 0
    out, err = capfd.readouterr()
    _assert_no_sentinel(out + err, "safewatch alerts deliver/status")
    assert "alertmanager delivery failed" in out and "webhook delivery failed" in out
    assert "notice(s) waiting in the outbox; last error:" in out

    t = Tables(engine).outbox
    with engine.connect() as conn:
        rows = {
            r.channel: r for r in conn.execute(select(t.c.channel, t.c.last_error, t.c.attempts))
        }
    assert {c: r.attempts for c, r in rows.items()} == {"alertmanager": 1, "webhook": 1}
    for channel, row in rows.items():
        _assert_no_sentinel(row.last_error, f"last_error of the {channel} notice")
    # The errors still say where delivery went and why, without the secrets.
    assert rows["alertmanager"].last_error.startswith(
        f"cannot reach Alertmanager at http://***@127.0.0.1:{port}/api/v2/alerts ("
    )
    assert rows["webhook"].last_error.startswith(
        f"cannot reach the webhook http://127.0.0.1:{port}/*** ("
    )
    assert all("refused" in r.last_error.lower() for r in rows.values())


def test_failed_delivery_prints_and_stores_no_secret_sqlite(
    tmp_path, closed_port, monkeypatch, capfd
):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    _failed_delivery_prints_no_secret(url, closed_port, monkeypatch, capfd)


def test_failed_delivery_prints_and_stores_no_secret_postgres(
    postgres, closed_port, monkeypatch, capfd
):
    url = postgres.create_database("no_secret_printed")  # trust auth: the password is ignored
    assert url.startswith("postgresql+psycopg://postgres@")
    url = url.replace("://postgres@", f"://postgres:{S['warehouse_pw']}@")
    _failed_delivery_prints_no_secret(url, closed_port, monkeypatch, capfd)


def test_spark_masks_secret_looking_conf_entries_and_options(spark):
    """Spark's own redaction (UI environment page, event logs) uses Safewatch's names."""
    jvm = spark._jvm
    pairs = [
        ("spark.hadoop.fs.azure.account.key.acct.blob.core.windows.net", S["s3_secret"]),
        ("kafka.sasl.jaas.config", f'x required username="svc" password="{S["jaas"]}";'),
        ("kafka.ssl.key.password", S["ssl_key"]),
        ("spark.hadoop.fs.s3a.access.key", S["s3_access"]),
        ("basic.auth.user.info", f"svc:{S['toml_option']}"),
        ("spark.ui.port", "4050"),
        ("kafka.bootstrap.servers", "10.0.0.1:9092"),
    ]
    values = jvm.java.util.ArrayList()
    for key, value in pairs:
        values.add(jvm.scala.Tuple2(key, value))
    scala_pairs = jvm.scala.jdk.javaapi.CollectionConverters.asScala(values).toSeq()
    redacted = jvm.org.apache.spark.util.Utils.redact(spark._jsc.sc().conf(), scala_pairs)
    shown = {}
    iterator = redacted.iterator()
    while iterator.hasNext():
        pair = iterator.next()
        shown[pair._1()] = pair._2()
    masked = "*********(redacted)"  # Spark's marker
    assert shown == {
        "spark.hadoop.fs.azure.account.key.acct.blob.core.windows.net": masked,
        "kafka.sasl.jaas.config": masked,
        "kafka.ssl.key.password": masked,
        "spark.hadoop.fs.s3a.access.key": masked,
        "basic.auth.user.info": masked,
        "spark.ui.port": "4050",
        "kafka.bootstrap.servers": "10.0.0.1:9092",
    }
