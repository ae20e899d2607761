"""What a watermark move derives from committed counts, inside one warehouse transaction.

When a batch (or a replay of stored counts) moves the watermark from `before` to `after`,
`ClosedWindowSteps.run` finds the stored windows that ended in (before, after] once, and
hands that move (`pipelines.watermark.WatermarkMove`) to each step in order. The job
composes the steps (`jobs/streaming_aggregator.py`): the drift statistics and rate tests
(`pipelines.drift.step.DriftStep`), then the alert rules on the closed windows and the
early rules on the windows still open (`pipelines.alerting.step.AlertStep`).

The caller owns the transaction (`conn`) and what happens after it (delivering the
outbox). The streaming job runs the steps from `BatchProcessor` after each commit; the
alert-quality benchmark runs them on replayed counts, so both derive by the same steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, Protocol

from pipelines.warehouse.ledger import closed_windows
from pipelines.warehouse.tables import Tables
from pipelines.watermark import WatermarkMove

Stage = Callable[[str], AbstractContextManager[Any]]


class WindowStep(Protocol):
    """One step a watermark move triggers, run inside the batch's derive transaction."""

    @property
    def name(self) -> str:
        """Its stage in the batch's breakdown (and the key of its results)."""
        ...

    @property
    def on_open_windows(self) -> bool:
        """Whether it has work when the watermark closed no window (early alert rules)."""
        ...

    def run(self, conn: Any, move: WatermarkMove) -> list[Any]:
        """Do the step for `move`; what it found (windows computed, alert transitions)."""
        ...

    def forget(self) -> None:
        """The transaction rolled back: drop what was cached from it."""
        ...


def _no_stage(name: str) -> AbstractContextManager[Any]:
    return nullcontext()


class ClosedWindowSteps:
    """The steps of a watermark move, in order, for the windows of `dimension_set`."""

    def __init__(self, tables: Tables, dimension_set: str, steps: Sequence[WindowStep]) -> None:
        self.tables = tables
        self.dimension_set = dimension_set
        self.steps = tuple(steps)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def needed(self, before: datetime | None, after: datetime | None, aggregated: int) -> bool:
        """Whether a batch that moved the watermark from `before` to `after` and aggregated
        `aggregated` events has anything to derive: windows it closed, or open windows that
        a step (early alert rules) works on.
        """
        if after is None or not self.steps:
            return False
        if aggregated and any(s.on_open_windows for s in self.steps):
            return True
        return before is None or after > before

    def run(
        self,
        conn: Any,
        *,
        before: datetime | None,
        after: datetime | None,
        now: Callable[[], datetime],
        query_id: str,
        batch_id: int,
        stage: Stage = _no_stage,
    ) -> dict[str, list[Any]]:
        """Run every step for the move from `before` to `after`; what each found, by name
        (`windows`: the windows the move closed).

        `now` is called for each step's timestamp; `stage(name)` times a step (the job's
        stage breakdown).
        """
        found: dict[str, list[Any]] = {"windows": []}
        if after is None:
            return found
        windows: list[datetime] = []
        if before is None or after > before:
            windows = closed_windows(
                conn, self.tables, self.dimension_set, after=before, watermark=after
            )
        found["windows"] = windows
        move = WatermarkMove(before, after, windows, query_id, batch_id, now)
        for step in self.steps:
            with stage(step.name):
                found[step.name] = step.run(conn, move)
        return found

    def forget(self) -> None:
        for step in self.steps:
            step.forget()
