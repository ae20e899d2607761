"""Bad input never crashes, never leaks, never vanishes: real broker, real Spark job."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, Table, func, select

from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_raw
from pipelines.settings import ContractSettings, QualitySettings
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.queries import aggregate_rows, ledger_rows
from tests.integration.mixed_input import KINDS, REDACTED, build_mixed_input
from tests.integration.streaming_support import (
    consume_all,
    ground_truth,
    make_settings,
    warehouse_table,
)

pytestmark = pytest.mark.integration

MAX_BYTES = 8192
# An independent scanner, deliberately simpler than pipelines/privacy: it must find any
# e-mail address or the planted card number in what Safewatch wrote.
INDEPENDENT_PII = [
    re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    re.compile(rb"4111[ -]?1111[ -]?1111[ -]?1111"),
    re.compile(rb"\+44 20 7946 \d{4}"),
    re.compile(rb"203\.0\.113\.\d{1,3}"),
]


def _dump_warehouse(url: str) -> bytes:
    engine = make_engine(url)
    md = MetaData()
    md.reflect(engine)
    out = []
    with engine.connect() as conn:
        for table in md.sorted_tables:
            # Sketches are binary: random bytes could look like anything to a regex.
            columns = [c for c in table.columns if c.name != "users_sketch"]
            for row in conn.execute(select(*columns)):
                out.append(repr(tuple(row)).encode())
    return b"\n".join(out)


def _files_bytes(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def _check_mixed_run(spark, kafka_broker, unique_topic, tmp, *, seed, counts, garbage, url) -> None:
    """Produce the mixed input of `counts` broken records per kind, run the job over it
    into the warehouse at `url`, and check every outcome against the records' ground truth.
    """
    rng = random.Random(seed)
    kinds = [k for k, n in counts.items() for _ in range(n)]
    topic, dlq = unique_topic("mixed"), unique_topic("dlq")
    ensure_topics(kafka_broker.kafka, [topic, dlq])
    records = build_mixed_input(
        rng, seed=seed, valid=1500, kinds=kinds,
        max_message_bytes=MAX_BYTES, garbage=garbage,
    )  # fmt: skip
    produce_raw(kafka_broker.kafka, topic, [r.payload for r in records])
    base = make_settings(kafka_broker.kafka, topic, tmp / "ckpt", url, max_offsets=1200)
    job_settings = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_dlq": dlq}),
            "contract": ContractSettings(
                max_message_bytes=MAX_BYTES, dedup_state_dir=str(tmp / "dedup")
            ),
            "quality": QualitySettings(max_rows=100_000),
        }
    )
    logs: list[str] = []
    from jobs.streaming_aggregator import run

    run(spark, job_settings, until_caught_up=True, log=logs.append)

    expected = Counter(r.expected for r in records)
    rejected_expected = {k: v for k, v in expected.items() if k not in ("aggregated", "duplicate")}
    engine = make_engine(url)
    ledger = ledger_rows(engine)
    # Accounting closes, batch by batch and in total.
    for row in ledger:
        rejected = json.loads(row["rejected_by_reason"])
        assert sum(rejected.values()) == row["rejected_rows"]
        assert row["input_rows"] == (
            row["aggregated_rows"] + row["rejected_rows"] + row["late_rows"] + row["duplicate_rows"]
        )
    total_rejected = Counter()
    for row in ledger:
        total_rejected.update(json.loads(row["rejected_by_reason"]))
    assert sum(r["input_rows"] for r in ledger) == len(records)
    assert sum(r["aggregated_rows"] for r in ledger) == expected["aggregated"]
    assert sum(r["duplicate_rows"] for r in ledger) == expected["duplicate"]
    assert sum(r["late_rows"] for r in ledger) == 0
    assert dict(total_rejected) == rejected_expected

    # Aggregates hold exactly the counted events, once each: those whose text held personal
    # data too, by their structured fields, a planted segment value as [REDACTED].
    counted_events = [r.event for r in records if r.expected == "aggregated"]
    assert warehouse_table(aggregate_rows(engine)) == ground_truth(counted_events)
    rows = aggregate_rows(engine)
    assert sum(r["redaction_failures"] for r in rows) == sum(r.text_dropped for r in records)
    if counts.get("pii_segment") or counts.get("schema_pii"):
        assert any(r["model_version"] == REDACTED or r["locale"] == REDACTED for r in rows)
    # Telemetry completeness: events attributable to a segment (valid segment and time) and,
    # of those, the ones with every safety field.
    assert sum(r["events_seen"] for r in rows) == sum(r.attributable for r in records)
    assert sum(r["telemetry_complete"] for r in rows) == sum(
        r.attributable and not r.incomplete for r in records
    )
    # The quality suite saw the planted out-of-set risk tiers, exactly.
    quality = Table("quality_results", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        bad_tiers = conn.execute(
            select(func.sum(quality.c.unexpected_count)).where(
                quality.c.column_name == "segment__risk_tier",
                quality.c.expectation_type == "expect_column_values_to_be_in_set",
            )
        ).scalar()
    assert (bad_tiers or 0) == counts.get("enum", 0)

    # The DLQ holds every reject once, with the reason its record was built to have, and a
    # masked copy of each counted record whose text held personal data (pii_detected,
    # disposition counted).
    by_payload: dict[bytes, set[str | None]] = {}
    for r in records:
        by_payload.setdefault(r.payload, set()).add(r.dlq_reason)
    source = {(m.partition, m.offset): m.value for m in consume_all(kafka_broker.kafka, topic)}
    dlq_messages = consume_all(kafka_broker.kafka, dlq)
    assert len(dlq_messages) == sum(r.dlq_reason is not None for r in records)
    dispositions = Counter()
    for message in dlq_messages:
        record = json.loads(message.value)
        original = source[(record["source"]["partition"], record["source"]["offset"])]
        assert record["reason"] in by_payload[original], (record["reason"], record["errors"])
        assert record["errors"], record
        dispositions[record["disposition"]] += 1
        if record["reason"] == "pii_detected":
            assert record["detectors"] and record["disposition"] == "counted"
    assert dispositions == Counter(
        {"counted": sum(r.text_dropped for r in records),
         "rejected": sum(rejected_expected.values())}
    ) - Counter()  # fmt: skip
    # The warehouse indexes the rejects (no payload): one row per rejected DLQ record.
    rejected_table = Table("rejected_events", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        indexed = {
            (r.topic, r.kafka_partition, r.kafka_offset): (r.reason, json.loads(r.errors))
            for r in conn.execute(select(rejected_table))
        }
    rejected_letters = [json.loads(m.value) for m in dlq_messages]
    assert indexed == {
        (topic, rec["source"]["partition"], rec["source"]["offset"]): (
            rec["reason"],
            rec["errors"],
        )
        for rec in rejected_letters
        if rec["disposition"] == "rejected"
    }
    raw_id_payloads = [json.loads(m.value)["payload"] for m in dlq_messages]
    if "raw_id" in kinds:
        assert any("[RAW_ID]" in p for p in raw_id_payloads if p)

    # No raw PII in anything Safewatch wrote.
    planted = [p.encode() for r in records for p in r.pii]
    text_outputs = {
        "warehouse": _dump_warehouse(url),
        "dlq": b"\n".join(m.value + b"|" + (m.key or b"") for m in dlq_messages),
        "logs": "\n".join(logs).encode(),
    }
    binary_outputs = {
        "warehouse files": b"".join(p.read_bytes() for p in tmp.glob("wh.db*")),
        "checkpoint": _files_bytes(tmp / "ckpt"),
        "dedup state": _files_bytes(tmp / "dedup"),
    }
    for where, blob in {**text_outputs, **binary_outputs}.items():
        for value in planted:
            assert value not in blob, f"planted PII found in {where}"
    for where, blob in text_outputs.items():
        for pattern in INDEPENDENT_PII:
            found = pattern.search(blob)
            assert found is None, f"{where} holds {found.group(0)!r}"


@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    # Each example is a Spark job over thousands of records: report, do not shrink.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
    ],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    # How many broken records of each kind: the recipe is small, the input is thousands.
    counts=st.fixed_dictionaries({k: st.integers(10, 80) for k in KINDS}),
    garbage=st.lists(
        st.binary(min_size=1, max_size=40).filter(lambda b: not b.strip().startswith(b"{")),
        max_size=20,
    ),
)
def test_mixed_input_closes_the_accounting_with_right_reasons_and_no_pii(
    spark, kafka_broker, unique_topic, tmp_path_factory, seed, counts, garbage
):
    tmp = tmp_path_factory.mktemp("mixed")
    _check_mixed_run(
        spark, kafka_broker, unique_topic, tmp, seed=seed, counts=counts, garbage=garbage,
        url=f"sqlite:///{tmp / 'wh.db'}",
    )  # fmt: skip


def test_adversarial_corpus_commits_on_postgresql(
    spark, kafka_broker, unique_topic, tmp_path_factory, postgres
):
    """The same corpus, every kind 30 times, into PostgreSQL: column lengths and types are
    enforced there (segment values at the contract's limit in CJK, alert segment keys).
    """
    tmp = tmp_path_factory.mktemp("mixed-pg")
    _check_mixed_run(
        spark, kafka_broker, unique_topic, tmp, seed=20261126, counts=dict.fromkeys(KINDS, 30),
        garbage=[b"\x00\xff", b"]]]", b"nul\x00l"], url=postgres.create_database("mixed_pg"),
    )  # fmt: skip
