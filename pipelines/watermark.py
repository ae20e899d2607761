"""The watermark: how far event time has gone, and which windows it has closed.

One definition for the streaming job, the backfill and the backtest. A batch moves the
watermark to its newest event time minus the allowed lateness (`stream.watermark`), never
back; a record whose event time is behind it is late; a window is closed, and its counts
final, once the watermark reaches the window's end. Pure: the ledger stores each batch's
watermark (`pipelines.warehouse.ledger` reads it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def advance(
    before: datetime | None, newest_event_time: datetime | None, delay: timedelta
) -> datetime | None:
    """The watermark after a batch whose newest event is `newest_event_time` (None: the
    batch had no event), from `before` (None: no batch yet): it only moves forward.
    """
    if newest_event_time is None:
        return before
    candidate = newest_event_time - delay
    return candidate if before is None or candidate > before else before


def is_closed(window_end: datetime, watermark: datetime | None) -> bool:
    """Whether the window ending at `window_end` is closed at `watermark`."""
    return watermark is not None and window_end <= watermark


@dataclass(frozen=True)
class WatermarkMove:
    """A batch's move of the watermark from `before` to `after`, and the stored windows it
    closed (window starts, oldest first): what the closed-window steps (drift statistics,
    alert rules) run on, in the transaction that marks batch `batch_id` of `query_id`
    derived. `now` gives each step's timestamp.
    """

    before: datetime | None
    after: datetime
    windows: Sequence[datetime] = ()
    query_id: str = ""
    batch_id: int = 0
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
