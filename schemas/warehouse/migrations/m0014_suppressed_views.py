"""What the analyst views hide: `v_segment_window_suppressed`, `v_segment_daily_suppressed`
and `v_segment_weekly_suppressed`.

`v_segment_window` hides a window x segment with fewer than k distinct users, and the
roll-ups a period x segment whose largest window has fewer than k (migrations 3 and 11); a
trend summed from a view is then below the traffic without saying so. Each companion view
has one row per period x dimension set of `segment_window_agg` (0 when nothing is hidden)
with the rows, windows (roll-ups) and events its view hides, so that the view's sums plus
the companion's are the base table's. Only these counts: no segment, no other counter.

On PostgreSQL they are security barriers, as every analyst view (migration 7), and
`pipelines.warehouse.migrate` grants them to the analyst roles after the migration.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from schemas.warehouse.migrations.m0003_metric_catalog_drift import DIMENSIONS
from schemas.warehouse.migrations.m0011_successful_injection_rate import period

revision = "0014"
down_revision = "0013"
DESCRIPTION = "rows and events hidden by v_segment_window and the roll-ups, per period"

# The analyst views this migration adds, security barriers on PostgreSQL (a test checks
# that every analyst view is made one by some migration).
VIEWS = ("v_segment_window_suppressed", "v_segment_daily_suppressed", "v_segment_weekly_suppressed")


def _count(condition: str, value: str) -> str:
    return f"CAST(SUM(CASE WHEN {condition} THEN {value} ELSE 0 END) AS BIGINT)"


def window_suppressed() -> str:
    """Per window x dimension set: the rows of segment_window_agg that v_segment_window hides
    (fewer than k distinct users) and their events.
    """
    hidden = "a.distinct_users < s.min_distinct_users"
    return (
        "SELECT a.window_start, a.window_end, a.dimension_set, "
        f"{_count(hidden, '1')} AS suppressed_rows, "
        f"{_count(hidden, 'a.events')} AS suppressed_events "
        "FROM segment_window_agg a JOIN analyst_settings s ON s.id = 1 "
        "GROUP BY a.window_start, a.window_end, a.dimension_set"
    )


def rollup_suppressed(dialect: str, grain: str, period_column: str) -> str:
    """Per period x dimension set: the period x segment rows the roll-up view hides (its
    largest window has fewer than k distinct users), their windows and their events.
    """
    when = period(dialect, grain)
    dims = ", ".join(DIMENSIONS)
    hidden = "g.top < s.min_distinct_users"
    return (
        f"SELECT g.{period_column}, g.dimension_set, "
        f"{_count(hidden, '1')} AS suppressed_rows, "
        f"{_count(hidden, 'g.windows')} AS suppressed_windows, "
        f"{_count(hidden, 'g.events')} AS suppressed_events "
        f"FROM (SELECT {when} AS {period_column}, dimension_set, COUNT(*) AS windows, "
        "SUM(events) AS events, MAX(distinct_users) AS top "
        f"FROM segment_window_agg GROUP BY {when}, dimension_set, {dims}) g "
        "JOIN analyst_settings s ON s.id = 1 "
        f"GROUP BY g.{period_column}, g.dimension_set"
    )


def upgrade(connection: Connection) -> None:
    dialect = connection.dialect.name
    barrier = " WITH (security_barrier)" if dialect == "postgresql" else ""
    bodies = {
        "v_segment_window_suppressed": window_suppressed(),
        "v_segment_daily_suppressed": rollup_suppressed(dialect, "day", "day"),
        "v_segment_weekly_suppressed": rollup_suppressed(dialect, "week", "week_start"),
    }
    for name, body in bodies.items():
        connection.execute(text(f"CREATE VIEW {name}{barrier} AS {body}"))
