"""The full metric catalog: per-category and over-refusal counters, tool-call and appeal
counters, histograms per window x segment, drift statistics and rate tests against a
baseline, admitted dimension values (cardinality control).
"""

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
    text,
)
from sqlalchemy.engine import Connection

revision = "0003"
down_revision = "0002"
DESCRIPTION = "full metric catalog, histograms, drift and rate tests, admitted dimension values"

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
OLD_COUNTERS = (
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
    "redaction_failures",
    "events_seen",
    "telemetry_complete",
)
CATEGORIES = (
    "hate",
    "harassment",
    "sexual",
    "sexual_minors",
    "violence",
    "self_harm",
    "illegal",
    "extremism",
    "privacy",
)
NEW_COUNTERS = (
    *(f"violations_{c}" for c in CATEGORIES),
    "unflagged_events",
    "over_refusals",
    "tool_call_events",
    "unauthorized_tool_call_events",
    "blocked_or_refused",
    "appeal_overturns",
)


def _segment_key() -> list[Column]:
    return [
        Column("window_start", DateTime(timezone=True), nullable=False),
        Column("dimension_set", String(300), nullable=False),
        *[Column(d, String(200), nullable=False) for d in DIMENSIONS],
    ]


def upgrade(connection: Connection) -> None:
    for name in NEW_COUNTERS:
        connection.execute(
            text(f"ALTER TABLE segment_window_agg ADD COLUMN {name} BIGINT NOT NULL DEFAULT 0")
        )
    # Exact for rows written before this migration: an event is unflagged iff not a violation.
    # The other new counters are unknown for those rows and stay 0.
    connection.execute(text("UPDATE segment_window_agg SET unflagged_events = events - violations"))

    key = ["window_start", "dimension_set", *DIMENSIONS]
    md = MetaData()
    Table(
        "segment_window_hist",
        md,
        *_segment_key(),
        Column("distribution", String(60), nullable=False),
        Column("bin", Integer, nullable=False),
        Column("count", BigInteger, nullable=False),
        PrimaryKeyConstraint(*key, "distribution", "bin"),
    )
    Table(
        "distribution_bins",
        md,
        Column("distribution", String(60), nullable=False),
        Column("bin", Integer, nullable=False),
        Column("label", String(100), nullable=False),
        Column("lower", Float),
        Column("upper", Float),
        PrimaryKeyConstraint("distribution", "bin"),
    )
    Table(
        "dimension_values",
        md,
        Column("dimension", String(60), nullable=False),
        Column("value", String(200), nullable=False),
        Column("events_when_admitted", BigInteger, nullable=False),
        Column("query_id", String(64), nullable=False),
        Column("batch_id", BigInteger, nullable=False),
        Column("admitted_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("dimension", "value"),
    )
    Table(
        "segment_window_drift",
        md,
        *_segment_key(),
        Column("distribution", String(60), nullable=False),
        Column("baseline", String(300), nullable=False),
        Column("status", String(30), nullable=False),
        Column("current_n", BigInteger, nullable=False),
        Column("baseline_n", BigInteger, nullable=False),
        Column("psi", Float),
        Column("js_distance", Float),
        Column("chi2_statistic", Float),
        Column("chi2_dof", Integer),
        Column("chi2_p_value", Float),
        Column("ks_statistic", Float),
        Column("ks_p_value", Float),
        Column("wasserstein", Float),
        Column("computed_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint(*key, "distribution"),
    )
    Table(
        "segment_window_rate_tests",
        md,
        *_segment_key(),
        Column("rate_id", String(60), nullable=False),
        Column("baseline", String(300), nullable=False),
        Column("status", String(30), nullable=False),
        Column("current_numerator", BigInteger, nullable=False),
        Column("current_denominator", BigInteger, nullable=False),
        Column("baseline_numerator", BigInteger, nullable=False),
        Column("baseline_denominator", BigInteger, nullable=False),
        Column("difference", Float),
        Column("z", Float),
        Column("p_value", Float),
        Column("q_value", Float),
        Column("computed_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint(*key, "rate_id"),
    )
    md.create_all(connection)

    connection.execute(text("DROP VIEW v_segment_window"))
    visible = ", ".join(
        [
            "a.window_start",
            "a.window_end",
            "a.dimension_set",
            *[f"a.{d}" for d in DIMENSIONS],
            "a.distinct_users",
            *[f"a.{c}" for c in (*OLD_COUNTERS, *NEW_COUNTERS)],
        ]
    )
    connection.execute(
        text(
            f"CREATE VIEW v_segment_window AS SELECT {visible} "
            "FROM segment_window_agg a JOIN analyst_settings s ON s.id = 1 "
            "WHERE a.distinct_users >= s.min_distinct_users"
        )
    )
