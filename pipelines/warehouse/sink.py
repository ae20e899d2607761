"""Write one micro-batch to the warehouse: aggregates, ledger row and offsets, atomically.

Lifecycle per batch (called by the streaming job's foreachBatch):
  1. `is_committed(query_id, batch_id)`: a batch already in the ledger is skipped, so a
     replayed batch id (Spark re-runs the last batch after a crash) changes nothing.
  2. `watermark(query_id)`: the watermark left by the previous batch, used to classify late
     events deterministically (a re-run of the same batch sees the same value).
  3. `commit(BatchResult)`: one transaction that adds the batch's partial counts to the
     aggregate rows (upsert with +), inserts the ledger row and the offset ranges. If any part
     fails nothing is written and the error propagates, so Spark does not commit the batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pipelines.errors import SafewatchError
from pipelines.metrics.catalog import counter_ids
from pipelines.settings import SEGMENT_DIMENSIONS
from pipelines.warehouse.tables import Tables, as_utc

_CHUNK = 400  # rows per INSERT statement; keeps SQLite under its bound-parameter limit


class OffsetsAlreadyIngestedError(SafewatchError):
    """The batch's Kafka offsets were already counted by another query (checkpoint reset)."""


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    start: int  # first offset in the batch
    end: int  # last offset in the batch (inclusive)
    rows: int


@dataclass(frozen=True)
class BatchResult:
    query_id: str
    batch_id: int
    topic: str
    started_at: datetime
    input_rows: int
    parse_errors: int
    late_rows: int
    aggregated_rows: int
    watermark_before: datetime | None
    watermark_after: datetime | None
    offsets: Sequence[OffsetRange]
    # Each aggregate: window_start, window_end, dimension_set, all SEGMENT_DIMENSIONS, counters.
    aggregates: Sequence[dict[str, Any]] = field(default_factory=list)


class WarehouseSink:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tables = Tables(engine)

    def is_committed(self, query_id: str, batch_id: int) -> bool:
        ledger = self.tables.ledger
        with self.engine.connect() as conn:
            found = conn.execute(
                select(ledger.c.batch_id).where(
                    and_(ledger.c.query_id == query_id, ledger.c.batch_id == batch_id)
                )
            ).first()
        return found is not None

    def watermark(self, query_id: str) -> datetime | None:
        ledger = self.tables.ledger
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(ledger.c.watermark_after)).where(ledger.c.query_id == query_id)
            ).scalar()
        return as_utc(value)

    def commit(self, result: BatchResult, *, now: datetime | None = None) -> int:
        """Write the batch in one transaction; returns the number of aggregate rows touched.

        Raises OffsetsAlreadyIngestedError (and writes nothing) when another query already
        counted any of these offsets.
        """
        committed_at = now or datetime.now(UTC)
        with self.engine.begin() as conn:
            self._check_offsets(conn, result)
            written = self._upsert_aggregates(conn, result, committed_at)
            conn.execute(
                self.tables.ledger.insert().values(
                    query_id=result.query_id,
                    batch_id=result.batch_id,
                    topic=result.topic,
                    started_at=result.started_at,
                    committed_at=committed_at,
                    duration_ms=int((committed_at - result.started_at).total_seconds() * 1000),
                    input_rows=result.input_rows,
                    parse_errors=result.parse_errors,
                    late_rows=result.late_rows,
                    aggregated_rows=result.aggregated_rows,
                    aggregate_rows_written=written,
                    watermark_before=result.watermark_before,
                    watermark_after=result.watermark_after,
                    offsets=json.dumps(
                        {f"{o.topic}:{o.partition}": [o.start, o.end] for o in result.offsets},
                        sort_keys=True,
                    ),
                )
            )
            if result.offsets:
                conn.execute(
                    self.tables.offsets.insert(),
                    [
                        {
                            "topic": o.topic,
                            "kafka_partition": o.partition,
                            "start_offset": o.start,
                            "end_offset": o.end,
                            "query_id": result.query_id,
                            "batch_id": result.batch_id,
                        }
                        for o in result.offsets
                    ],
                )
        return written

    def _check_offsets(self, conn: Connection, result: BatchResult) -> None:
        t = self.tables.offsets
        for o in result.offsets:
            clash = conn.execute(
                select(t.c.query_id, t.c.batch_id, t.c.start_offset, t.c.end_offset).where(
                    and_(
                        t.c.topic == o.topic,
                        t.c.kafka_partition == o.partition,
                        t.c.start_offset <= o.end,
                        t.c.end_offset >= o.start,
                    )
                )
            ).first()
            if clash is not None:
                msg = (
                    f"offsets {o.start}..{o.end} of {o.topic}[{o.partition}] were already counted "
                    f"by query {clash.query_id} batch {clash.batch_id}: the checkpoint was reset "
                    "or another job reads the same topic into this warehouse. Restore the "
                    "checkpoint (setting stream.checkpoint_dir) or point the job at an empty "
                    "warehouse; nothing was written."
                )
                raise OffsetsAlreadyIngestedError(msg)

    def _upsert_aggregates(
        self, conn: Connection, result: BatchResult, committed_at: datetime
    ) -> int:
        if not result.aggregates:
            return 0
        t = self.tables.agg
        counters = counter_ids()
        key = ["window_start", "dimension_set", *SEGMENT_DIMENSIONS]
        rows = [
            {
                **{k: row[k] for k in ("window_start", "window_end", *key[1:], *counters)},
                "first_batch_id": result.batch_id,
                "last_batch_id": result.batch_id,
                "updated_at": committed_at,
            }
            for row in result.aggregates
        ]
        dialect = conn.dialect.name
        if dialect == "postgresql":
            insert: Any = postgresql.insert
        elif dialect == "sqlite":
            insert = sqlite.insert
        else:
            msg = f"warehouse dialect {dialect!r} is not supported (use SQLite or PostgreSQL)"
            raise SafewatchError(msg)
        for i in range(0, len(rows), _CHUNK):
            stmt = insert(t).values(rows[i : i + _CHUNK])
            stmt = stmt.on_conflict_do_update(
                index_elements=key,
                set_={
                    **{c: t.c[c] + stmt.excluded[c] for c in counters},
                    "last_batch_id": stmt.excluded.last_batch_id,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            conn.execute(stmt)
        return len(rows)
