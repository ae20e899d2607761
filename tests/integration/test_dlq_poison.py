"""Poison records reach the dead-letter topic of a real broker, each bounded and scrubbed."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.kafka.admin import ensure_topics
from pipelines.privacy.scrub import PAYLOAD_PREFIX_BYTES
from pipelines.settings import KafkaSettings
from pipelines.stream.dlq import dlq_records, rejected_event, write_dlq
from tests.integration.streaming_support import consume_all

pytestmark = pytest.mark.integration

# Built from parts so that no test file holds a ready-made string a scanner would flag.
EMAIL = "jane.doe" + "@" + "example.org"
CARD = "4111" + "1111" * 3
# An independent scanner, deliberately simpler than pipelines/privacy.
RAW_SECRETS = [
    re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    re.compile(rb"4111[ -]?1111[ -]?1111[ -]?1111"),
    re.compile(rb"BEGIN PRIVATE KEY"),
]
SMALL_CAP = 100_000
DEFAULT_CAP: int = KafkaSettings.model_fields["dlq_max_record_bytes"].default

SCHEMA = T.StructType(
    [
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("kafka_timestamp", T.TimestampType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("errors", T.ArrayType(T.StringType())),
        T.StructField("detectors", T.ArrayType(T.StringType())),
        T.StructField("status", T.StringType()),
    ]
)


def _poisons() -> list[tuple[bytes | None, str, list[str]]]:
    """(value, reason, errors) of records that used to stall the job or break the DLQ."""
    filler = f"text with {EMAIL} and {CARD}, ".encode()
    big = b'{"excerpts":{"prompt":"' + filler * (2_000_000 // len(filler)) + b'"}}'
    return [
        (b"[" * 800 + b"]" * 800, "invalid_json", ["invalid_json|$: not an object"]),
        (b'{"a":' * 800 + f'"{EMAIL}"'.encode() + b"}" * 800, "invalid_json", []),
        (b'{"n":' + b"7" * 5000 + b"}", "schema_violation", ["schema_violation|$: missing"]),
        (b'{"a":"\\ud800","\\udc00":1}', "invalid_json", ["invalid_json|$: lone surrogate"]),
        (b'{"p":"\xff\xfe ' + EMAIL.encode() + b'"}', "schema_violation", []),
        (big, "message_too_large", [f"message_too_large|$: {len(big)} bytes"]),
        (b"-----BEGIN PRIVATE KEY-----\n" * 33_000, "message_too_large", []),
        (b'["' + b"\\u0001" * 20_000 + b'"]', "message_too_large", []),
        (f'{{"excerpts":{{"prompt":{CARD}}}}}'.encode(), "pii_detected", []),
        (
            b"{}",
            "schema_violation",
            [
                f"schema_violation|$.f{i}: unexpected field(s) {EMAIL} " + "k," * 3000
                for i in range(300)
            ],
        ),
        (None, "invalid_json", ["invalid_json|$: no value"]),
    ]


def test_poison_records_reach_the_dlq_bounded_and_scrubbed(
    spark, kafka_broker, unique_topic
) -> None:
    source, dlq = unique_topic("poison"), unique_topic("dlq")
    kafka = kafka_broker.kafka.model_copy(update={"topic_dlq": dlq})
    ensure_topics(kafka, [dlq])
    stamp = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    poisons = _poisons()
    rows = [
        (source, 0, offset, stamp, value, errors, ["email"], reason)
        for offset, (value, reason, errors) in enumerate(poisons)
    ]
    # With a disposition column (some null) and the small cap; without one and the default.
    with_disposition = spark.createDataFrame(rows, SCHEMA).withColumn(
        "disposition", F.when(F.col("offset") % 2 == 0, F.lit("counted"))
    )
    again = [(source, 1, *row[2:]) for row in rows]
    records = dlq_records(
        with_disposition, query_id="q-1", batch_id=7, max_record_bytes=SMALL_CAP
    ).unionByName(dlq_records(spark.createDataFrame(again, SCHEMA), query_id="q-1", batch_id=7))
    write_dlq(records, kafka)

    messages = consume_all(kafka, dlq)
    by_key = {m.key.decode(): m.value for m in messages}
    expected_keys = {f"{source}:{p}:{o}" for p in (0, 1) for o in range(len(poisons))}
    assert set(by_key) == expected_keys and len(messages) == len(expected_keys)
    for key, value in by_key.items():
        _, partition, offset = key.rsplit(":", 2)
        original, reason, _errors = poisons[int(offset)]
        cap = SMALL_CAP if partition == "0" else DEFAULT_CAP
        assert len(value) <= cap, key
        for scanner in RAW_SECRETS:
            assert scanner.search(value) is None, (key, scanner.pattern)
        record = json.loads(value.decode("utf-8"))
        assert record["reason"] == reason
        assert record["disposition"] == (
            "counted" if partition == "0" and int(offset) % 2 == 0 else "rejected"
        )
        assert len(record["errors"]) <= 21
        if original is None:
            assert "payload" not in record
            continue
        assert record["payload_bytes"] == len(original)
        if len(original) > PAYLOAD_PREFIX_BYTES:
            assert record["payload_truncated"] is True
            assert record["payload_sha256"] == hashlib.sha256(original).hexdigest()
            assert len(record["payload"]) <= PAYLOAD_PREFIX_BYTES
        row = rejected_event(json.loads(value))
        assert (row["topic"], row["kafka_partition"], row["kafka_offset"]) == (
            source,
            int(partition),
            int(offset),
        )
        assert row["reason"] == reason and row["kafka_timestamp"] is not None

    card = json.loads(by_key[f"{source}:1:8"])
    assert card["payload"] == '{"excerpts":{"prompt":"[CARD]"}}'
    assert card["payload_truncated"] is False and "payload_sha256" not in card
