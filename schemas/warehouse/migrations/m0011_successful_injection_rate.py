"""The catalog's rate `successful_injection_rate` (injection_successes / events) in the daily
and weekly roll-up views.

`v_segment_daily` and `v_segment_weekly` hold a column per rate of the catalog (migration 5),
so they are dropped and created again with the rates below, in the catalog's order: the same
sums, suppression and periods as before, and a security barrier on PostgreSQL (migration 7).
No other view lists the rates: `v_segment_window` shows counters (the new rate's are there
already) and `v_segment_window_rate_tests` has a row per rate. Dropping a view drops its
grants; `pipelines.warehouse.migrate` grants the analyst views again after a migration.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from schemas.warehouse.migrations.m0003_metric_catalog_drift import CATEGORIES, DIMENSIONS
from schemas.warehouse.migrations.m0005_analyst_views import COUNTERS

revision = "0011"
down_revision = "0010"
DESCRIPTION = "successful_injection_rate (injection successes per event) in the roll-up views"

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
    ("successful_injection_rate", "injection_successes", "events"),
    ("jailbreak_attempt_rate", "jailbreak_attempts", "events"),
    ("jailbreak_success_rate", "jailbreak_successes", "jailbreak_attempts"),
    ("unauthorized_tool_call_rate", "unauthorized_tool_call_events", "tool_call_events"),
    ("pii_output_rate", "pii_outputs", "events"),
    ("user_report_rate", "user_reports", "events"),
    ("appeal_overturn_rate", "appeal_overturns", "blocked_or_refused"),
    ("telemetry_completeness", "telemetry_complete", "events_seen"),
    ("redaction_failure_rate", "redaction_failures", "events_seen"),
)
ROLLUP_VIEWS = {  # view -> (grain, the period's column)
    "v_segment_daily": ("day", "day"),
    "v_segment_weekly": ("week", "week_start"),
}
_K = "(SELECT min_distinct_users FROM analyst_settings WHERE id = 1)"


def period(dialect: str, grain: str) -> str:
    """The UTC day or ISO week (Monday) of window_start, as a date."""
    if dialect == "postgresql":
        utc = "(window_start AT TIME ZONE 'UTC')"
        return f"CAST(date_trunc('{grain}', {utc}) AS DATE)"
    if grain == "day":
        return "date(window_start)"
    return "date(window_start, 'weekday 0', '-6 days')"


def rollup(
    dialect: str,
    grain: str,
    period_column: str,
    rates: tuple[tuple[str, str, str], ...] = RATES,
) -> str:
    """The roll-up view's query: per period x segment, the summed counters and every rate as
    the ratio of sums (NULL when the denominator is 0), rows below k distinct users hidden.
    """
    when = period(dialect, grain)
    dims = ", ".join(DIMENSIONS)
    sums = ", ".join(f"SUM({c}) AS {c}" for c in COUNTERS)
    ratios = ", ".join(
        f"CASE WHEN SUM({den}) > 0 THEN 1.0 * SUM({num}) / SUM({den}) END AS {rate}"
        for rate, num, den in rates
    )
    return (
        f"SELECT {when} AS {period_column}, dimension_set, {dims}, "
        f"COUNT(*) AS windows, MAX(distinct_users) AS distinct_users_at_least, {sums}, {ratios} "
        f"FROM segment_window_agg GROUP BY {when}, dimension_set, {dims} "
        f"HAVING MAX(distinct_users) >= {_K}"
    )


def upgrade(connection: Connection) -> None:
    dialect = connection.dialect.name
    # PostgreSQL cannot insert a column into a view in place (CREATE OR REPLACE only appends).
    barrier = " WITH (security_barrier)" if dialect == "postgresql" else ""
    for view, (grain, period_column) in ROLLUP_VIEWS.items():
        connection.execute(text(f"DROP VIEW IF EXISTS {view}"))
        body = rollup(dialect, grain, period_column)
        connection.execute(text(f"CREATE VIEW {view}{barrier} AS {body}"))
