"""Alert segments and notification keys as TEXT, unique by their MD5 on PostgreSQL.

They hold JSON of several segment values ([[dimension, value], ...], each non-ASCII
character escaped to six or twelve characters), which a bounded varchar could not hold for
every value the event contract accepts. PostgreSQL also limits a B-tree index entry to
2,704 bytes, so the unique keys that held such a column whole hold its md5() instead
(pipelines.warehouse.tables.text_key names the same expression for ON CONFLICT). SQLite
enforces neither limit: its tables are unchanged.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

revision = "0006"
down_revision = "0005"
DESCRIPTION = "alert segments and notification dedup keys: text, unique by md5 on PostgreSQL"

COLUMNS = (
    ("alert_state", "segment"),
    ("alert_history", "segment"),
    ("notification_outbox", "dedup_key"),
)
# table -> (the constraint of m0004 to replace, the columns of its unique index now)
KEYS = {
    "alert_state": ("alert_state_pkey", "rule, md5(segment)"),
    "alert_history": (
        "alert_history_rule_segment_window_start_to_status_key",
        "rule, md5(segment), window_start, to_status",
    ),
    "notification_outbox": ("notification_outbox_channel_dedup_key_key", "channel, md5(dedup_key)"),
}
# The views that read those tables: PostgreSQL cannot change the type of a column a view
# uses, so they are dropped and created again exactly as they are (definition and options:
# a database may already have a later migration's version of them).
VIEWS = ("v_alert_history", "v_alert_state")


def upgrade(connection: Connection) -> None:
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
    for table, (constraint, key) in KEYS.items():
        connection.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}"))
        connection.execute(text(f"CREATE UNIQUE INDEX {table}_key ON {table} ({key})"))
    for view, body, options in saved:
        with_options = f" WITH ({', '.join(options)})" if options else ""
        connection.execute(text(f"CREATE VIEW {view}{with_options} AS {body}"))
