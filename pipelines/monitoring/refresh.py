"""Read what the exporter shows from the warehouse and Kafka, after each micro-batch.

The exporter (`JobMetrics`) only keeps numbers; this module fetches them: the headline rates
of the newest closed window, the firing alerts by severity, the notification outbox, and the
consumer lag (the topic's end offsets minus the offsets the warehouse has counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.exc import SQLAlchemyError

from pipelines.errors import SafewatchError
from pipelines.kafka.admin import end_offsets
from pipelines.monitoring.exporter import JobMetrics
from pipelines.settings import Settings
from pipelines.warehouse.tables import Tables


class MetricsRefresher:
    """Refreshes a JobMetrics from the warehouse (and Kafka, for the lag).

    `severities` maps each alert rule to its severity. Notification counts come from the
    delivery reports instead (`JobMetrics.set_notifications`), as they happen.
    """

    def __init__(
        self,
        metrics: JobMetrics,
        engine: Engine,
        settings: Settings,
        severities: Mapping[str, str],
    ) -> None:
        self.metrics = metrics
        self.engine = engine
        self.settings = settings
        self.severities = dict(severities)
        self.tables = Tables(engine)

    def refresh(self, watermark: datetime | None) -> None:
        """Rates of the newest window `watermark` closed, firing alerts by severity. A
        warehouse error (it is down: the job retries its own work) leaves the last values.
        """
        try:
            self._refresh(watermark)
        except SQLAlchemyError:
            return

    def _refresh(self, watermark: datetime | None) -> None:
        t = self.tables
        dims = ",".join(self.settings.stream.dimensions)
        with self.engine.connect() as conn:
            if watermark is not None:
                newest = conn.execute(
                    select(func.max(t.agg.c.window_start)).where(
                        and_(t.agg.c.dimension_set == dims, t.agg.c.window_end <= watermark)
                    )
                ).scalar()
                if newest is not None:
                    rows = conn.execute(
                        select(t.agg).where(
                            and_(t.agg.c.dimension_set == dims, t.agg.c.window_start == newest)
                        )
                    ).mappings()
                    self.metrics.set_rates([dict(r) for r in rows])
            firing_rules = conn.execute(
                select(t.alert_state.c.rule).where(t.alert_state.c.status == "firing")
            ).scalars()
            firing = Counter(self.severities[r] for r in firing_rules if r in self.severities)
        self.metrics.set_firing({s: firing.get(s, 0) for s in ("sev1", "sev2", "sev3", "sev4")})

    def refresh_lag(self) -> None:
        """Lag of the input topic; a Kafka or warehouse error leaves the last value (and is
        not fatal).
        """
        topic = self.settings.kafka.topic_interactions
        t = self.tables.offsets
        try:
            ends = end_offsets(self.settings.kafka, topic, timeout_s=5)
        except SafewatchError:
            return
        try:
            with self.engine.connect() as conn:
                counted = dict(
                    conn.execute(
                        select(t.c.kafka_partition, func.max(t.c.end_offset))
                        .where(t.c.topic == topic)
                        .group_by(t.c.kafka_partition)
                    ).all()
                )
        except SQLAlchemyError:
            return
        lag = sum(max(0, end - (counted[p] + 1 if p in counted else 0)) for p, end in ends.items())
        self.metrics.set_lag(topic, lag)
