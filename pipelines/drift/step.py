"""Drift statistics and rate tests as a closed-window step: what the job runs, in the
transaction that marks a batch derived, for the windows the batch's watermark closed
(composed in `jobs/streaming_aggregator.py`; run by `pipelines.stream.derive`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

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
