"""The metric catalog: every counter and rate is defined once, here."""

from pipelines.metrics.catalog import COUNTERS, RATES, Counter, Rate, counter_ids

__all__ = ["COUNTERS", "RATES", "Counter", "Rate", "counter_ids"]
