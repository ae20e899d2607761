"""A drift statistic that is exact for small counts: `segment_window_drift.doubling_p_value`.

For each window x segment x distribution: the smallest, over the bins, one-sided exact
p-value of "the bin's share in the window is at most twice its share in the baseline",
times the number of bins (pipelines.drift.stats, `_doubling_rows`). Pearson's chi-square
p-value, beside it, is an approximation that fails on sparse bins (a single rare outcome in
a small window reads as p < 1e-8); the rule `OutcomeShareDoubled` pages on this one, in
small segments too, without paging on noise. Rows written before this migration have none (NULL).

`v_segment_window_drift` (migration 5, `SELECT t.*` behind the k-anonymity join) is created
again so that PostgreSQL, which expands `*` when a view is created, shows the new column
too (SQLite expands it when the view is read). Dropping a view drops its grants;
`pipelines.warehouse.migrate` grants the analyst views again after a migration.
"""

from __future__ import annotations

from sqlalchemy import Float, text
from sqlalchemy.engine import Connection

from schemas.warehouse.migrations.m0005_analyst_views import _kanon

revision = "0013"
down_revision = "0012"
DESCRIPTION = "segment_window_drift.doubling_p_value: an exact test of an outcome doubling"

VIEW = "v_segment_window_drift"


def upgrade(connection: Connection) -> None:
    kind = Float().compile(dialect=connection.dialect)
    connection.execute(text(f"ALTER TABLE segment_window_drift ADD COLUMN doubling_p_value {kind}"))
    barrier = " WITH (security_barrier)" if connection.dialect.name == "postgresql" else ""
    connection.execute(text(f"DROP VIEW IF EXISTS {VIEW}"))
    connection.execute(text(f"CREATE VIEW {VIEW}{barrier} AS {_kanon('segment_window_drift')}"))
