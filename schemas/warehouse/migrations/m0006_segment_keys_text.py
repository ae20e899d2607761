"""Alert segments and notification keys as TEXT: they hold JSON of several segment values
([[dimension, value], ...], non-ASCII escaped to six characters each), which a bounded
varchar could not hold for every value the event contract accepts.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

VERSION = 6
DESCRIPTION = "alert_state.segment, alert_history.segment, notification_outbox.dedup_key: text"

COLUMNS = (
    ("alert_state", "segment"),
    ("alert_history", "segment"),
    ("notification_outbox", "dedup_key"),
)
# The views that read those tables: PostgreSQL cannot change the type of a column a view
# uses, so they are dropped and created again exactly as they are (definition and options:
# a database may already have a later migration's version of them).
VIEWS = ("v_alert_history", "v_alert_state")


def upgrade(connection: Connection) -> None:
    # SQLite does not enforce varchar lengths: its columns already hold any text.
    if connection.dialect.name != "postgresql":
        return
    saved = []
    for view in VIEWS:
        found = connection.execute(
            text(
                "SELECT pg_get_viewdef(c.oid), c.reloptions FROM pg_class c "
                "WHERE c.relname = :name AND c.relkind = 'v' AND pg_table_is_visible(c.oid)"
            ),
            {"name": view},
        ).one_or_none()
        if found is not None:
            saved.append((view, found[0], found[1] or []))
            connection.execute(text(f"DROP VIEW {view}"))
    for table, column in COLUMNS:
        connection.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE TEXT"))
    for view, body, options in saved:
        with_options = f" WITH ({', '.join(options)})" if options else ""
        connection.execute(text(f"CREATE VIEW {view}{with_options} AS {body}"))
