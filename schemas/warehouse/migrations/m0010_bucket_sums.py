"""Per-user-bucket sums of the event counters: `segment_window_agg.bucket_sums`.

For each window x segment the job keeps, per counter of
`pipelines.metrics.catalog.bucket_counter_ids()`, its sum in each of B user buckets
(pipelines.metrics.buckets: every user hashed into one of B = 32 buckets), stored as one
compressed blob (`encode_counter_buckets`). The alert rules, the rate tests and the report
derive cluster-robust standard errors from them (docs/alert-rules.md, "When events come in
clumps"). Rows written before this migration have none (NULL): their rates fall back to
treating events as independent.

Not in any analyst view: a bucket may hold a single user.
"""

from __future__ import annotations

from sqlalchemy import LargeBinary, text
from sqlalchemy.engine import Connection

revision = "0010"
down_revision = "0009"
DESCRIPTION = "segment_window_agg.bucket_sums: counters per user bucket (cluster-robust rates)"


def upgrade(connection: Connection) -> None:
    kind = LargeBinary().compile(dialect=connection.dialect)
    connection.execute(text(f"ALTER TABLE segment_window_agg ADD COLUMN bucket_sums {kind}"))
