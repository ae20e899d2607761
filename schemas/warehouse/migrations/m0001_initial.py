"""Aggregates per window x segment, the batch ledger and the ingested offset ranges."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Connection

revision = "0001"
down_revision = None
DESCRIPTION = "segment_window_agg, batch_ledger, ingested_offsets"

# Frozen copies of the lists as they were when this migration was written: a migration must
# produce the same schema forever, so it does not import the current catalog or settings.
DIMENSIONS = (
    "product_surface",
    "feature",
    "model_id",
    "model_version",
    "prompt_version",
    "policy_version",
    "locale",
    "region",
    "risk_tier",
    "client",
    "user_cohort",
)
COUNTERS = (
    "events",
    "violations",
    "blocks",
    "refusals",
    "injection_attempts",
    "injection_successes",
    "jailbreak_attempts",
    "jailbreak_successes",
    "pii_outputs",
    "user_reports",
)


def upgrade(connection: Connection) -> None:
    md = MetaData()
    Table(
        "segment_window_agg",
        md,
        Column("window_start", DateTime(timezone=True), nullable=False),
        Column("window_end", DateTime(timezone=True), nullable=False),
        Column("dimension_set", String(300), nullable=False),
        *[Column(d, String(200), nullable=False) for d in DIMENSIONS],
        *[Column(c, BigInteger, nullable=False, server_default="0") for c in COUNTERS],
        Column("first_batch_id", BigInteger, nullable=False),
        Column("last_batch_id", BigInteger, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("window_start", "dimension_set", *DIMENSIONS),
    )
    Table(
        "batch_ledger",
        md,
        Column("query_id", String(64), nullable=False),
        Column("batch_id", BigInteger, nullable=False),
        Column("topic", String(255), nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("committed_at", DateTime(timezone=True), nullable=False),
        Column("duration_ms", Integer, nullable=False),
        Column("input_rows", BigInteger, nullable=False),
        Column("parse_errors", BigInteger, nullable=False),
        Column("late_rows", BigInteger, nullable=False),
        Column("aggregated_rows", BigInteger, nullable=False),
        Column("aggregate_rows_written", BigInteger, nullable=False),
        Column("watermark_before", DateTime(timezone=True), nullable=True),
        Column("watermark_after", DateTime(timezone=True), nullable=True),
        Column("offsets", Text, nullable=False),
        PrimaryKeyConstraint("query_id", "batch_id"),
    )
    Table(
        "ingested_offsets",
        md,
        Column("topic", String(255), nullable=False),
        Column("kafka_partition", Integer, nullable=False),
        Column("start_offset", BigInteger, nullable=False),
        Column("end_offset", BigInteger, nullable=False),
        Column("query_id", String(64), nullable=False),
        Column("batch_id", BigInteger, nullable=False),
        PrimaryKeyConstraint("topic", "kafka_partition", "start_offset"),
    )
    md.create_all(connection)
