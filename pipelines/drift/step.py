"""Drift statistics and rate tests as a closed-window step: what the job runs, in the
transaction that marks a batch derived, for the windows the batch's watermark closed
(composed in `jobs/streaming_aggregator.py`; run by `pipelines.stream.derive`), and the
recomputation of stored windows (`safewatch drift`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from pipelines.drift.compute import BaselineCache, compute_drift
from pipelines.settings import DriftSettings
from pipelines.warehouse.tables import Tables
from pipelines.watermark import WatermarkMove


class DriftStep:
    """Computes the drift rows and rate tests of each closed window, oldest first; keeps the
    trailing baselines' sums between batches (`BaselineCache`).
    """

    name = "drift"
    on_open_windows = False  # nothing to compute before a window closes

    def __init__(self, tables: Tables, settings: DriftSettings, dimensions: Sequence[str]) -> None:
        self.tables = tables
        self.settings = settings
        self.dimensions = tuple(dimensions)
        self.baseline = BaselineCache()

    def run(self, conn: Any, move: WatermarkMove) -> list[datetime]:
        """The windows whose drift was computed (all those the move closed)."""
        if not move.windows:
            return []
        compute_drift(
            conn,
            self.tables,
            move.windows,
            dimensions=self.dimensions,
            settings=self.settings,
            now=move.now(),
            cache=self.baseline,
        )
        return list(move.windows)

    def forget(self) -> None:
        """The transaction rolled back: the cached baseline sums may hold its rows."""
        self.baseline.clear()


def recompute_drift(
    engine: Engine,
    tables: Tables,
    windows: Sequence[datetime],
    *,
    settings: DriftSettings,
    dimensions: Sequence[str],
    now: Callable[[], datetime],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, float]:
    """(Re)compute the drift of stored `windows`, oldest first, one transaction each
    (`safewatch drift`); `progress(done, total)` after each. The window x segments
    computed and the seconds it took.
    """
    step = DriftStep(tables, settings, dimensions)
    segments, seconds = 0, 0.0
    for done, window in enumerate(windows, 1):
        with engine.begin() as conn:
            run = compute_drift(
                conn, tables, [window], dimensions=step.dimensions, settings=settings,
                now=now(), cache=step.baseline,
            )  # fmt: skip
        segments += run.segments
        seconds += run.seconds
        if progress is not None:
            progress(done, len(windows))
    return segments, seconds
