"""The alert rules as a closed-window step: what the job runs, in the transaction that marks
a batch derived, after the drift step (composed in `jobs/streaming_aggregator.py`; run by
`pipelines.stream.derive`).
"""

from __future__ import annotations

from typing import Any

from pipelines.alerting.engine import AlertEngine
from pipelines.alerting.evaluate import Transition
from pipelines.watermark import WatermarkMove


class AlertStep:
    """Evaluates the rules on the windows a watermark move closed (oldest first), then the
    early rules on the windows still open at the new watermark; records each transition
    and its notices.
    """

    name = "alerts"

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine

    @property
    def on_open_windows(self) -> bool:
        """Whether a batch that closed no window still has something to evaluate."""
        return bool(self.engine.early_rules)

    def run(self, conn: Any, move: WatermarkMove) -> list[Transition]:
        query_id, batch_id = move.query_id, move.batch_id
        found = self.engine.evaluate(
            conn, move.windows, now=move.now(), query_id=query_id, batch_id=batch_id
        )
        found.extend(
            self.engine.evaluate_open(
                conn, move.after, now=move.now(), query_id=query_id, batch_id=batch_id
            )
        )
        return found

    def forget(self) -> None:
        """Nothing is kept between transactions."""
