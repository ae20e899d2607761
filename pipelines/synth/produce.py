"""Synthetic traffic to Kafka: `produce_scenario` generates events (pipelines.synth.generator)
with incidents injected and produces them to a topic, saying how far it got.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from pipelines.errors import SafewatchError
from pipelines.kafka.producer import produce_events
from pipelines.settings import Settings
from pipelines.synth.generator import generate_events


def progress_logger(total_hint: int | None, log: Callable[[str], None]) -> Callable[[int], None]:
    """A producer's progress callback that logs 'produced N of ~M events'."""

    def report(sent: int) -> None:
        suffix = f" of ~{total_hint}" if total_hint else ""
        log(f"produced {sent}{suffix} events")

    return report


def produce_scenario(
    settings: Settings,
    *,
    scenarios: Sequence[str],
    minutes: float,
    rate: float,
    seed: int,
    start: datetime,
    topic: str,
    log: Callable[[str], None],
) -> int:
    """Produce `minutes` of traffic at `rate` events/s from `start` with `scenarios` injected
    to `topic`; the number of events sent. SafewatchError for an unknown scenario.
    """
    duration = timedelta(minutes=minutes)
    try:
        events = generate_events(
            seed=seed, start=start, duration=duration, rate_per_s=rate, scenarios=scenarios
        )
    except ValueError as exc:
        raise SafewatchError(str(exc)) from exc
    expected = int(rate * duration.total_seconds())
    log(
        f"producing ~{expected} events to {topic}: {minutes:g} min of traffic from "
        f"{start:%Y-%m-%d %H:%M}Z, seed {seed}, scenarios: {', '.join(scenarios) or 'none'}"
    )
    sent = produce_events(settings.kafka, topic, events, progress=progress_logger(expected, log))
    log(f"produced {sent} events to {topic}")
    return sent
