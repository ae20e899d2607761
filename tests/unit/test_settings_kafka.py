"""KafkaSettings' translation into Spark and kafka-python client options."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from pipelines.settings import KafkaSettings, Settings

PASSWORD = "s3cr3t-pa55"


def sasl(mechanism: str, **extra: object) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username="svc",
        sasl_password=SecretStr(PASSWORD),
        **extra,
    )


def test_defaults_are_plaintext_localhost() -> None:
    kafka = KafkaSettings()

    assert kafka.spark_options() == {
        "kafka.bootstrap.servers": "127.0.0.1:9092",
        "kafka.security.protocol": "PLAINTEXT",
    }
    assert kafka.python_client_options() == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "PLAINTEXT",
    }


def test_bootstrap_servers_are_split_for_kafka_python_only() -> None:
    kafka = KafkaSettings(bootstrap_servers="a:1,b:2")

    assert kafka.python_client_options()["bootstrap_servers"] == ["a:1", "b:2"]
    assert kafka.spark_options()["kafka.bootstrap.servers"] == "a:1,b:2"


def test_sasl_plain_builds_plain_jaas_config() -> None:
    opts = sasl("PLAIN").spark_options()

    assert opts["kafka.security.protocol"] == "SASL_SSL"
    assert opts["kafka.sasl.mechanism"] == "PLAIN"
    assert opts["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="svc" password="{PASSWORD}";'
    )


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_scram_builds_scram_jaas_config(mechanism: str) -> None:
    opts = sasl(mechanism).spark_options()

    assert opts["kafka.sasl.mechanism"] == mechanism
    assert opts["kafka.sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
    )
    assert f'password="{PASSWORD}"' in opts["kafka.sasl.jaas.config"]


def test_sasl_without_credentials_sets_no_jaas_config() -> None:
    opts = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN").spark_options()

    assert opts["kafka.sasl.mechanism"] == "PLAIN"
    assert "kafka.sasl.jaas.config" not in opts


def test_sasl_credentials_reach_kafka_python() -> None:
    opts = sasl("SCRAM-SHA-512").python_client_options()

    assert opts == {
        "bootstrap_servers": ["b1:9093", "b2:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": PASSWORD,
    }


def test_ssl_cafile_becomes_pem_truststore_and_kafka_python_cafile() -> None:
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile="/etc/ssl/kafka-ca.pem")

    spark = kafka.spark_options()
    assert spark["kafka.ssl.truststore.type"] == "PEM"
    assert spark["kafka.ssl.truststore.location"] == "/etc/ssl/kafka-ca.pem"
    assert kafka.python_client_options()["ssl_cafile"] == "/etc/ssl/kafka-ca.pem"


def test_client_options_pass_through_to_spark_with_prefix_and_win() -> None:
    kafka = KafkaSettings(
        client_options={"request.timeout.ms": "60000", "security.protocol": "SSL"}
    )

    spark = kafka.spark_options()
    assert spark["kafka.request.timeout.ms"] == "60000"
    assert spark["kafka.security.protocol"] == "SSL"
    # kafka-python takes different (Python) names, so Java properties are not forwarded.
    assert "request.timeout.ms" not in kafka.python_client_options()


def test_password_is_not_in_repr_or_str() -> None:
    kafka = sasl("PLAIN")
    settings = Settings(kafka=kafka)

    for text in (repr(kafka), str(kafka), repr(settings), str(settings)):
        assert PASSWORD not in text
    assert PASSWORD not in kafka.model_dump_json()


def test_settings_are_frozen() -> None:
    kafka = KafkaSettings()
    with pytest.raises(ValueError, match="frozen"):
        kafka.partitions = 7  # type: ignore[misc]
