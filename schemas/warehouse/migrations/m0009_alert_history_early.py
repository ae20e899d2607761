"""Early pages in the alert history: `alert_history.early` and `alert_history.evidence`.

A transition to firing made on a window that was still open (docs/alert-rules.md, "Early
firing on open windows") has `early` true and the e-value that crossed the threshold in
`evidence` (null when one event was conclusive, for a rule whose limit is 0). Transitions
recorded before this migration were all made on closed windows: `early` false.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, text
from sqlalchemy.engine import Connection

from schemas.warehouse.migrations.m0007_analyst_barriers import ALERT_VIEWS, alert_view

revision = "0009"
down_revision = "0008"
DESCRIPTION = "alert_history.early and .evidence: pages made on a window still open"


def upgrade(connection: Connection) -> None:
    dialect = connection.dialect
    flag = Boolean().compile(dialect=dialect)
    false = "false" if dialect.name == "postgresql" else "0"
    connection.execute(
        text(f"ALTER TABLE alert_history ADD COLUMN early {flag} NOT NULL DEFAULT {false}")
    )
    kind = Float().compile(dialect=dialect)
    connection.execute(text(f"ALTER TABLE alert_history ADD COLUMN evidence {kind}"))
    if dialect.name == "postgresql":
        # A view keeps the columns it had when created; SQLite expands `t.*` when it is read.
        table, window_column = ALERT_VIEWS["v_alert_history"]
        body = alert_view(dialect.name, table, window_column)
        connection.execute(
            text(f"CREATE OR REPLACE VIEW v_alert_history WITH (security_barrier) AS {body}")
        )
