"""Alert state per rule x segment, the history of every transition, the notification outbox."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Connection

revision = "0004"
down_revision = "0003"
DESCRIPTION = "alert_state, alert_history, notification_outbox"


def upgrade(connection: Connection) -> None:
    md = MetaData()
    Table(
        "alert_state",
        md,
        Column("rule", String(120), nullable=False),
        Column("segment", String(1000), nullable=False),  # JSON [[dimension, value], ...]
        Column("status", String(20), nullable=False),
        Column("true_windows", Integer, nullable=False),
        Column("false_windows", Integer, nullable=False),
        Column("started_at", DateTime(timezone=True)),
        Column("firing_since", DateTime(timezone=True)),
        Column("last_window", DateTime(timezone=True)),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("rule", "segment"),
    )
    Table(
        "alert_history",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("rule", String(120), nullable=False),
        Column("segment", String(1000), nullable=False),
        Column("window_start", DateTime(timezone=True), nullable=False),
        Column("from_status", String(20), nullable=False),
        Column("to_status", String(20), nullable=False),
        Column("severity", String(10), nullable=False),
        Column("metric", String(60), nullable=False),
        Column("value", Float),
        Column("lower", Float),
        Column("upper", Float),
        Column("numerator", BigInteger),
        Column("denominator", BigInteger),
        Column("baseline_rate", Float),
        Column("q_value", Float),
        Column("drift_value", Float),
        Column("firing_since", DateTime(timezone=True)),
        Column("summary", Text, nullable=False),
        Column("description", Text, nullable=False),
        Column("query_id", String(64)),
        Column("batch_id", BigInteger),
        Column("recorded_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("rule", "segment", "window_start", "to_status"),
    )
    Table(
        "notification_outbox",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("channel", String(20), nullable=False),
        Column("dedup_key", String(1200), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", DateTime(timezone=True), nullable=False),
        Column("last_error", Text),
        Column("sent_at", DateTime(timezone=True)),
        UniqueConstraint("channel", "dedup_key"),
    )
    md.create_all(connection)
