"""Per-slice sums of the event counters: `segment_window_agg.slice_sums`.

For each window x segment the job keeps, per counter of
`pipelines.metrics.catalog.bucket_counter_ids()`, its sum in each slice of the window (the
setting `stream.early_slice`, 1 minute by default: 5 slices of a 5-minute window), stored
as one compressed blob in the form of `bucket_sums` (`encode_counter_buckets`; its
`buckets` field holds the number of slices). The early alert rules test the window's latest
minutes with them, so that an incident that starts in the middle of a window is not
diluted by the healthy minutes before it (docs/alert-rules.md, "Early firing on open
windows"). Rows written before this migration have none (NULL): their open windows are
tested whole.

Not in any analyst view: the windows are the analysts' unit.
"""

from __future__ import annotations

from sqlalchemy import LargeBinary, text
from sqlalchemy.engine import Connection

revision = "0012"
down_revision = "0011"
DESCRIPTION = "segment_window_agg.slice_sums: counters per slice of the window (early alerts)"


def upgrade(connection: Connection) -> None:
    kind = LargeBinary().compile(dialect=connection.dialect)
    connection.execute(text(f"ALTER TABLE segment_window_agg ADD COLUMN slice_sums {kind}"))
