"""The record checks agree with the reference JSON Schema validator (jsonschema), the fast
path gives the same outcome as the detailed path for every record, and no record, however
hostile, makes a batch raise."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipelines.contract.detailed import detailed
from pipelines.contract.records import Limits, RecordChecker, _FastPath
from pipelines.contract.shapes import INPUT_SCHEMA, output_schema, parse_date_time
from pipelines.contract.validate import validate_event
from pipelines.privacy.detectors import detector_names, screen_pattern
from schemas import event_schema, example_paths

EXAMPLES = [json.loads(p.read_text()) for p in example_paths()]
SCHEMA = event_schema("1")
FAST = _FastPath(SCHEMA)
LIMITS = Limits(
    max_message_bytes=1_000_000, max_future=timedelta(minutes=5), max_age=timedelta(days=7)
)
CHECKER = RecordChecker(LIMITS, screen=screen_pattern(), detect=detector_names)


def _paths(node, prefix=()):
    for name, child in node.get("properties", {}).items():
        yield (*prefix, name)
        if "properties" in child:
            yield from _paths(child, (*prefix, name))


PATHS = list(_paths(SCHEMA))
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(-4000, 4000).map(lambda n: n + 0.25),
    st.integers(0, 3).map(float),  # 1.0 is an integer to JSON Schema
    st.integers(2**63 - 2, 2**64),  # around the 64-bit limit the warehouse stores
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=2),
    st.lists(st.sampled_from(["hate", "violence", "other"]), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=3), st.integers(-1, 3), max_size=2),
    # At and just above the length limits, in characters of 1 to 4 UTF-8 bytes; ids with a
    # trailing newline (which Python's `$` lets through a pattern).
    st.sampled_from(["a", "中", "\U00020000"]).flatmap(
        lambda c: st.sampled_from([c * 50, c * 51, c * 64, c * 65])
    ),
    st.sampled_from(["8f14e45f-ceea-467a-9575-3c9e1c0e2b8a", "ab" * 32, "EMAIL"]).flatmap(
        lambda v: st.sampled_from([v, v + "\n"])
    ),
)
MUTATION = st.tuples(
    st.integers(0, len(EXAMPLES) - 1),
    st.sampled_from(["delete", "set", "extra", "none"]),
    st.sampled_from(PATHS),
    JSON_VALUES,
)


def _mutate(example, op, path, value):
    event = copy.deepcopy(example)
    parent = event
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
        if parent is None:
            return event
    if not isinstance(parent, dict):
        return event
    if op == "delete":
        parent.pop(path[-1], None)
    elif op == "set":
        parent[path[-1]] = value
    elif op == "extra":
        parent["zz_" + path[-1]] = value
    return event


def _present(value):
    """`value` without null fields (an absent optional field is null in the typed event)."""
    if isinstance(value, dict):
        return {k: _present(v) for k, v in value.items() if v is not None}
    return value


def _reference_errors(event) -> list[str]:
    """jsonschema's verdict, plus the two limits the schema cannot state: integers fit in
    64 bits (the warehouse's bigint) and a date-time is a real instant."""
    errors = validate_event(event)

    def walk(node, value):
        if isinstance(value, dict):
            for name, child in node.get("properties", {}).items():
                if name in value:
                    walk(child, value[name])
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                for v in value.values():
                    walk(extra, v)
        elif node.get("type") == "integer" and isinstance(value, int | float):
            if not isinstance(value, bool) and not -(2**63) <= value < 2**63:
                errors.append("integer out of range")
        elif node.get("format") == "date-time" and isinstance(value, str):
            try:
                datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
            except ValueError:
                try:
                    datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
                except ValueError:
                    errors.append("not a real instant")

    walk(SCHEMA, event)
    return errors


@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
    phases=[Phase.explicit, Phase.generate],  # a failure prints its records: no shrinking
)
@given(mutations=st.lists(MUTATION, min_size=600, max_size=600))
def test_record_checks_agree_with_jsonschema(mutations):
    disagreements = []
    for index, op, path, value in mutations:
        event = _mutate(EXAMPLES[index], op, path, value)
        raw = json.dumps(event).encode()
        fast = FAST(raw)
        typed, errors = detailed(raw, SCHEMA)
        # The fast path accepts only what the detailed path accepts.
        assert fast is None or not errors, (raw, errors)
        if fast is not None:
            assert _present(fast) == _present(typed)
        if bool(errors) != bool(_reference_errors(event)):
            disagreements.append((raw, errors, _reference_errors(event)))
    assert not disagreements, disagreements[:3]


def _crafted() -> list[tuple[bytes, bool]]:
    """Records that are valid in an unusual layout, or invalid in an unusual way."""
    base = EXAMPLES[0]
    text = json.dumps(base)

    def edit(fn):
        event = copy.deepcopy(base)
        fn(event)
        return json.dumps(event).encode()

    return [
        (json.dumps(base, indent=2).encode(), True),
        ((text + " \n").encode(), True),
        (text.replace('"event_time": "', '"event_time" : "', 1).encode(), True),
        (edit(lambda e: e["request"].update(input_tokens=3.0)), True),  # integral number
        (edit(lambda e: e["segment"].update(feature='a\\"b", "zz": 1, "' + "\\u0041" * 5)), True),
        ((text + " []").encode(), False),  # trailing data
        ((text[:-1] + ', "event_id": "dup"}').encode(), False),  # duplicate key, last wins
        (edit(lambda e: e["segment"].update(feature=7)), False),  # number for free text
        (edit(lambda e: e["segment"].update(feature={})), False),
        (edit(lambda e: e["injection"].pop("source")), False),  # required even though nullable
        (edit(lambda e: e.update(zz=None)), False),
        (edit(lambda e: e["request"].update(input_tokens=True)), False),
        (edit(lambda e: e["request"].update(input_tokens=2**63)), False),
        (edit(lambda e: e["moderation"].update(flagged_categories=["hate", "hate"])), False),
        (edit(lambda e: e.update(event_time="2026-02-30T10:00:00Z")), False),
        (edit(lambda e: e.update(event_time="2026-03-01T25:00:00Z")), False),
        (edit(lambda e: e.update(event_time="2026-03-01T10:00:00Z\n")), False),
        (edit(lambda e: e.update(event_time="2026-03-01T10:00:00+00:00")), False),
    ]


@pytest.mark.parametrize(("raw", "valid"), _crafted())
def test_crafted_records(raw, valid):
    typed, errors = detailed(raw, SCHEMA)
    assert (not errors) is valid, errors
    fast = FAST(raw)
    assert (fast is not None) <= valid
    if fast is not None:
        assert _present(fast) == _present(typed)


def test_date_times_are_real_instants():
    assert parse_date_time("2026-11-26T06:44:38Z") == datetime(2026, 11, 26, 6, 44, 38, tzinfo=UTC)
    assert parse_date_time("2026-11-26T06:44:38.5Z") == datetime(
        2026, 11, 26, 6, 44, 38, 500000, tzinfo=UTC
    )
    assert parse_date_time("2028-02-29T00:00:00.000001Z") is not None
    bad_ones = [
        "2027-02-29T00:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T06:60:00Z",
        "2026-11-26T06:44:38.1234567Z",
        "2026-11-26 06:44:38Z",
        "2026-11-26T06:44:38Z\n",
    ]
    for bad in bad_ones:
        assert parse_date_time(bad) is None, bad


def _batch(values, timestamps=None):
    n = len(values)
    stamp = datetime.now(UTC)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(["t"] * n),
            pa.array([0] * n, pa.int32()),
            pa.array(range(n), pa.int64()),
            pa.array(timestamps or [stamp] * n, pa.timestamp("us", tz="UTC")),
            pa.array(values, pa.binary()),
        ],
        schema=INPUT_SCHEMA,
    )


def _fresh(event, **changes):
    event = copy.deepcopy(event)
    event["event_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event.update(changes)
    return event


def test_batch_outcomes_and_typed_events():
    good = [_fresh(e) for e in EXAMPLES]
    leak = _fresh(EXAMPLES[0])
    leak["excerpts"] = {"prompt": "mail me at jane.doe@example.com", "response": None}
    ahead = _fresh(EXAMPLES[0])
    ahead["event_time"] = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    values = [json.dumps(e).encode() for e in [*good, leak, ahead]]
    values += [b"not json", None, b"x" * 2_000_000, b'{"schema_version": "9"}']
    out = CHECKER.check_batch(_batch(values), watermark=None)
    assert out.schema == output_schema()
    rows = out.to_pylist()
    reasons = [r["reason"] for r in rows]
    assert reasons == [None] * len(good) + [
        None,  # counted, the text that held personal data dropped (see below)
        "event_time_out_of_range",
        "invalid_json",
        "invalid_json",
        "message_too_large",
        "unknown_schema_version",
    ]
    counted = rows[len(good)]
    assert counted["detectors"] == ["email"] and counted["errors"] == []
    assert counted["event"]["excerpts"] == {"prompt": "[REDACTED]", "response": None}
    assert counted["event"]["segment"] == leak["segment"]  # unflagged texts are kept
    # Clean accepted records keep no bytes; rejected ones and those whose text was dropped
    # keep theirs for the DLQ.
    assert [r["value"] for r in rows] == [
        v if r["reason"] is not None or r["detectors"] else None
        for r, v in zip(rows, values, strict=True)
    ]
    for event, row in zip(good, rows, strict=False):
        typed = row["event"]
        assert typed["event_id"] == event["event_id"]
        assert typed["event_time"] == datetime.strptime(
            event["event_time"], "%Y-%m-%dT%H:%M:%S.%fZ"
        ).replace(tzinfo=UTC)
        assert typed["request"] == {
            **event["request"],
            "latency_ms": float(event["request"]["latency_ms"]),
        }
        assert dict(typed["privacy"]["entity_counts"]) == event["privacy"]["entity_counts"]
        assert (
            typed["moderation"]["flagged_categories"] == event["moderation"]["flagged_categories"]
        )


def test_late_records_behind_the_watermark():
    old = _fresh(EXAMPLES[0])
    old["event_time"] = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = _fresh(EXAMPLES[1])
    watermark = datetime.now(UTC) - timedelta(minutes=10)
    out = CHECKER.check_batch(
        _batch([json.dumps(old).encode(), json.dumps(new).encode()]), watermark
    ).to_pylist()
    assert [r["reason"] for r in out] == ["late", None]
    assert out[0]["errors"] == [f"late|$.event_time: behind the watermark {watermark}"]


def test_hostile_records_never_raise():
    base = json.dumps(_fresh(EXAMPLES[0]))
    hostile = [
        b"[" * 5000 + b"]" * 5000,  # deep nesting
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        ("9" * 5000).encode(),  # an integer of 5,000 digits
        base.replace('"feature": "', '"feature": "\\ud800', 1).encode(),  # lone surrogate
        base.encode()[:-1] + b', "zz": "\xff\xfe"}',  # invalid UTF-8
        base.replace('"input_tokens": ', '"input_tokens": 1' + "0" * 400 + ", ", 1).encode(),
        b"",
        b"\x00\x01",
        b'{"schema_version": ["1"]}',
        b'{"event_id": {}}',
    ]
    out = CHECKER.check_batch(_batch(hostile), watermark=None).to_pylist()
    assert len(out) == len(hostile)
    assert all(r["reason"] in ("invalid_json", "schema_violation", "unknown_schema_version")
               for r in out), [(r["reason"], r["errors"]) for r in out]  # fmt: skip
    surrogate = out[3]
    assert surrogate["reason"] == "invalid_json" and surrogate["event"] is None


def test_screen_memory_keeps_only_passed_texts_and_changes_nothing():
    checker = RecordChecker(LIMITS, screen=screen_pattern(), detect=detector_names)
    leak = _fresh(EXAMPLES[0])
    leak["segment"]["feature"] = "call +1 415 555 0100"
    values = [json.dumps(e).encode() for e in (_fresh(EXAMPLES[0]), leak, _fresh(EXAMPLES[1]))]
    first = checker.check_batch(_batch(values), watermark=None).column("detectors").to_pylist()
    again = checker.check_batch(_batch(values), watermark=None).column("detectors").to_pylist()
    assert first == again == [None, ["phone"], None]
    assert leak["segment"]["feature"] not in checker._passed
    assert EXAMPLES[0]["segment"]["feature"] in checker._passed
