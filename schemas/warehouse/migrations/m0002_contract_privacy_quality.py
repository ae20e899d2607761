"""Rejects, duplicates and redaction failures; distinct-user sketches; quality results;
the k-anonymous analyst view.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Connection

revision = "0002"
down_revision = "0001"
DESCRIPTION = "rejects/duplicates in the ledger, redaction failures, user sketches, quality"

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


def _add(conn: Connection, table: str, column: Column) -> None:
    kind = column.type.compile(dialect=conn.dialect)
    ddl = f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"
    if column.server_default is not None:
        ddl += f" NOT NULL DEFAULT {column.server_default.arg}"  # type: ignore[attr-defined]
    conn.execute(text(ddl))


def upgrade(connection: Connection) -> None:
    for col in (
        Column("rejected_rows", BigInteger, server_default="0"),
        Column("duplicate_rows", BigInteger, server_default="0"),
        Column("dlq_rows", BigInteger, server_default="0"),
        Column("rejected_by_reason", Text, server_default="'{}'"),
        Column("max_event_time", DateTime(timezone=True)),
        Column("quality_success", Boolean),
    ):
        _add(connection, "batch_ledger", col)
    for col in (
        Column("redaction_failures", BigInteger, server_default="0"),
        Column("events_seen", BigInteger, server_default="0"),
        Column("telemetry_complete", BigInteger, server_default="0"),
        Column("distinct_users", BigInteger, server_default="0"),
        Column("users_sketch", LargeBinary),
    ):
        _add(connection, "segment_window_agg", col)

    md = MetaData()
    Table(
        "quality_results",
        md,
        Column("query_id", String(64), nullable=False),
        Column("batch_id", BigInteger, nullable=False),
        Column("expectation_type", String(120), nullable=False),
        Column("column_name", String(200), nullable=False),
        Column("success", Boolean, nullable=False),
        Column("element_count", BigInteger, nullable=False),
        Column("unexpected_count", BigInteger, nullable=False),
        Column("unexpected_percent", Float, nullable=False),
        Column("rows_total", BigInteger, nullable=False),
        Column("rows_validated", BigInteger, nullable=False),
        Column("sampled", Boolean, nullable=False),
        PrimaryKeyConstraint("query_id", "batch_id", "expectation_type", "column_name"),
    )
    Table(
        "analyst_settings",
        md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("min_distinct_users", Integer, nullable=False),
    )
    md.create_all(connection)
    connection.execute(text("INSERT INTO analyst_settings (id, min_distinct_users) VALUES (1, 20)"))
    visible = ", ".join(
        [
            "a.window_start",
            "a.window_end",
            "a.dimension_set",
            *[f"a.{d}" for d in DIMENSIONS],
            "a.distinct_users",
            *[f"a.{c}" for c in COUNTERS],
            "a.redaction_failures",
            "a.events_seen",
            "a.telemetry_complete",
        ]
    )
    connection.execute(
        text(
            f"CREATE VIEW v_segment_window AS SELECT {visible} "
            "FROM segment_window_agg a JOIN analyst_settings s ON s.id = 1 "
            "WHERE a.distinct_users >= s.min_distinct_users"
        )
    )
