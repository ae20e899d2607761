"""`safewatch run` as a person runs it, in a process of its own against a real broker: what
it prints from start to Ctrl-C, and that the stop loses and doubles nothing.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_events
from pipelines.synth.generator import generate_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.tables import Tables
from tests.faults.harness import Job, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Lines that tell a user nothing they can act on: the JVM's own notices, Spark's start-up
# chatter, and the tracebacks PySpark printed on Ctrl-C.
NOISE = re.compile(
    r"Traceback|py4j|Using incubator modules|NativeCodeLoader|Using Spark's default log4j"
    r"|Setting default log level|Failed to cancel job group"
)


def test_ctrl_c_stops_after_the_batch_under_way_quietly_and_loses_nothing(
    kafka_broker, unique_topic, tmp_path: Path
) -> None:
    topic = unique_topic("cli.run")
    kafka = kafka_broker.kafka
    ensure_topics(kafka, [topic, f"{topic}.dlq", f"{topic}.alerts"], log=lambda _m: None)
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    events = list(
        generate_events(seed=3, start=start, duration=timedelta(minutes=30), rate_per_s=2.0)
    )
    produce_events(kafka, topic, events)
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEWATCH_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "SAFEWATCH_KAFKA__TOPIC_INTERACTIONS": topic,
            "SAFEWATCH_KAFKA__TOPIC_DLQ": f"{topic}.dlq",
            "SAFEWATCH_KAFKA__TOPIC_ALERTS": f"{topic}.alerts",
            "SAFEWATCH_KAFKA__CLIENT_OPTIONS": json.dumps(kafka.client_options),
            "SAFEWATCH_STREAM__CHECKPOINT_DIR": str(tmp_path / "checkpoint"),
            "SAFEWATCH_STREAM__MAX_OFFSETS_PER_TRIGGER": "500",
            "SAFEWATCH_STREAM__TRIGGER_INTERVAL": "1 second",
            "SAFEWATCH_STREAM__WATERMARK": "1 day",
            "SAFEWATCH_CONTRACT__DEDUP_STATE_DIR": str(tmp_path / "dedup"),
            "SAFEWATCH_WAREHOUSE__URL": url,
            "SAFEWATCH_ALERTING__CHANNELS": "kafka",
        }
    )
    engine = make_engine(url)
    migrate(engine)
    ledger = Tables(engine).ledger

    def committed() -> tuple[int, int]:
        with engine.connect() as conn:
            n, rows = conn.execute(select(func.count(), func.sum(ledger.c.input_rows))).one()
        return int(n), int(rows or 0)

    job = Job(env, tmp_path / "run.log", continuous=True).start()
    assert wait_for(lambda: committed()[0] >= 2, 300, what="two batches"), job.output()
    code = job.interrupt()
    out = job.output()
    assert code == 130, out
    batches, rows = committed()
    assert 0 < rows < len(events), "the stop came after the input was read: nothing to check"
    last = job.last_line()
    assert "] stopped: " in last, out
    assert f"stopped: {batches} batches committed ({rows:,} records read" in last
    assert "the next run continues after them" in last
    assert "Ctrl-C: stopping after the batch under way" in out
    assert not NOISE.search(out), NOISE.search(out)

    # The next run reads on from there: every event once.
    again = Job(env, tmp_path / "run-2.log", continuous=False).start()
    assert again.wait() == 0, again.output()
    assert committed()[1] == len(events)
    assert "] done: " in again.last_line()
    assert not NOISE.search(again.output()), NOISE.search(again.output())
