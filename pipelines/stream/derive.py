"""What a watermark move derives from committed counts, inside one warehouse transaction.

When a batch (or a replay of stored counts) moves the watermark from `before` to `after`,
`derive_windows` runs, in this order:
  1. the drift statistics and rate tests of every window that ended in (before, after]
     (pipelines.drift.compute), when drift is enabled;
  2. the alert rules on those closed windows, oldest first (AlertEngine.evaluate);
  3. the early alert rules on the windows still open at `after` (AlertEngine.evaluate_open).

The caller owns the transaction (`conn`) and what happens after it (delivering the outbox).
The streaming job calls it from `BatchProcessor` after each commit; the alert-quality
benchmark calls it on replayed counts, so both derive by the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipelines.alerting.engine import AlertEngine
from pipelines.alerting.evaluate import Transition
from pipelines.drift.compute import BaselineCache, closed_windows, compute_drift
from pipelines.settings import Settings
from pipelines.warehouse.tables import Tables

Stage = Callable[[str], AbstractContextManager[Any]]


@dataclass
class DerivedWindows:
    """The windows a watermark move closed and the alert transitions they and the open
    windows produced (closed first, then early ones).
    """

    windows: list[datetime] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


def _no_stage(name: str) -> AbstractContextManager[Any]:
    return nullcontext()


def derive_windows(
    conn: Any,
    tables: Tables,
    settings: Settings,
    *,
    before: datetime | None,
    after: datetime | None,
    alerts: AlertEngine | None,
    now: Callable[[], datetime],
    query_id: str,
    batch_id: int,
    baseline: BaselineCache | None = None,
    stage: Stage = _no_stage,
    out: DerivedWindows | None = None,
) -> DerivedWindows:
    """Drift, rate tests and alert rules for the watermark's move from `before` to `after`.

    `now` is called for each step's timestamp; `stage(name)` times a step (the job's stage
    breakdown); `out` collects the results as they come, so a caller whose transaction
    fails half-way still sees what was done.
    """
    found = out if out is not None else DerivedWindows()
    if after is None:
        return found
    dims = settings.stream.dimensions
    if before is None or after > before:
        found.windows.extend(closed_windows(conn, tables, ",".join(dims), before, after))
    if settings.drift.enabled and found.windows:
        with stage("drift"):
            compute_drift(
                conn,
                tables,
                found.windows,
                dimensions=dims,
                settings=settings.drift,
                now=now(),
                cache=baseline,
            )
    if alerts is not None:
        with stage("alerts"):
            found.transitions.extend(
                alerts.evaluate(
                    conn, found.windows, now=now(), query_id=query_id, batch_id=batch_id
                )  # fmt: skip
            )
            found.transitions.extend(
                alerts.evaluate_open(
                    conn, after, now=now(), query_id=query_id, batch_id=batch_id
                )  # fmt: skip
            )
    return found
