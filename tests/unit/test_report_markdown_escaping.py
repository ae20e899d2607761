"""The Markdown report shows hostile segment values literally: tables intact, no tag, no bidi.

A warehouse is filled through the real sink with segment values that try to inject HTML,
break a table (`|`), add Markdown emphasis or links, or hide text with bidi overrides and
zero-width characters; the report rendered from it is parsed as GitHub-flavoured Markdown.
"""

from __future__ import annotations

import html
import random
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from pipelines.metrics.catalog import counter_ids
from pipelines.report.markdown import md_escape, render_markdown
from pipelines.report.model import IsoWeek
from pipelines.report.weekly import collect_weekly
from pipelines.segments import SEGMENT_DIMENSIONS, segment_key
from pipelines.settings import Settings
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import Tables
from tests.analyst_data import _sketch

WEEK = IsoWeek(2026, 47)
DIMENSIONS = ("product_surface", "model_version", "locale")
TAG = "<img src=x onerror=alert(1)>"
PIPES = "a|b||c"
EMPHASIS = "*bold* _it_ [link](http://evil.example) `code` ~~x~~ \\"
BIDI = "safe\u202egnp.exe\u202c\u2066iso\u2069\u200bzero\u200d\ufeff\u2028line\nbreak"
# (product_surface, model_version, locale): all large enough to be shown
SEGMENTS = [
    (TAG, "m-1", "de-DE"),
    ("chat", PIPES, EMPHASIS),
    (BIDI, "m-1", "en-US"),
    ("chat", "m-1", "fr-FR"),
]
RULE = "Leak](javascript:alert(1)) <b>x</b> | y"


def _fill(sink: WarehouseSink) -> None:
    rng = random.Random(3)
    sink.set_min_distinct_users(5)
    start0 = WEEK.start + timedelta(hours=1)
    for w in range(12):
        start = start0 + w * timedelta(hours=12)
        aggs = []
        for values in SEGMENTS:
            events = rng.randint(300, 600)
            row: dict[str, Any] = dict.fromkeys(counter_ids(), 0)
            row.update(
                window_start=start,
                window_end=start + timedelta(minutes=5),
                dimension_set=",".join(DIMENSIONS),
                **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
            )
            row.update(dict(zip(DIMENSIONS, values, strict=True)))
            row.update(
                events=events,
                violations=rng.randint(0, events // 5),
                refusals=rng.randint(0, events // 5),
                events_seen=events,
                telemetry_complete=events,
            )
            row["unflagged_events"] = events - row["violations"]
            row["users_sketch"] = _sketch([f"{values}-{w}-{i}" for i in range(50)])
            row["distinct_users"] = 50
            aggs.append(row)
        sink.commit(
            BatchResult(
                query_id="escaping",
                batch_id=w,
                topic="t",
                started_at=start,
                input_rows=sum(a["events"] for a in aggs),
                late_rows=0,
                aggregated_rows=sum(a["events"] for a in aggs),
                watermark_before=None,
                watermark_after=start,
                offsets=[OffsetRange("t", 0, w * 1000, w * 1000 + 999, 1000)],
                aggregates=aggs,
            )
        )


def _alert(engine) -> None:
    when = WEEK.start + timedelta(days=2)
    with engine.begin() as conn:
        conn.execute(
            insert(Tables(engine).alert_history),
            [
                {
                    "rule": RULE,
                    "segment": segment_key(tuple(zip(DIMENSIONS, SEGMENTS[1], strict=True))),
                    "window_start": when,
                    "from_status": "pending",
                    "to_status": status,
                    "severity": "sev2",
                    "metric": "violation_rate",
                    "value": 0.2,
                    "summary": "s",
                    "description": "",
                    "recorded_at": when + timedelta(minutes=minutes),
                    "firing_since": when if status == "firing" else None,
                }
                for status, minutes in (("firing", 5), ("resolved", 60))
            ],
        )


@pytest.fixture(scope="module")
def markdown(tmp_path_factory) -> str:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('md') / 'wh.db'}")
    migrate(engine)
    _fill(WarehouseSink(engine))
    _alert(engine)
    settings = Settings.load(
        environ={
            "SAFEWATCH_STREAM__DIMENSIONS": ",".join(DIMENSIONS),
            "SAFEWATCH_REPORT__MIN_EVENTS": "10",
        }
    )
    report = collect_weekly(engine, settings, WEEK, now=datetime(2026, 11, 24, tzinfo=UTC))
    return render_markdown(report, "charts")


# ---------------------------------------------------------------- a reference reader
def _cells(line: str) -> list[str]:
    """The cells of a GFM table row: split on pipes not preceded by a backslash."""
    inner = line.strip()
    assert inner.startswith("|") and inner.endswith("|") and not inner.endswith("\\|"), line
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner[1:-1])]


def _tables(text: str) -> list[list[list[str]]]:
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(_cells(line))
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _literal(cell: str) -> str:
    """What a Markdown reader shows for an escaped cell: backslash escapes, entities, codes."""
    text = re.sub(r"\\([\\`*_\[\]~|])", lambda m: f"\0{ord(m.group(1))}\0", cell)
    text = re.sub(r"\\u([0-9a-f]{4})", lambda m: chr(int(m.group(1), 16)), text)
    text = re.sub(r"\0(\d+)\0", lambda m: chr(int(m.group(1))), text)
    return html.unescape(text)


def _shown(value: str) -> str:
    """A segment value as the report shows it once read: line breaks become spaces."""
    return re.sub(r"[\t\n\r]", " ", value)


# ---------------------------------------------------------------- tests
def test_tables_keep_their_column_count(markdown):
    tables = _tables(markdown)
    assert len(tables) >= 5
    for table in tables:
        width = len(table[0])
        assert all(len(row) == width for row in table), table[0]
        assert set("".join(table[1])) <= {"-"}  # the delimiter row right after the header


def test_no_raw_tag_and_no_invisible_character(markdown):
    assert "<" not in markdown and ">" not in markdown
    hidden = {c for c in markdown if unicodedata.category(c) in ("Cf", "Cc", "Zl", "Zp")}
    assert hidden <= {"\n"}
    assert "&lt;img src=x onerror=alert(1)&gt;" in markdown
    assert "\\u202e" in markdown and "\\u200b" in markdown and "\\u2066" in markdown


def test_every_segment_reads_back_exactly_from_the_risk_table(markdown):
    risk = next(t for t in _tables(markdown) if t[0][1].startswith("Segment"))
    shown = {_literal(row[1]) for row in risk[2:]}
    assert shown == {_shown(" / ".join(s)) for s in SEGMENTS}


def test_versions_and_the_incident_link_read_back(markdown):
    versions = next(t for t in _tables(markdown) if t[0][:2] == ["Dimension", "Version"])
    assert _shown(PIPES) in {_literal(row[1]) for row in versions[2:]}
    incidents = next(t for t in _tables(markdown) if t[0][0].startswith("Alert"))
    link = incidents[2][0]
    match = re.fullmatch(r"\[(.*)\]\(([^()\s]*)\)", link)
    assert match, link
    assert _literal(match.group(1)) == RULE
    assert "(" not in match.group(2) and "<" not in match.group(2)
    assert _literal(incidents[2][2]) == _shown(" / ".join(SEGMENTS[1]))


def test_no_emphasis_or_link_comes_from_data(markdown):
    # Outside link syntax the renderer writes itself, no unescaped Markdown character remains.
    body = re.sub(r"!?\[(?:\\.|[^\]\\])*\]\([^()\s]*\)", "", markdown)
    body = body.replace("**", "")  # the renderer's own bold (statuses, overall)
    assert not re.search(r"(?<!\\)[`_\[\]~]", body)
    assert not re.search(r"(?<![\\*])\*(?!\*)", body)


@pytest.mark.parametrize(("value", "escaped"), [
    ("plain de-DE 1.5 %", "plain de-DE 1.5 %"),
    ("a|b", "a\\|b"),
    ("<b>&amp;", "&lt;b&gt;&amp;amp;"),
    ("x\u202ey", "x\\u202ey"),
    ("x\U000e0001y", "x\\U000e0001y"),
    ("two\nlines", "two lines"),
])  # fmt: skip
def test_md_escape(value, escaped):
    assert md_escape(value) == escaped
    assert _literal(escaped) == _shown(value) or "\\U" in escaped
