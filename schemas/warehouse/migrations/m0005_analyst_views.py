"""The analyst layer: daily and weekly roll-up views with small-segment suppression,
k-anonymous views of drift, rate tests and the operational tables, and the rejected-event
index (operators only: never granted to the analyst role), the log of backfill runs.
"""

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
    text,
)
from sqlalchemy.engine import Connection

from schemas.warehouse.migrations.m0003_metric_catalog_drift import (
    CATEGORIES,
    DIMENSIONS,
    NEW_COUNTERS,
    OLD_COUNTERS,
)

revision = "0005"
down_revision = "0004"
DESCRIPTION = (
    "analyst views (daily/weekly roll-ups, k-anonymous drift), rejected_events, backfill_runs"
)

COUNTERS = (*OLD_COUNTERS, *NEW_COUNTERS)
# Frozen copy of the catalog's rates when this migration was written (rate, numerator,
# denominator); a test checks it still equals pipelines.metrics.catalog.RATES, so a catalog
# change comes with a new migration that recreates the views.
RATES = (
    ("violation_rate", "violations", "events"),
    *((f"violation_rate_{c}", f"violations_{c}", "events") for c in CATEGORIES),
    ("block_rate", "blocks", "events"),
    ("refusal_rate", "refusals", "events"),
    ("over_refusal_rate", "over_refusals", "unflagged_events"),
    ("injection_attempt_rate", "injection_attempts", "events"),
    ("injection_success_rate", "injection_successes", "injection_attempts"),
    ("jailbreak_attempt_rate", "jailbreak_attempts", "events"),
    ("jailbreak_success_rate", "jailbreak_successes", "jailbreak_attempts"),
    ("unauthorized_tool_call_rate", "unauthorized_tool_call_events", "tool_call_events"),
    ("pii_output_rate", "pii_outputs", "events"),
    ("user_report_rate", "user_reports", "events"),
    ("appeal_overturn_rate", "appeal_overturns", "blocked_or_refused"),
    ("telemetry_completeness", "telemetry_complete", "events_seen"),
    ("redaction_failure_rate", "redaction_failures", "events_seen"),
)
ROLLUP_VIEWS = ("v_segment_daily", "v_segment_weekly")
KANON_VIEWS = ("v_segment_window_drift", "v_segment_window_rate_tests")
PLAIN_VIEWS = {
    "v_alert_history": "alert_history",
    "v_alert_state": "alert_state",
    "v_quality_results": "quality_results",
    "v_batch_ledger": "batch_ledger",
}
_K = "(SELECT min_distinct_users FROM analyst_settings WHERE id = 1)"


def _period(dialect: str, grain: str) -> str:
    """The UTC day or ISO week (Monday) of window_start, as a date."""
    if dialect == "postgresql":
        utc = "(window_start AT TIME ZONE 'UTC')"
        return f"CAST(date_trunc('{grain}', {utc}) AS DATE)"
    if grain == "day":
        return "date(window_start)"
    return "date(window_start, 'weekday 0', '-6 days')"


def _rollup(dialect: str, grain: str, period_column: str) -> str:
    period = _period(dialect, grain)
    dims = ", ".join(DIMENSIONS)
    sums = ", ".join(f"SUM({c}) AS {c}" for c in COUNTERS)
    rates = ", ".join(
        f"CASE WHEN SUM({den}) > 0 THEN 1.0 * SUM({num}) / SUM({den}) END AS {rate}"
        for rate, num, den in RATES
    )
    return (
        f"SELECT {period} AS {period_column}, dimension_set, {dims}, "
        f"COUNT(*) AS windows, MAX(distinct_users) AS distinct_users_at_least, {sums}, {rates} "
        f"FROM segment_window_agg GROUP BY {period}, dimension_set, {dims} "
        f"HAVING MAX(distinct_users) >= {_K}"
    )


def _kanon(table: str) -> str:
    key = " AND ".join(f"a.{c} = t.{c}" for c in ("window_start", "dimension_set", *DIMENSIONS))
    return (
        f"SELECT t.* FROM {table} t JOIN segment_window_agg a ON {key} "
        f"WHERE a.distinct_users >= {_K}"
    )


def upgrade(connection: Connection) -> None:
    md = MetaData()
    Table(
        "rejected_events",
        md,
        Column("topic", String(250), nullable=False),
        Column("kafka_partition", BigInteger, nullable=False),
        Column("kafka_offset", BigInteger, nullable=False),
        Column("query_id", String(64), nullable=False),
        Column("batch_id", BigInteger, nullable=False),
        Column("kafka_timestamp", DateTime(timezone=True)),
        Column("reason", String(60), nullable=False),
        Column("errors", Text, nullable=False),  # JSON list, personal data masked
        Column("detectors", Text, nullable=False),  # JSON list of PII detectors that fired
        Column("recorded_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("topic", "kafka_partition", "kafka_offset", "query_id"),
    )
    Table(
        "backfill_runs",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("period_start", DateTime(timezone=True), nullable=False),
        Column("period_end", DateTime(timezone=True), nullable=False),
        Column("dimension_set", String(300), nullable=False),
        Column("source", Text, nullable=False),
        Column("input_rows", BigInteger, nullable=False),
        Column("aggregated_events", BigInteger, nullable=False),
        Column("outside_events", BigInteger, nullable=False),
        Column("duplicate_rows", BigInteger, nullable=False),
        Column("rejected_by_reason", Text, nullable=False),
        Column("aggregate_rows_deleted", BigInteger, nullable=False),
        Column("aggregate_rows_written", BigInteger, nullable=False),
        Column("histogram_rows_written", BigInteger, nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("committed_at", DateTime(timezone=True), nullable=False),
    )
    md.create_all(connection)

    dialect = connection.dialect.name
    views = {
        "v_segment_daily": _rollup(dialect, "day", "day"),
        "v_segment_weekly": _rollup(dialect, "week", "week_start"),
        "v_segment_window_drift": _kanon("segment_window_drift"),
        "v_segment_window_rate_tests": _kanon("segment_window_rate_tests"),
        **{view: f"SELECT * FROM {table}" for view, table in PLAIN_VIEWS.items()},
    }
    for name, body in views.items():
        connection.execute(text(f"CREATE VIEW {name} AS {body}"))
