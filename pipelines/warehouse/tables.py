"""Handles on the warehouse tables, reflected from the migrated database (one definition)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Engine, MetaData, Table, func
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

AGG_TABLE = "segment_window_agg"
LEDGER_TABLE = "batch_ledger"
OFFSETS_TABLE = "ingested_offsets"
QUALITY_TABLE = "quality_results"
ANALYST_SETTINGS_TABLE = "analyst_settings"
HIST_TABLE = "segment_window_hist"
BINS_TABLE = "distribution_bins"
DIMENSION_VALUES_TABLE = "dimension_values"
DRIFT_TABLE = "segment_window_drift"
RATE_TESTS_TABLE = "segment_window_rate_tests"
ALERT_STATE_TABLE = "alert_state"
ALERT_HISTORY_TABLE = "alert_history"
OUTBOX_TABLE = "notification_outbox"
REJECTED_TABLE = "rejected_events"
BACKFILL_TABLE = "backfill_runs"

# What the analyst role may read (docs/warehouse.md): the k-anonymous views, the counts of
# what they hide and the bin reference. Never the base tables, whose small segments are not
# suppressed, nor rejected_events.
ANALYST_OBJECTS = (
    "v_segment_window",
    "v_segment_daily",
    "v_segment_weekly",
    "v_segment_window_suppressed",
    "v_segment_daily_suppressed",
    "v_segment_weekly_suppressed",
    "v_segment_window_drift",
    "v_segment_window_rate_tests",
    "v_alert_history",
    "v_alert_state",
    "v_quality_results",
    "v_batch_ledger",
    BINS_TABLE,
)


class Tables:
    """The reflected tables of a migrated warehouse."""

    def __init__(self, engine: Engine) -> None:
        md = MetaData()
        md.reflect(
            engine,
            only=[
                AGG_TABLE,
                LEDGER_TABLE,
                OFFSETS_TABLE,
                QUALITY_TABLE,
                ANALYST_SETTINGS_TABLE,
                HIST_TABLE,
                BINS_TABLE,
                DIMENSION_VALUES_TABLE,
                DRIFT_TABLE,
                RATE_TESTS_TABLE,
                ALERT_STATE_TABLE,
                ALERT_HISTORY_TABLE,
                OUTBOX_TABLE,
                REJECTED_TABLE,
                BACKFILL_TABLE,
            ],
        )
        self.agg: Table = md.tables[AGG_TABLE]
        self.ledger: Table = md.tables[LEDGER_TABLE]
        self.offsets: Table = md.tables[OFFSETS_TABLE]
        self.quality: Table = md.tables[QUALITY_TABLE]
        self.analyst_settings: Table = md.tables[ANALYST_SETTINGS_TABLE]
        self.hist: Table = md.tables[HIST_TABLE]
        self.bins: Table = md.tables[BINS_TABLE]
        self.dimension_values: Table = md.tables[DIMENSION_VALUES_TABLE]
        self.drift: Table = md.tables[DRIFT_TABLE]
        self.rate_tests: Table = md.tables[RATE_TESTS_TABLE]
        self.alert_state: Table = md.tables[ALERT_STATE_TABLE]
        self.alert_history: Table = md.tables[ALERT_HISTORY_TABLE]
        self.outbox: Table = md.tables[OUTBOX_TABLE]
        self.rejected: Table = md.tables[REJECTED_TABLE]
        self.backfill_runs: Table = md.tables[BACKFILL_TABLE]


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC); PostgreSQL aware ones. Normalise to UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def text_key(conn: Connection, column: Column[str]) -> ColumnElement[str] | Column[str]:
    """How the unique key of its table holds a text column of unbounded length (alert
    segments, notification dedup keys): md5(column) on PostgreSQL, whose B-tree index entries
    are limited to 2,704 bytes (migration m0006), the column itself on SQLite. Name it in
    ON CONFLICT targets.
    """
    if conn.dialect.name == "postgresql":
        return func.md5(column)
    return column
