"""Every record the contract accepts fits the warehouse, and no record fails its batch:
length limits on the segment values (counted in characters, whatever their UTF-8 size), ids
of their exact length (so a trailing newline, which Python's `$` lets through a pattern, is
rejected), and the catch-all reason `unprocessable` when checking a record raises.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from sqlalchemy import String

from pipelines.contract.detailed import detailed
from pipelines.contract.reasons import UNPROCESSABLE
from pipelines.contract.records import Limits, RecordChecker, _FastPath
from pipelines.contract.shapes import INPUT_SCHEMA
from pipelines.contract.validate import validate_event
from pipelines.privacy.detectors import detector_names, screen_pattern
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.stream.counting import Counting
from pipelines.stream.merge import merge_partials
from pipelines.stream.partials import partial_counts
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.tables import Tables
from schemas import event_schema, example_paths

SCHEMA = event_schema("1")
EXAMPLE = json.loads(example_paths()[0].read_text())
FAST = _FastPath(SCHEMA)
LIMITS = Limits(
    max_message_bytes=1_000_000, max_future=timedelta(minutes=5), max_age=timedelta(days=7)
)
SEGMENT_LIMIT = 50  # docs/contract.md
FREE_SEGMENT_FIELDS = [d for d in SEGMENT_DIMENSIONS if d != "risk_tier"]  # risk_tier: enum
# One character each of 1, 2, 3 and 4 UTF-8 bytes (the JSON escapes of the last: 12 bytes).
CHARACTERS = ["a", "é", "中", "\U00020000"]


def _fresh(**segment: str) -> dict:
    event = copy.deepcopy(EXAMPLE)
    event["event_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event["segment"].update(segment)
    return event


def _verdicts(event: dict) -> tuple[bool, bool, bool, bool]:
    """(reference validator, detailed path, fast path, checker) accept `event`."""
    raw = json.dumps(event).encode()
    _, errors = detailed(raw, SCHEMA)
    checker = RecordChecker(LIMITS, screen=screen_pattern(), detect=detector_names)
    outcome = checker.check(raw, datetime.now(UTC))
    return (not validate_event(event), not errors, FAST(raw) is not None, not outcome.errors)


def test_the_schema_gives_every_free_segment_value_the_limit():
    segment = SCHEMA["properties"]["segment"]["properties"]
    assert {n for n, node in segment.items() if "enum" not in node} == set(FREE_SEGMENT_FIELDS)
    for name in FREE_SEGMENT_FIELDS:
        assert segment[name]["maxLength"] == SEGMENT_LIMIT, name
    assert max(len(v) for v in segment["risk_tier"]["enum"]) <= SEGMENT_LIMIT


@pytest.mark.parametrize("field", FREE_SEGMENT_FIELDS)
@pytest.mark.parametrize("char", CHARACTERS)
def test_segment_values_are_accepted_at_the_limit_and_rejected_above(field, char):
    # Characters, not bytes: 50 four-byte characters (200 UTF-8 bytes) are accepted.
    assert _verdicts(_fresh(**{field: char * SEGMENT_LIMIT})) == (True,) * 4
    assert _verdicts(_fresh(**{field: char * (SEGMENT_LIMIT + 1)})) == (False,) * 4


def test_a_long_segment_value_is_a_schema_violation_naming_its_field():
    raw = json.dumps(_fresh(locale="x" * 5000)).encode()
    checker = RecordChecker(LIMITS, screen=screen_pattern(), detect=detector_names)
    outcome = checker.check(raw, datetime.now(UTC))
    assert outcome.errors == [
        f"schema_violation|$.segment.locale: longer than {SEGMENT_LIMIT} characters"
    ]


def test_the_warehouse_columns_hold_the_longest_accepted_values(tmp_path):
    """Each column that stores a segment value is at least as long as the contract's limit
    (PostgreSQL counts varchar lengths in characters, as the contract does). The columns of
    JSON segments are text on PostgreSQL (tests/integration/test_segment_limits_postgres.py);
    SQLite ignores declared lengths."""
    engine = make_engine(f"sqlite:///{tmp_path}/w.db")
    migrate(engine)
    tables = Tables(engine)
    columns = [
        getattr(tables, name).c[d]
        for name in ("agg", "hist", "drift", "rate_tests")
        for d in SEGMENT_DIMENSIONS
    ]
    columns.append(tables.dimension_values.c.value)
    for column in columns:
        assert isinstance(column.type, String)
        assert column.type.length is not None and column.type.length >= SEGMENT_LIMIT, column
    engine.dispose()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", "8f14e45f-ceea-467a-9575-3c9e1c0e2b8a"),
        ("tenant_id", "ab" * 32),
        ("user_id", "0123456789abcdef" * 4),
        ("session_id", "f" * 64),
    ],
)
def test_ids_with_a_trailing_newline_are_rejected(field, value):
    good = _fresh()
    good[field] = value
    assert _verdicts(good) == (True,) * 4
    bad = _fresh()
    bad[field] = value + "\n"
    # The pattern alone lets it through in Python (`$` matches before a final newline).
    node = SCHEMA["properties"][field]
    assert re.search(node["pattern"], bad[field]) is not None
    assert _verdicts(bad) == (False,) * 4


def test_an_event_time_with_a_trailing_newline_is_rejected():
    event = _fresh()
    event["event_time"] += "\n"
    raw = json.dumps(event).encode()
    _, errors = detailed(raw, SCHEMA)
    assert errors == ["schema_violation|$.event_time: mistyped, expected string (date-time)"]
    assert FAST(raw) is None


# --- unprocessable -------------------------------------------------------------------------


class _Broken(RuntimeError):
    pass


def _detect(text: str) -> list[str]:
    """A detector with a defect: it raises on one text (quoting it, as errors may)."""
    if "trigger-defect" in text:
        raise _Broken(f"cannot read {text!r}")
    return detector_names(text)


def _batch(values: list[bytes | None]) -> pa.RecordBatch:
    n = len(values)
    stamp = datetime.now(UTC)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(["t"] * n),
            pa.array([0] * n, pa.int32()),
            pa.array(range(n), pa.int64()),
            pa.array([stamp] * n, pa.timestamp("us", tz="UTC")),
            pa.array(values, pa.binary()),
        ],
        schema=INPUT_SCHEMA,
    )


def test_a_record_whose_check_raises_is_unprocessable_and_the_batch_goes_on():
    # The screen flags the trigger, so the (defective) detector reads that text.
    checker = RecordChecker(LIMITS, screen=r"trigger-defect|" + screen_pattern(), detect=_detect)
    broken = _fresh()
    broken["excerpts"] = {"prompt": "please trigger-defect now", "response": None}
    values: list[bytes | None] = [
        json.dumps(_fresh()).encode(),
        json.dumps(broken).encode(),
        b"not json",
        json.dumps(_fresh()).encode(),
    ]
    with pytest.raises(_Broken):  # what the batch would have died of
        _detect("trigger-defect")
    rows = checker.check_batch(_batch(values), watermark=None).to_pylist()
    assert [r["reason"] for r in rows] == [None, UNPROCESSABLE, "invalid_json", None]
    # Only the exception's class: its message quotes the record's text.
    assert rows[1]["errors"] == ["unprocessable|$: _Broken"]
    assert rows[1]["event"] is None and rows[1]["detectors"] is None
    assert rows[1]["value"] == values[1]  # kept for the dead-letter topic
    assert rows[0]["event"]["event_id"] == EXAMPLE["event_id"]


def test_every_reason_the_checks_write_is_a_known_fate():
    """Each `<CODE>|<path>: ...` error the record checks can write names a reject reason
    the exporter and the ledger know (or `late`, which is not a rejection).
    """
    import re
    from pathlib import Path

    from pipelines.contract import reasons
    from pipelines.monitoring import REJECT_REASONS as EXPORTED

    folder = Path(reasons.__file__).parent
    written = set()
    for name in ("records.py", "detailed.py", "columns.py"):
        written |= set(re.findall(r'f"\{([A-Z_]+)\}\|', (folder / name).read_text()))
    assert written >= {"UNPROCESSABLE", "INVALID_JSON", "MESSAGE_TOO_LARGE", "LATE"}
    for code in written:
        value = getattr(reasons, code)
        assert value == reasons.LATE or value in reasons.REJECT_REASONS, code
    assert UNPROCESSABLE in EXPORTED


# --- NUL characters ------------------------------------------------------------------------


def test_a_segment_value_with_a_nul_character_is_rejected_naming_its_field():
    """PostgreSQL text cannot hold U+0000: such a value would fail the commit."""
    checker = RecordChecker(LIMITS, screen=screen_pattern(), detect=detector_names)
    event = _fresh(locale="en\x00US")
    raw = json.dumps(event).encode()
    assert b"\\u0000" in raw  # valid JSON, valid for the JSON Schema
    assert _verdicts(event)[:3] == (True, True, True)
    outcome = checker.check(raw, datetime.now(UTC))
    assert outcome.errors == ["schema_violation|$.segment.locale: holds a NUL character (U+0000)"]
    # With another violation too, the segment is named, so that the record is not counted
    # in its segment (pipelines.stream.counting skips records with a `$.segment` error).
    event["request"]["input_tokens"] = -1
    outcome = checker.check(json.dumps(event).encode(), datetime.now(UTC))
    assert sorted(outcome.errors) == [
        "schema_violation|$.request.input_tokens: below minimum 0",
        "schema_violation|$.segment.locale: holds a NUL character (U+0000)",
    ]
    # Elsewhere (not stored in the warehouse) a NUL is left to the schema.
    event = _fresh()
    event["excerpts"] = {"prompt": "a\x00b", "response": None}
    assert checker.check(json.dumps(event).encode(), datetime.now(UTC)).errors == []


# --- the ledger's accounting ---------------------------------------------------------------


def test_unprocessable_and_nul_records_close_the_accounting_and_count_in_no_segment():
    dims = ("product_surface", "locale")
    counting = Counting(window_s=300, dimensions=dims, users_lg_k=12, screen=screen_pattern())
    checker = RecordChecker(LIMITS, screen=r"trigger-defect|" + screen_pattern(), detect=_detect)
    good = [_fresh(locale=f"l{i}") for i in range(3)]
    broken = _fresh(locale="broken")
    broken["excerpts"] = {"prompt": "trigger-defect", "response": None}
    nul = _fresh(locale="n\x00ul")
    nul_and_more = _fresh(locale="n\x00ul")
    nul_and_more["refusal"]["style"] = "rude"  # a safety field fails too
    values: list[bytes | None] = [
        json.dumps(e).encode() for e in (*good, broken, nul, nul_and_more)
    ]
    out = checker.check_batch(_batch(values), watermark=None)
    counts = merge_partials(
        [row for p in partial_counts([out], counting, frozenset()) for row in p.to_pylist()],
        counting,
    )
    by_status: dict[str, int] = {}
    for s in counts.stats:
        by_status[s["status"]] = by_status.get(s["status"], 0) + s["rows"]
    assert by_status == {"aggregated": 3, UNPROCESSABLE: 1, "schema_violation": 2}
    assert sum(by_status.values()) == len(values)
    # Only the clean records reach a segment (none holds "broken" or a NUL).
    assert sorted(a["locale"] for a in counts.aggregates) == ["l0", "l1", "l2"]
    assert all(a["events_seen"] == 1 for a in counts.aggregates)
