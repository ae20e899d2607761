"""A warehouse of per-locale windows for the alert engine's tests, on SQLite or PostgreSQL.

`warehouse_engine` makes a migrated warehouse of either dialect; `commit_windows` commits
one batch per window, as the job would, with one aggregate row per `chat` × locale holding
the counters given (every other counter 0, `events_seen` = `events`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pipelines.metrics.catalog import counter_ids
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink

DIMS = ("product_surface", "locale")


def warehouse_engine(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Engine:
    """A migrated warehouse: SQLite when `request.param` is "sqlite", else PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/w.db"
    else:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        url = request.getfixturevalue("postgres").create_database(name)
    engine = make_engine(url)
    migrate(engine)
    return engine


def commit_windows(
    sink: WarehouseSink,
    start: datetime,
    window: timedelta,
    windows: Mapping[int, Mapping[str, Mapping[str, int]]],
) -> None:
    """Commit window w (starting `start + w * window`) as batch w: {locale: {counter: n}}."""
    for w, locales in sorted(windows.items()):
        begins = start + w * window
        aggs = []
        for locale, counters in locales.items():
            row = {
                "window_start": begins,
                "window_end": begins + window,
                "dimension_set": ",".join(DIMS),
                **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
                **dict.fromkeys(counter_ids(), 0),
                "product_surface": "chat",
                "locale": locale,
                "users_sketch": None,
                "events_seen": counters["events"],
            }
            row.update(counters)
            aggs.append(row)
        sink.commit(
            BatchResult(
                query_id="q", batch_id=w, topic="t", started_at=begins, input_rows=1,
                late_rows=0, aggregated_rows=1, watermark_before=None, watermark_after=None,
                offsets=[OffsetRange("t", 0, w, w, 1)], aggregates=aggs,
            )
        )  # fmt: skip
