"""A warehouse filled the way the streaming job fills it, from an hour with all four incidents.

`build_scenario_warehouse` generates 60 minutes of synthetic traffic with every scenario of
`pipelines.synth.scenarios` injected, cuts it by event time into four 15-minute micro-batches
(Kafka offsets continuous across them) and runs each through `BatchProcessor.process` on a
fresh SQLite warehouse, with an `AlertEngine` built from `alerts/rules`: aggregates,
histograms, drift, rate tests, the ledger, quality results, alert_state and alert_history
end up exactly as the job writes them. With a 5-minute watermark the windows close batch by
batch; the last two windows (the final watermark is 55 minutes in) stay open, as they would
in a running job.

Used by the session fixture `scenario_warehouse` (conftest.py): the alert-rule backtest and
the runbook queries run against it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pyspark.sql import SparkSession
from sqlalchemy import Engine

from jobs.streaming_aggregator import window_steps
from pipelines.alerting.engine import AlertEngine
from pipelines.alerting.loader import load_rules
from pipelines.durations import parse_duration
from pipelines.settings import (
    AlertingSettings,
    ContractSettings,
    Settings,
    StreamSettings,
    WarehouseSettings,
)
from pipelines.stream.batch import BatchProcessor
from pipelines.stream.reports import BatchReport
from pipelines.synth.generator import generate_events
from pipelines.synth.scenarios import SCENARIOS
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "alerts" / "rules"
TOPIC = "safety.interactions.v1"
PARTITIONS = 2
QUERY_ID = "scenario-query"
DURATION = timedelta(minutes=60)
BATCH_SPAN = timedelta(minutes=15)
RATE_PER_S = 8.0
SEED = 20261123
KAFKA_SCHEMA = "topic string, partition int, offset long, timestamp timestamp, value binary"


@dataclass(frozen=True)
class Incident:
    """One injected scenario: the segment it targets and when it is on, [start, end)."""

    name: str
    metric: str
    target: Mapping[str, str]
    start: datetime
    end: datetime

    def matches(self, segment: Mapping[str, str]) -> bool:
        """True iff `segment` has every target value (a target without locale: any locale)."""
        return all(segment.get(k) == v for k, v in self.target.items())


@dataclass(frozen=True)
class ScenarioWarehouse:
    url: str
    engine: Engine
    events: Sequence[dict[str, Any]]
    start: datetime  # first event time, hour-aligned, UTC
    end: datetime  # start + 60 minutes
    window: timedelta  # stream.window
    dimensions: tuple[str, ...]  # stream.dimensions
    settings: Settings
    incidents: Mapping[str, Incident]  # by scenario name
    reports: Sequence[BatchReport]
    watermark: datetime  # after the last batch
    query_id: str = QUERY_ID

    @property
    def dimension_set(self) -> str:
        return ",".join(self.dimensions)


def scenario_incidents(start: datetime, duration: timedelta) -> dict[str, Incident]:
    return {
        s.name: Incident(
            name=s.name,
            metric=s.metric,
            target=dict(s.target),
            start=start + duration * s.start_fraction,
            end=start + duration * s.end_fraction,
        )
        for s in SCENARIOS.values()
    }


def _event_time(event: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["event_time"]).replace("Z", "+00:00"))


class JobDied(Exception):  # noqa: N818 (it plays a crash, not an error to handle)
    """Raised by a test's sink to play the job dying: the scenario then starts a new one."""


def build_scenario_warehouse(
    spark: SparkSession,
    directory: Path,
    *,
    now: datetime | None = None,
    overlap: bool = False,
    make_sink: Callable[..., WarehouseSink] = WarehouseSink,
) -> ScenarioWarehouse:
    """Generate the hour, run it batch by batch through the job's processor; see module doc.

    The hour starts on the hour, three hours before `now` (default: the wall clock).
    `overlap` derives the closed windows in the background, as the job does; a sink from
    `make_sink` may raise `JobDied`, after which a new processor continues.
    """
    now = now or datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    events = list(
        generate_events(
            seed=SEED,
            start=start,
            duration=DURATION,
            rate_per_s=RATE_PER_S,
            scenarios=list(SCENARIOS),
        )
    )
    url = f"sqlite:///{directory / 'warehouse.db'}"
    engine = make_engine(url)
    migrate(engine)
    settings = Settings(
        stream=StreamSettings(watermark="5 minutes"),
        contract=ContractSettings(dedup_state_dir=str(directory / "dedup")),
        warehouse=WarehouseSettings(url=SecretStr(url)),
        alerting=AlertingSettings(channels=()),
    )

    def start_job() -> BatchProcessor:
        """What the job builds when it starts (jobs/streaming_aggregator.py)."""
        sink = make_sink(engine, users_lg_k=settings.privacy.users_sketch_lg_k)
        sink.set_min_distinct_users(settings.privacy.min_distinct_users)
        sink.sync_distribution_bins()
        alerts = AlertEngine(
            load_rules([RULES_DIR]),
            sink.tables,
            settings.stream.dimensions,
            channels=settings.alerting.channels,
            window=parse_duration(settings.stream.window),
            ttl_windows=settings.alerting.ttl_windows,
        )
        return BatchProcessor(
            sink,
            settings,
            log=lambda _m: None,
            steps=window_steps(settings, sink, alerts),
            overlap=overlap,
        )

    processor = start_job()
    reports = []
    offset = 0
    batches = int(DURATION / BATCH_SPAN)
    for batch_id in range(batches):
        lo, hi = start + batch_id * BATCH_SPAN, start + (batch_id + 1) * BATCH_SPAN
        chunk = [e for e in events if lo <= _event_time(e) < hi]
        rows = []
        for e in chunk:
            # Records round-robin over the partitions, offsets continuous from batch to
            # batch; the record timestamp is the event time (a producer sending at once).
            rows.append(
                (
                    TOPIC,
                    offset % PARTITIONS,
                    offset // PARTITIONS,
                    _event_time(e),
                    json.dumps(e).encode(),
                )
            )
            offset += 1
        df = spark.createDataFrame(rows, KAFKA_SCHEMA)
        try:
            reports.append(processor.process(df, batch_id, QUERY_ID))
        except JobDied:
            # Restarted: a new job, and Spark runs the batch whose commit it did not see again.
            processor = start_job()
            reports.append(processor.process(df, batch_id, QUERY_ID))
    processor.close()
    watermark = reports[-1].watermark
    assert watermark is not None
    return ScenarioWarehouse(
        url=url,
        engine=engine,
        events=events,
        start=start,
        end=start + DURATION,
        window=parse_duration(settings.stream.window),
        dimensions=settings.stream.dimensions,
        settings=settings,
        incidents=scenario_incidents(start, DURATION),
        reports=reports,
        watermark=watermark,
    )
