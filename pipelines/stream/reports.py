"""What a micro-batch reports: its one log line (`BatchReport`), the line of its closed-window
steps (`Derived`), the seconds of each stage (`Stages`), and the request to stop that a batch
raises (`StopRequested`). Values and wording only; the exporter and the job summary read them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

# The order the statuses of alert transitions are listed in.
_TO_STATUS = ("pending", "firing", "resolved", "inactive")


def transitions_text(count: int, changes: Mapping[str, int]) -> str:
    """'10 alert transition(s) (4 to pending, 4 to firing, 2 resolved)': what became of the
    alerts, so that the count reads against the alerts shown and the notices sent (a
    transition to pending is recorded, never sent).
    """
    words = {"resolved": "{n} resolved", "inactive": "{n} back to inactive"}
    parts = [
        words.get(status, "{n} to " + status).format(n=n)
        for status in sorted(changes, key=lambda s: (_TO_STATUS + (s,)).index(s))
        if (n := changes[status])
    ]
    return f"{count} alert transition(s)" + (f" ({', '.join(parts)})" if parts else "")


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised at the start of a batch once the job is asked to stop: the batch is left,
    uncommitted, to the next run (Spark replays it from its offset log).
    """

    def __init__(self, batch_id: int) -> None:
        super().__init__(f"stopping: batch {batch_id} is left to the next run")
        self.batch_id = batch_id


@dataclass(frozen=True)
class BatchReport:
    batch_id: int
    skipped: bool
    input_rows: int = 0
    aggregated_rows: int = 0
    late_rows: int = 0
    duplicate_rows: int = 0
    # Of the aggregated records: free text held personal data, counted with it dropped.
    text_dropped_rows: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    aggregate_rows_written: int = 0
    quality_success: bool | None = None
    seconds: float = 0.0
    watermark: datetime | None = None
    folded_rows: int = 0  # aggregate rows whose segment had a value counted as `other`
    # Closed windows that got drift statistics, and alert transitions; None when they are
    # derived in the background (`Derived`, logged on its own line once done).
    drift_windows: int | None = 0
    alert_transitions: int | None = 0
    alert_changes: Mapping[str, int] = field(default_factory=dict)  # to_status -> transitions
    # Seconds per stage; "wait" is the time spent waiting for the previous batch's
    # closed-window steps, which ran meanwhile.
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected_by_reason.values())

    def describe(self) -> str:
        if self.skipped:
            return f"batch {self.batch_id}: already in the ledger, skipped (replay)"
        wm = self.watermark.strftime("%Y-%m-%d %H:%M:%S") if self.watermark else "none"
        rejects = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected_by_reason.items()))
        quality = {None: "not run", True: "passed", False: "FAILED"}[self.quality_success]
        dropped = (
            f" ({self.text_dropped_rows} with personal data in their text, which was dropped)"
            if self.text_dropped_rows
            else ""
        )
        derived = (
            ""
            if self.drift_windows is None
            else f"quality {quality}; drift for {self.drift_windows} closed window(s); "
            f"{transitions_text(self.alert_transitions or 0, self.alert_changes)}; "
        )
        return (
            f"batch {self.batch_id}: {self.input_rows} records -> {self.aggregated_rows} "
            f"aggregated{dropped}, {self.rejected_rows} rejected"
            f"{f' ({rejects})' if rejects else ''}, "
            f"{self.late_rows} late, {self.duplicate_rows} duplicates; "
            f"{self.aggregate_rows_written} aggregate rows upserted"
            f"{f' ({self.folded_rows} folded into other)' if self.folded_rows else ''}; "
            f"{derived}{self.seconds:.1f} s; watermark {wm}"
        )


@dataclass(frozen=True)
class Derived:
    """The steps a committed batch's new watermark triggers: drift statistics and alert
    rules of the windows it closed, then delivery of the outbox (`BatchProcessor`).
    """

    batch_id: int
    watermark: datetime | None
    drift_windows: int = 0
    alert_transitions: int = 0
    alert_changes: Mapping[str, int] = field(default_factory=dict)  # to_status -> transitions
    quality_success: bool | None = None  # None: not run (no parsed event, or disabled)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        quality = {None: "not run", True: "passed", False: "FAILED"}[self.quality_success]
        return (
            f"batch {self.batch_id}: quality {quality}; drift for {self.drift_windows} closed "
            f"window(s); {transitions_text(self.alert_transitions, self.alert_changes)}; "
            f"{self.seconds:.1f} s"
        )


class Stages:
    """Wall-clock seconds per stage of a batch, for the log and the benchmark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: list[tuple[str, float]] = []  # a stage may run inside another (drift)

    def start(self, name: str) -> None:
        self._open.append((name, time.perf_counter()))

    def stop(self) -> None:
        if self._open:
            name, t0 = self._open.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop()
