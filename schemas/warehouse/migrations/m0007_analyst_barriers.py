"""Analyst views that cannot be made to leak what they hide.

On PostgreSQL every analyst view becomes a security barrier: the planner no longer runs an
analyst's own conditions (or functions) on a row before the view's k-anonymity filter has
kept it, so an error message, a cast failure or a planner setting cannot reveal a hidden
row. SQLite has no roles and no such option; its views are unchanged but for the two below.

`v_alert_history` and `v_alert_state` (plain copies of their tables until now) show a row
only when, in the row's window, some aggregate row of the alert's segment had at least
`analyst_settings.min_distinct_users` distinct users. Such a row is a subset of the segment,
so the segment had at least that many users too; a coarse segment whose users are spread
over small rows only stays hidden (suppression errs on the safe side).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from schemas.warehouse.migrations.m0003_metric_catalog_drift import DIMENSIONS

revision = "0007"
down_revision = "0006"
DESCRIPTION = "analyst views as security barriers; alert views hide segments below k"

# Frozen copy of the analyst views when this migration was written.
VIEWS = (
    "v_segment_window",
    "v_segment_daily",
    "v_segment_weekly",
    "v_segment_window_drift",
    "v_segment_window_rate_tests",
    "v_alert_history",
    "v_alert_state",
    "v_quality_results",
    "v_batch_ledger",
)
ALERT_VIEWS = {  # view -> (table, the column naming the row's window)
    "v_alert_history": ("alert_history", "window_start"),
    "v_alert_state": ("alert_state", "last_window"),
}
_K = "(SELECT min_distinct_users FROM analyst_settings WHERE id = 1)"


def _pairs(dialect: str) -> tuple[str, str, str]:
    """(set-returning source of the segment's [dimension, value] pairs, dimension, value)."""
    if dialect == "postgresql":
        return "jsonb_array_elements(CAST(t.segment AS jsonb))", "p.value->>0", "p.value->>1"
    return "json_each(t.segment)", "json_extract(p.value, '$[0]')", "json_extract(p.value, '$[1]')"


def alert_view(dialect: str, table: str, window_column: str) -> str:
    """Rows of `table` whose segment had >= k distinct users in some row of its window.

    The segment is the stored JSON [[dimension, value], ...]; a pair whose dimension is not
    a column of segment_window_agg matches nothing, so its row stays hidden.
    """
    source, dimension, value = _pairs(dialect)
    column = " ".join(f"WHEN '{d}' THEN a.{d}" for d in DIMENSIONS)
    differs = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    return (
        f"SELECT t.* FROM {table} t WHERE EXISTS ("
        f"SELECT 1 FROM segment_window_agg a WHERE a.window_start = t.{window_column} "
        f"AND a.distinct_users >= {_K} "
        f"AND NOT EXISTS (SELECT 1 FROM {source} p "
        f"WHERE (CASE {dimension} {column} END) {differs} {value}))"
    )


def upgrade(connection: Connection) -> None:
    dialect = connection.dialect.name
    barrier = " WITH (security_barrier)" if dialect == "postgresql" else ""
    for view, (table, window_column) in ALERT_VIEWS.items():
        connection.execute(text(f"DROP VIEW IF EXISTS {view}"))
        body = alert_view(dialect, table, window_column)
        connection.execute(text(f"CREATE VIEW {view}{barrier} AS {body}"))
    if dialect == "postgresql":
        for view in VIEWS:
            connection.execute(text(f"ALTER VIEW {view} SET (security_barrier = true)"))
