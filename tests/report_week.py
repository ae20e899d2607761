"""One ISO week of traffic with known counts, for the weekly report's wording, numbers and
layout (unit tests) and for rendering it in Chromium (integration tests).

6,644 events over four segments with production-like names (every segment far above k
distinct users, so none is held back), no PII leak and no redaction failure (0 of 6,644:
too few to confirm a 0.01 % target), complete telemetry, and three alert episodes. Filled
through the real sink, so the report reads it as it reads the job's warehouse.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from pipelines.metrics.catalog import counter_ids
from pipelines.report.model import IsoWeek
from pipelines.segments import SEGMENT_DIMENSIONS, segment_key
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import Tables
from tests.analyst_data import _sketch

WEEK = IsoWeek(2026, 47)
NOW = datetime.fromisoformat("2026-11-24T09:00:00+00:00")  # Tuesday of the next week
DIMS = ("product_surface", "model_version", "locale")
SEGMENTS = (
    ("chat", "atlas-l-2026.10.2", "de-DE"),
    ("search", "atlas-s-2026.08.1", "ja-JP"),
    ("agent", "atlas-agent-2026.10.0-preview-longcontext", "en-GB"),
    ("api", "atlas-l-2026.09.5", "pt-BR"),
)
EVENTS = 6_644
WINDOWS = [WEEK.start + timedelta(days=d, hours=h) for d in range(7) for h in (9, 17)]
USERS_PER_WINDOW = 50
# (rule, severity, segment index, fired after the week's start, resolved after firing)
ALERTS = (
    ("HarmfulOutputRateHigh", "sev2", 0, timedelta(days=1, hours=9), timedelta(minutes=20)),
    ("RefusalSpike", "sev2", 2, timedelta(days=3, hours=17), timedelta(hours=2)),
    ("JailbreakSuccess", "sev3", 1, timedelta(days=5, hours=9), timedelta(minutes=45)),
)


def counters(seed: int = 7) -> dict[tuple[datetime, tuple[str, ...]], dict[str, int]]:
    """Counters per (window, segment), `EVENTS` events in all."""
    rng = random.Random(seed)
    cells = [(w, s) for w in WINDOWS for s in SEGMENTS]
    base, extra = divmod(EVENTS, len(cells))
    out = {}
    for i, cell in enumerate(cells):
        events = base + (1 if i < extra else 0)
        c = dict.fromkeys(counter_ids(), 0)
        violations = rng.randint(0, 3) if cell[1] is SEGMENTS[0] else rng.randint(0, 1)
        refusals = rng.randint(2, 9)
        c.update(
            events=events,
            events_seen=events,
            telemetry_complete=events,
            violations=violations,
            violations_violence=violations,
            unflagged_events=events - violations,
            refusals=refusals,
            over_refusals=refusals - 1,
            injection_attempts=4,
            injection_successes=rng.randint(0, 1),
            jailbreak_attempts=3,
            jailbreak_successes=rng.randint(0, 1),
            tool_call_events=30,
            unauthorized_tool_call_events=rng.randint(0, 1),
        )
        out[cell] = c
    return out


def fill(engine: Engine) -> dict[tuple[datetime, tuple[str, ...]], dict[str, int]]:
    """Write the week into a migrated warehouse; return its counters."""
    rows = counters()
    sink = WarehouseSink(engine)
    for batch, w in enumerate(WINDOWS):
        aggs: list[dict[str, Any]] = []
        for s, values in enumerate(SEGMENTS):
            key = dict.fromkeys(SEGMENT_DIMENSIONS, "*")
            key.update(zip(DIMS, values, strict=True))
            users = [f"u{s}-{(batch * 17 + i) % 200}" for i in range(USERS_PER_WINDOW)]
            aggs.append(
                {
                    "window_start": w,
                    "window_end": w + timedelta(minutes=5),
                    "dimension_set": ",".join(DIMS),
                    **key,
                    **rows[w, values],
                    "users_sketch": _sketch(users),
                }
            )
        events = sum(a["events"] for a in aggs)
        sink.commit(
            BatchResult(
                query_id="week",
                batch_id=batch,
                topic="t",
                started_at=w + timedelta(minutes=6),
                input_rows=events,
                late_rows=0,
                aggregated_rows=events,
                watermark_before=None,
                watermark_after=None,
                offsets=[OffsetRange("t", 0, batch * 1000, batch * 1000 + 999, 1000)],
                aggregates=aggs,
                quality_success=True,
            ),
            now=w + timedelta(minutes=7),
        )
    alerts = []
    for rule, severity, s, after, lasted in ALERTS:
        fired = WEEK.start + after
        segment = segment_key(tuple(zip(DIMS, SEGMENTS[s], strict=True)))
        for status, at in (("firing", fired), ("resolved", fired + lasted)):
            alerts.append(
                {
                    "rule": rule,
                    "segment": segment,
                    "window_start": at,
                    "from_status": "pending" if status == "firing" else "firing",
                    "to_status": status,
                    "severity": severity,
                    "metric": "violation_rate",
                    "value": 0.02,
                    "summary": f"{rule} in {' / '.join(SEGMENTS[s])}",
                    "description": "",
                    "recorded_at": at + timedelta(minutes=1),
                    "firing_since": fired if status == "firing" else None,
                }
            )
    with engine.begin() as conn:
        conn.execute(insert(Tables(engine).alert_history), alerts)
    return rows


def warehouse(folder: Path) -> tuple[str, Engine]:
    """A migrated SQLite warehouse in `folder` holding the week: (URL, engine)."""
    url = f"sqlite:///{folder / 'week.db'}"
    engine = make_engine(url)
    migrate(engine)
    fill(engine)
    return url, engine


def environ(url: str) -> dict[str, str]:
    """Settings for this warehouse: its URL and its dimension set."""
    return {"SAFEWATCH_WAREHOUSE__URL": url, "SAFEWATCH_STREAM__DIMENSIONS": ",".join(DIMS)}
