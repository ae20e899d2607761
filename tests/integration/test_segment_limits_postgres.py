"""A window whose segment values are as long as the contract accepts commits, with a firing
alert and its notifications, on PostgreSQL as on SQLite: every value fits its column, and
every unique key fits PostgreSQL's B-tree entry limit (2,704 bytes).

The values are grouped by every segment dimension, in three sets of characters: CJK (3
UTF-8 bytes a character, six characters in the JSON of an alert segment), beyond the Basic
Multilingual Plane (4 UTF-8 bytes, twelve characters in that JSON), and all of the Basic
Multilingual Plane beyond ASCII. Random characters, so that PostgreSQL cannot compress a
key below its limit.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from pipelines.alerting.engine import AlertEngine
from pipelines.alerting.loader import parse_rules
from pipelines.contract.records import Limits, RecordChecker
from pipelines.metrics.catalog import counter_ids
from pipelines.privacy.detectors import detector_names, screen_pattern
from pipelines.segments import SEGMENT_DIMENSIONS, parse_segment
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink
from schemas import event_schema, example_paths

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
DIMS = SEGMENT_DIMENSIONS  # grouped by all of them: the longest keys there are
CHANNELS = ("alertmanager", "webhook", "kafka")
RULES = """
rules:
  - name: HarmfulOutputSpike
    metric: violation_rate
    by: stored
    condition:
      threshold: {above: 0.05}
    min_events: 50
    severity: sev2
    owner: trust-safety
    runbook: runbooks/HarmfulOutputSpike.md
    summary: "Harmful output {value:.1%} in {segment}"
    description: "{numerator} of {denominator} events"
"""
SCRIPTS = {  # name -> characters to draw from
    "cjk": [(0x4E00, 0x9FFF)],
    "beyond_bmp": [(0x20000, 0x2A6DF)],
    # All of the Basic Multilingual Plane beyond ASCII: the JSON escapes of random ones
    # barely compress, so PostgreSQL cannot squeeze an alert key below its limit.
    "bmp": [(0x80, 0xD7FF), (0xE000, 0xFFFD)],
}


def _longest_segment(script: str, seed: int) -> dict[str, str]:
    """Segment values of the longest length the contract accepts, checked by the contract."""
    rng = random.Random(seed)
    ranges = SCRIPTS[script]
    nodes = event_schema("1")["properties"]["segment"]["properties"]
    segment = {}
    for name, node in nodes.items():
        if "enum" in node:
            segment[name] = max(node["enum"], key=len)
        else:
            segment[name] = "".join(
                chr(rng.randint(*rng.choice(ranges))) for _ in range(node["maxLength"])
            )
    event = json.loads(example_paths()[0].read_text())
    event["segment"] = segment
    event["event_time"] = T0.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    limits = Limits(max_message_bytes=1 << 20, max_future=WINDOW, max_age=timedelta(days=7))
    checker = RecordChecker(limits, screen=screen_pattern(), detect=detector_names)
    assert checker.check(json.dumps(event).encode(), T0).errors == []
    too_long = copy.deepcopy(event)
    too_long["segment"]["locale"] += segment["locale"][0]
    assert checker.check(json.dumps(too_long).encode(), T0).errors != []
    return segment


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/w.db"
    else:
        url = request.getfixturevalue("postgres").create_database(f"limits_{uuid.uuid4().hex[:12]}")
    made = make_engine(url)
    migrate(made)
    yield made
    made.dispose()


def _result(batch: int, start: datetime, segments: list[dict[str, str]]) -> BatchResult:
    aggregates, histograms = [], []
    for segment in segments:
        row: dict[str, Any] = {
            "window_start": start,
            "window_end": start + WINDOW,
            "dimension_set": ",".join(DIMS),
            **segment,
            **dict.fromkeys(counter_ids(), 0),
            "users_sketch": None,
        }
        row.update(events=200, events_seen=200, violations=60)  # 30 %: the rule fires
        aggregates.append(row)
        histograms.append(
            {
                "window_start": start,
                "dimension_set": ",".join(DIMS),
                **segment,
                "distribution": "latency_ms",
                "bin": 3,
                "count": 200,
            }
        )
    return BatchResult(
        query_id="q", batch_id=batch, topic="t", started_at=start, input_rows=200,
        late_rows=0, aggregated_rows=200, watermark_before=None, watermark_after=None,
        offsets=[OffsetRange("t", 0, batch * 1000, batch * 1000 + 199, 200)],
        aggregates=aggregates, histograms=histograms,
        # Each value is admitted once, in the first batch.
        admissions=sorted({(d, s[d], 200) for s in segments for d in DIMS}) if batch == 0 else [],
    )  # fmt: skip


def _key_rows(conn: Any, sink: WarehouseSink, start: datetime, segment: dict[str, str]) -> None:
    """Rows of the drift and rate-test tables for the segment (same keys as the aggregates)."""
    base = {"window_start": start, "dimension_set": ",".join(DIMS), **segment}
    for table, extra in (
        (sink.tables.drift, {"distribution": "latency_ms"}),
        (sink.tables.rate_tests, {"rate_id": "violation_rate"}),
    ):
        row = {**base, **extra}
        for column in table.columns:
            if column.name not in row and not column.nullable and column.server_default is None:
                row[column.name] = _filler(column)
        conn.execute(table.insert(), [row])


def _filler(column: Any) -> Any:
    python_type = column.type.python_type
    if python_type is datetime:
        return T0
    if python_type is str:
        return "x"
    return python_type(0)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_longest_segments_commit_with_a_firing_alert(engine, script):
    segments = [_longest_segment(script, seed) for seed in (1, 2)]
    sink = WarehouseSink(engine)
    sink.set_min_distinct_users(1)
    alerts = AlertEngine(
        parse_rules(RULES, "safety.yaml"), sink.tables, DIMS, channels=CHANNELS, window=WINDOW
    )
    transitions: list[Any] = []
    for w in range(2):  # the alert fires, then is still firing (the state row is updated)
        start = T0 + w * WINDOW

        def derive(conn: Any, start: datetime = start) -> None:
            for segment in segments:
                _key_rows(conn, sink, start, segment)
            transitions.extend(alerts.evaluate(conn, [start], now=start + WINDOW))

        sink.commit(_result(w, start, segments), now=start + WINDOW, derive=derive)

    expected = sorted(tuple((d, s[d]) for d in DIMS) for s in segments)
    assert sorted(t.segment for t in transitions) == expected
    assert {t.to_status for t in transitions} == {"firing"}
    with engine.connect() as conn:
        agg = conn.execute(select(sink.tables.agg)).mappings().all()
        state = conn.execute(select(sink.tables.alert_state)).mappings().all()
        history = conn.execute(select(sink.tables.alert_history)).mappings().all()
        outbox = conn.execute(select(sink.tables.outbox)).mappings().all()
        values = conn.execute(select(sink.tables.dimension_values)).mappings().all()
    # Stored whole: nothing truncated or altered.
    assert sorted((r["window_start"].replace(tzinfo=None), r["locale"]) for r in agg) == sorted(
        (start.replace(tzinfo=None), s["locale"]) for start in (T0, T0 + WINDOW) for s in segments
    )
    assert sorted(parse_segment(r["segment"]) for r in state) == expected
    assert [(r["status"], r["true_windows"]) for r in state] == [("firing", 2)] * 2
    assert sorted(parse_segment(r["segment"]) for r in history) == expected
    # Firing in window 0, still firing in window 1: one row per channel each time.
    assert len(outbox) == 2 * len(segments) * len(CHANNELS)
    assert {r["dedup_key"].split("|")[1] for r in outbox} == {r["segment"] for r in state}
    assert {(r["dimension"], r["value"]) for r in values} >= {
        (d, s[d]) for s in segments for d in DIMS
    }
    # A window evaluated again is a no-op: the unique keys (md5 on PostgreSQL) match the
    # engine's conflict targets.
    with engine.begin() as conn:
        assert alerts.evaluate(conn, [T0 + WINDOW], now=T0 + 2 * WINDOW) == []
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(sink.tables.outbox)) == len(outbox)
        assert conn.scalar(select(func.count()).select_from(sink.tables.alert_history)) == len(
            history
        )
        if engine.dialect.name == "postgresql":
            types = dict(
                conn.execute(
                    text(
                        "SELECT table_name || '.' || column_name, data_type "
                        "FROM information_schema.columns "
                        "WHERE column_name IN ('segment', 'dedup_key') "
                        "AND table_name IN ('alert_state', 'alert_history', "
                        "'notification_outbox')"
                    )
                ).all()
            )
            assert types == {
                "alert_state.segment": "text",
                "alert_history.segment": "text",
                "notification_outbox.dedup_key": "text",
            }
