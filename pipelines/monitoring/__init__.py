"""The streaming job's own health as Prometheus metrics, and the endpoint that serves them."""

from pipelines.monitoring.exporter import (
    BATCH_OUTCOMES,
    HEADLINE_RATES,
    NOTIFICATION_CHANNELS,
    REJECT_REASONS,
    JobMetrics,
    MetricsServer,
    serve,
)

__all__ = [
    "BATCH_OUTCOMES",
    "HEADLINE_RATES",
    "NOTIFICATION_CHANNELS",
    "REJECT_REASONS",
    "JobMetrics",
    "MetricsServer",
    "serve",
]
