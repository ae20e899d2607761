"""When each batch's closed windows got their drift statistics and alert rules.

A batch commits its counts first; the drift statistics and alert rules of the windows its
watermark closed follow in their own transaction, which sets `batch_ledger.derived_at`. A
batch whose `derived_at` is empty after a crash is derived again when the job restarts.
Batches committed before this migration were derived inside their commit: they get their
`committed_at`.
"""

from __future__ import annotations

from sqlalchemy import DateTime, text
from sqlalchemy.engine import Connection

revision = "0008"
down_revision = "0007"
DESCRIPTION = "batch_ledger.derived_at: drift and alert rules of the closed windows done"


def upgrade(connection: Connection) -> None:
    kind = DateTime(timezone=True).compile(dialect=connection.dialect)
    connection.execute(text(f"ALTER TABLE batch_ledger ADD COLUMN derived_at {kind}"))
    connection.execute(text("UPDATE batch_ledger SET derived_at = committed_at"))
    if connection.dialect.name == "postgresql":
        # A view keeps the columns it had when created; SQLite expands `*` when it is read.
        connection.execute(
            text(
                "CREATE OR REPLACE VIEW v_batch_ledger WITH (security_barrier) AS "
                "SELECT * FROM batch_ledger"
            )
        )
