"""Check raw Kafka records against the event contract: bytes in, typed events and reasons out.

Pure functions over Arrow record batches (no Spark, no I/O), derived from the JSON Schema of
the event: the job runs `check_batch` on its executors (`DataFrame.mapInArrow`), the tests
call it directly.

`check_batch` first reads the whole batch by column (`pipelines.contract.columns`: Arrow's
JSON reader and Arrow compute, a few times cheaper per record); the records that path
proves valid are done. Every other record is decoded once and decided here, one by one.
Two paths decide a record here:
- the fast path decodes the bytes straight into types built from the schema (msgspec, in C):
  unknown keys, missing or null required fields, wrong JSON types, enums, ranges, patterns and
  lengths all fail the decode. Unique items and real calendar date-times are checked after
  it. A record that passes is valid, with no further work;
- every other record takes the detailed path: a generic decode, then one walk of the schema
  that names each violation with its JSON path and keeps every field that has the right type
  (the partial event still places a rejected record in its segment).
The fast path only ever accepts what the detailed path accepts (tests/unit/test_contract_
records.py checks both against the reference validator, jsonschema).

After the contract: event_time within [Kafka timestamp - max_age, + max_future], the PII
screen over the free text, then the watermark (late). The first failing check gives the
record's `reason`; `errors` lists '<reason>|<json path>: <message>' ([] when accepted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.columns import ColumnChecks, bool_mask, node_kind
from pipelines.contract.reasons import (
    EVENT_TIME_OUT_OF_RANGE,
    INVALID_JSON,
    LATE,
    MESSAGE_TOO_LARGE,
    SCHEMA_VIOLATION,
    UNKNOWN_SCHEMA_VERSION,
    UNPROCESSABLE,
)
from pipelines.segments import REDACTED_VALUE
from schemas import SUPPORTED_EVENT_VERSIONS, event_schema

if TYPE_CHECKING:
    from pipelines.privacy.detectors import AllowList


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
REDACTED_TEXT = REDACTED_VALUE  # what replaces a free text in which a detector hits
# RFC 3339 in UTC as the contract writes it, matched whole (no trailing newline).
_DATE_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                        r"(?:\.([0-9]{1,6}))?Z")  # fmt: skip

INPUT_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("value", pa.binary()),
    ]
)


def free_text_paths(node: dict[str, Any] | None = None, prefix: str = "") -> list[str]:
    """Dotted paths of the string fields a person could type into: no enum, pattern, format
    or const. These are where upstream redaction can fail, so the privacy screen reads them.
    """
    node = node if node is not None else event_schema("1")
    out: list[str] = []
    for name, child in node.get("properties", {}).items():
        kind, _ = node_kind(child)
        path = f"{prefix}{name}"
        if kind == "object" and "properties" in child:
            out += free_text_paths(child, path + ".")
        elif kind == "string" and not ({"enum", "pattern", "format", "const"} & child.keys()):
            out.append(path)
    return out


# --- Arrow types ---------------------------------------------------------------------------


def arrow_type(node: dict[str, Any]) -> pa.DataType:
    """The Arrow type of a schema node; every field nullable (a rejected event is partial)."""
    kind, _ = node_kind(node)
    if kind == "object" and "properties" in node:
        return pa.struct([(n, arrow_type(c)) for n, c in node["properties"].items()])
    if kind == "object":
        return pa.map_(pa.string(), arrow_type(node["additionalProperties"]))
    if kind == "array":
        return pa.list_(arrow_type(node["items"]))
    if kind == "string":
        return pa.timestamp("us", tz="UTC") if node.get("format") == "date-time" else pa.string()
    return {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}[kind]


def output_schema(schema: dict[str, Any] | None = None) -> pa.Schema:
    """The columns `check_batch` returns."""
    return pa.schema(
        [
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
            # Kept only for records that leave here rejected or late (the DLQ needs them).
            ("value", pa.binary()),
            ("event", arrow_type(schema if schema is not None else event_schema("1"))),
            ("errors", pa.list_(pa.string())),
            ("reason", pa.string()),
            ("detectors", pa.list_(pa.string())),
        ]
    )


# --- the fast path -------------------------------------------------------------------------


def _fast_type(node: dict[str, Any], name: str) -> Any:
    """A msgspec type that decodes exactly the values the node accepts (a subset, where
    msgspec cannot say it: unique items and calendar dates are checked after decoding).
    """
    kind, nullable = node_kind(node)
    result: Any
    if "const" in node:
        result = Literal[node["const"]]
    elif "enum" in node:
        result = Literal[tuple(v for v in node["enum"] if v is not None)]
    elif kind == "object" and "properties" in node:
        required = set(node.get("required", []))
        fields: list[Any] = []
        for child_name, child in node["properties"].items():
            child_type = _fast_type(child, child_name)
            if child_name in required:
                fields.append((child_name, child_type))
            else:
                # Absent is fine, JSON null only where the node allows it.
                fields.append((child_name, child_type | msgspec.UnsetType, msgspec.UNSET))
        result = msgspec.defstruct(
            f"_{name}", fields, forbid_unknown_fields=node.get("additionalProperties") is False
        )
    elif kind == "object":
        names = node.get("propertyNames", {})
        key: Any = str
        if "pattern" in names:
            key = Annotated[str, msgspec.Meta(pattern=names["pattern"])]
        result = dict[key, _fast_type(node["additionalProperties"], name)]  # type: ignore[misc,valid-type]
    elif kind == "array":
        result = list[_fast_type(node["items"], name)]  # type: ignore[misc]
    else:
        meta: dict[str, Any] = {}
        if "minimum" in node:
            meta["ge"] = node["minimum"]
        if "maximum" in node:
            meta["le"] = node["maximum"]
        if "maxLength" in node:
            meta["max_length"] = node["maxLength"]
        if "pattern" in node:
            meta["pattern"] = node["pattern"]
        if kind == "integer":
            meta["ge"] = max(meta.get("ge", INT64_MIN), INT64_MIN)
            meta["le"] = min(meta.get("le", INT64_MAX), INT64_MAX)
        base = {"string": str, "integer": int, "number": float, "boolean": bool}[kind]
        result = Annotated[base, msgspec.Meta(**meta)] if meta else base
    return result | None if nullable else result


def _unique_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, child in node.get("properties", {}).items():
        if child.get("uniqueItems"):
            out.append((*prefix, name))
        out += _unique_paths(child, (*prefix, name))
    return out


def _map_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, child in node.get("properties", {}).items():
        if node_kind(child)[0] == "object" and "properties" not in child:
            out.append((*prefix, name))
        out += _map_paths(child, (*prefix, name))
    return out


def _date_time_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, child in node.get("properties", {}).items():
        if child.get("format") == "date-time":
            out.append((*prefix, name))
        out += _date_time_paths(child, (*prefix, name))
    return out


def parse_date_time(text: str) -> datetime | None:
    """The instant of an RFC 3339 UTC date-time as the contract writes it, or None (also for
    dates that do not exist, such as Feb 30 or hour 25).
    """
    m = _DATE_TIME.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction = m.groups()
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                        int((fraction or "0").ljust(6, "0")), tzinfo=UTC)  # fmt: skip
    except ValueError:
        return None


class _FastPath:
    """Decode-and-validate in one step; None when the record needs the detailed path."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._decoder = msgspec.json.Decoder(_fast_type(schema, "event"))
        self._unique = _unique_paths(schema)
        self._maps = _map_paths(schema)
        self._date_times = _date_time_paths(schema)

    def __call__(self, value: bytes) -> dict[str, Any] | None:
        try:
            event = msgspec.to_builtins(self._decoder.decode(value))
        except (msgspec.DecodeError, RecursionError, ValueError):
            return None
        for path in self._unique:
            items = _get(event, path)
            if items is not None and len(set(items)) != len(items):
                return None
        for path in self._date_times:
            parent = _get(event, path[:-1])
            text = parent.get(path[-1])
            if text is not None:
                instant = parse_date_time(text)
                if instant is None:
                    return None
                parent[path[-1]] = instant
        for path in self._maps:
            parent = _get(event, path[:-1])
            entries = parent.get(path[-1]) if isinstance(parent, dict) else None
            if entries and len(entries) > 1:
                parent[path[-1]] = dict(sorted(entries.items()))  # as the columnar path
        return event  # type: ignore[no-any-return]


def _get(doc: Any, path: Iterable[str]) -> Any:
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


# --- the detailed path ---------------------------------------------------------------------


def _violation(path: str, message: str) -> str:
    return f"{SCHEMA_VIOLATION}|{path}: {message}"


def _scalar(kind: str, node: dict[str, Any], value: Any) -> Any:
    """`value` converted to the node's type, or None when it has another JSON type."""
    if isinstance(value, bool):
        return value if kind == "boolean" else None
    if kind == "string":
        if not isinstance(value, str):
            return None
        return parse_date_time(value) if node.get("format") == "date-time" else value
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1.0 is an integer to JSON Schema
        return value if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX else None
    if kind == "number" and isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _expected(node: dict[str, Any], kind: str) -> str:
    return "string (date-time)" if node.get("format") == "date-time" else kind


def _checked_scalar(
    node: dict[str, Any], kind: str, value: Any, path: str, errors: list[str]
) -> Any:
    typed = _scalar(kind, node, value)
    if typed is None:
        errors.append(_violation(path, f"mistyped, expected {_expected(node, kind)}"))
        return None
    if "enum" in node and typed not in node["enum"]:
        errors.append(_violation(path, f"not one of {[v for v in node['enum'] if v is not None]}"))
    if "const" in node and typed != node["const"]:
        errors.append(_violation(path, f"must be {node['const']!r}"))
    if "minimum" in node and typed < node["minimum"]:
        errors.append(_violation(path, f"below minimum {node['minimum']}"))
    if "maximum" in node and typed > node["maximum"]:
        errors.append(_violation(path, f"above maximum {node['maximum']}"))
    if "maxLength" in node and len(typed) > node["maxLength"]:
        errors.append(_violation(path, f"longer than {node['maxLength']} characters"))
    if "pattern" in node and node.get("format") != "date-time":
        if re.search(node["pattern"], typed) is None:
            errors.append(_violation(path, "does not match the required format"))
    return typed


def _array(node: dict[str, Any], value: Any, path: str, errors: list[str]) -> Any:
    items = node.get("items", {})
    kind, _ = node_kind(items)
    typed = [_scalar(kind, items, v) for v in value] if isinstance(value, list) else None
    if typed is None or any(t is None for t in typed):
        errors.append(_violation(path, f"mistyped, expected array of {_expected(items, kind)}"))
        return None
    if "enum" in items and any(t not in items["enum"] for t in typed):
        errors.append(_violation(path, f"items must be in {items['enum']}"))
    if node.get("uniqueItems") and len(set(typed)) != len(typed):
        errors.append(_violation(path, "items are not unique"))
    return typed


def _map(node: dict[str, Any], value: Any, path: str, errors: list[str]) -> Any:
    values = node["additionalProperties"]
    kind, _ = node_kind(values)
    typed = (
        {k: _scalar(kind, values, v) for k, v in value.items()} if isinstance(value, dict) else None
    )
    if typed is None or any(v is None for v in typed.values()):
        errors.append(_violation(path, f"mistyped, expected object of {_expected(values, kind)}"))
        return None
    pattern = node.get("propertyNames", {}).get("pattern")
    if pattern is not None and any(re.search(pattern, k) is None for k in typed):
        errors.append(_violation(path, "key does not match the required format"))
    minimum = values.get("minimum")
    if minimum is not None and any(v < minimum for v in typed.values()):
        errors.append(_violation(path, f"value below minimum {minimum}"))
    return dict(sorted(typed.items()))  # entries in key order, as the columnar path has them


def _object(
    node: dict[str, Any], doc: dict[str, Any], path: str, errors: list[str]
) -> dict[str, Any]:
    props: dict[str, Any] = node.get("properties", {})
    if node.get("additionalProperties") is False:
        extra = sorted(k for k in doc if k not in props)
        if extra:
            errors.append(_violation(path, f"unexpected field(s) {', '.join(extra)}"))
    required = set(node.get("required", []))
    out: dict[str, Any] = {}
    for name, child in props.items():
        child_path = f"{path}.{name}"
        kind, nullable = node_kind(child)
        if name not in doc:
            if name in required:
                errors.append(_violation(child_path, "missing"))
            out[name] = None
            continue
        value = doc[name]
        if value is None:
            if not nullable:
                errors.append(_violation(child_path, "null not allowed"))
            out[name] = None
        elif kind == "object" and "properties" in child:
            if isinstance(value, dict):
                out[name] = _object(child, value, child_path, errors)
            else:
                errors.append(_violation(child_path, "mistyped, expected object"))
                out[name] = None
        elif kind == "object":
            out[name] = _map(child, value, child_path, errors)
        elif kind == "array":
            out[name] = _array(child, value, child_path, errors)
        else:
            out[name] = _checked_scalar(child, kind, value, child_path, errors)
    return out


def _raw_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def detailed(value: bytes, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """(the partial typed event or None, every violation) of one record's bytes.

    Reasons: invalid_json (not a JSON object), unknown_schema_version, schema_violation.
    Only the version check applies when the version is unknown (the rest of the contract is
    that version's). A record that is not valid UTF-8 is invalid_json.
    """
    try:
        doc = msgspec.json.decode(value)
    except (msgspec.DecodeError, RecursionError, ValueError):  # also invalid UTF-8
        return None, [f"{INVALID_JSON}|$: not a JSON object"]
    if not isinstance(doc, dict):
        return None, [f"{INVALID_JSON}|$: not a JSON object"]
    version = doc.get("schema_version")
    known = list(SUPPORTED_EVENT_VERSIONS)
    if version is not None and _raw_text(version) not in known:
        message = f"not supported (supported: {', '.join(known)})"
        return None, [f"{UNKNOWN_SCHEMA_VERSION}|$.schema_version: {message}"]
    errors: list[str] = []
    return _object(schema, doc, "$", errors), errors


def unstorable(event: dict[str, Any] | None) -> list[str]:
    """Violations of the one rule the schema leaves out: a segment value (stored in the
    warehouse) holds no NUL character, which PostgreSQL text cannot hold. A pattern would
    say it, but would also take the segment out of the privacy screen's free text.
    """
    segment = event.get("segment") if event is not None else None
    if not isinstance(segment, dict):
        return []
    return [
        _violation(f"$.segment.{name}", "holds a NUL character (U+0000)")
        for name, text in segment.items()
        if isinstance(text, str) and "\x00" in text
    ]


# --- one batch -----------------------------------------------------------------------------


# The screen's memory of passed texts: at most this many, of at most this length (~2 MB).
_PASSED_TEXTS = 20_000
_PASSED_LENGTH = 100


@dataclass(frozen=True)
class Limits:
    """What a record must meet besides the schema (from the `contract` settings)."""

    max_message_bytes: int
    max_future: timedelta
    max_age: timedelta


@dataclass
class _Outcome:
    event: dict[str, Any] | None
    errors: list[str]
    detectors: list[str] | None = None


class RecordChecker:
    """Decides every record of an Arrow batch (see the module docstring); build once per
    process and reuse: building the fast path's types costs milliseconds.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        screen: str,
        detect: Callable[[str], list[str]],
        schema: dict[str, Any] | None = None,
    ) -> None:
        self.limits = limits
        self.schema = schema if schema is not None else event_schema("1")
        self._fast = _FastPath(self.schema)
        self._screen = re.compile(screen)
        # The screen reads text as the detectors do: obfuscations undone (zero-width
        # characters, fullwidth or other digits, look-alike letters, "%40").
        from pipelines.privacy.normalise import normalise

        self._normalise = normalise
        # Short texts the screen passed recently: segment values and versions repeat in almost
        # every event, so most texts are looked up, not scanned. Bounded (cleared when full),
        # and a text the screen flags is never kept.
        self._passed: set[str] = set()
        self._detect = detect
        # Free-text paths grouped by parent object: (parent path, field names).
        parents: dict[tuple[str, ...], list[str]] = {}
        for path in free_text_paths(self.schema):
            *parent, name = path.split(".")
            parents.setdefault(tuple(parent), []).append(name)
        self._texts = list(parents.items())
        self._output = output_schema(self.schema)
        self._event_type = self._output.field("event").type
        self._columns = ColumnChecks(
            self.schema,
            self._event_type,
            date_time=_DATE_TIME.pattern,
            free_texts=free_text_paths(self.schema),
            storable="segment",
        )

    def check(self, value: bytes | None, kafka_time: datetime | None) -> _Outcome:
        """The outcome of one record (before the watermark). A record whose check raises
        anything is rejected as `unprocessable` (with the exception's class name only: its
        message may quote the record), so that no record can fail the batch.
        """
        try:
            return self._check(value, kafka_time)
        except Exception as exc:  # noqa: BLE001 - any record must leave with an outcome
            return _Outcome(None, [f"{UNPROCESSABLE}|$: {type(exc).__name__}"])

    def _check(self, value: bytes | None, kafka_time: datetime | None) -> _Outcome:
        limit = self.limits.max_message_bytes
        if value is None:
            return _Outcome(None, [f"{INVALID_JSON}|$: not a JSON object"])
        if len(value) > limit:
            message = f"{len(value)} bytes, more than the maximum of {limit}"
            return _Outcome(None, [f"{MESSAGE_TOO_LARGE}|$: {message}"])
        event = self._fast(value)
        errors: list[str] = []
        if event is None:
            event, errors = detailed(value, self.schema)
        errors += unstorable(event)
        if errors:
            return _Outcome(event, errors)
        assert event is not None
        event_time = event["event_time"]
        if kafka_time is not None:
            # Differences, not sums: a Kafka timestamp near year 1 or 9999 cannot overflow.
            if event_time - kafka_time > self.limits.max_future:
                message = (
                    f"more than {self.limits.max_future} ahead of the Kafka record's timestamp"
                )
                return _Outcome(event, [f"{EVENT_TIME_OUT_OF_RANGE}|$.event_time: {message}"])
            if kafka_time - event_time > self.limits.max_age:
                message = f"more than {self.limits.max_age} behind the Kafka record's timestamp"
                return _Outcome(event, [f"{EVENT_TIME_OUT_OF_RANGE}|$.event_time: {message}"])
        texts = []
        for parent_path, names in self._texts:
            parent = _get(event, parent_path)
            if isinstance(parent, dict):
                texts += [t for name in names if isinstance(t := parent.get(name), str)]
        if any(self._flagged(t) for t in texts):
            found = self._drop_flagged_texts(event)
            if found:
                # Counted by its structured fields; the text that held personal data is
                # dropped here and never stored (its masked copy goes to the DLQ).
                return _Outcome(event, [], found)
        return _Outcome(event, [])

    def _drop_flagged_texts(self, event: dict[str, Any]) -> list[str]:
        """Replace every free text of `event` in which a detector hits by `[REDACTED]`;
        the sorted names of the detectors that hit ([] when none did).
        """
        found: set[str] = set()
        for parent_path, names in self._texts:
            parent = _get(event, parent_path)
            if not isinstance(parent, dict):
                continue
            for name in names:
                text = parent.get(name)
                if isinstance(text, str) and self._flagged(text):
                    hits = self._detect(text)
                    if hits:
                        found.update(hits)
                        parent[name] = REDACTED_TEXT
        return sorted(found)

    def _flagged(self, text: str) -> bool:
        """Whether the PII screen matches `text` (normalised as `detect` reads it)."""
        if text in self._passed:
            return False
        if self._screen.search(self._normalise(text)) is not None:
            return True
        if len(text) <= _PASSED_LENGTH:
            if len(self._passed) >= _PASSED_TEXTS:
                self._passed.clear()
            self._passed.add(text)
        return False

    def check_batch(
        self, batch: pa.RecordBatch, watermark: datetime | None, *, columns: bool = True
    ) -> pa.RecordBatch:
        """Kafka records (INPUT_SCHEMA's columns) -> output_schema() rows, one per record.

        With `columns`, the records the columnar path (`pipelines.contract.columns`) proves
        valid skip the per-record checks; every other record is decided one by one. Both
        give the same rows (tests/unit/test_contract_columns.py).
        """
        n = batch.num_rows
        values = batch.column("value")
        times = batch.column("timestamp").cast(pa.timestamp("us", tz="UTC"))
        if columns and n:
            proven = self._columns.prove(
                values,
                times,
                max_bytes=self.limits.max_message_bytes,
                max_future=self.limits.max_future,
                max_age=self.limits.max_age,
                flagged=self._flagged,
            )
            ok, fast = proven.ok, proven.events
        else:
            ok, fast = np.zeros(n, dtype=bool), pa.array([], self._event_type)
        slow = np.flatnonzero(~ok)
        outcomes = [
            self.check(v, t)
            for v, t in zip(
                values.take(slow).to_pylist(), times.take(slow).to_pylist(), strict=True
            )
        ]
        checked = self._events([o.event for o in outcomes], outcomes)
        # Row r is the k-th proven row (at k) or the k-th checked one (after the proven).
        if len(slow) == 0:
            events = fast
        else:
            position = np.empty(n, dtype=np.int64)
            position[ok] = np.arange(len(fast))
            position[slow] = len(fast) + np.arange(len(slow))
            events = pa.concat_arrays([fast, checked]).take(pa.array(position))
        errors: list[list[str]] = [[]] * n
        detectors: list[list[str] | None] = [None] * n
        for row, outcome in zip(slow.tolist(), outcomes, strict=True):
            errors[row], detectors[row] = outcome.errors, outcome.detectors
        if watermark is not None and n:
            behind = pc.less(pc.struct_field(events, "event_time"), pa.scalar(watermark))
            late = [f"{LATE}|$.event_time: behind the watermark {watermark}"]
            for row in np.flatnonzero(bool_mask(behind)).tolist():
                if not errors[row]:
                    errors[row] = late
        # Rejected records and counted ones whose text was dropped keep their bytes: the
        # DLQ receives a masked copy of both.
        keep = pa.array([bool(e) or bool(d) for e, d in zip(errors, detectors, strict=True)])
        columns_out = [
            batch.column("topic"),
            batch.column("partition"),
            batch.column("offset"),
            times,
            pc.if_else(keep, values, pa.scalar(None, pa.binary())),
            events,
            pa.array(errors, pa.list_(pa.string())),
            pa.array([e[0].split("|", 1)[0] if e else None for e in errors], pa.string()),
            pa.array(detectors, pa.list_(pa.string())),
        ]
        return pa.RecordBatch.from_arrays(columns_out, schema=self._output)

    def _events(self, events: list[dict[str, Any] | None], outcomes: list[_Outcome]) -> pa.Array:
        try:
            return pa.array(events, self._event_type)
        except (pa.ArrowException, UnicodeError, OverflowError):
            pass
        # Some event holds text Arrow cannot encode (a lone surrogate escape, valid JSON but
        # not Unicode): find it, reject it, keep the rest.
        for i, event in enumerate(events):
            try:
                pa.array([event], self._event_type)
            except (pa.ArrowException, UnicodeError, OverflowError):
                events[i] = None
                outcomes[i].errors = [f"{INVALID_JSON}|$: a string is not valid Unicode text"]
                outcomes[i].detectors = None
        return pa.array(events, self._event_type)


def check_batches(
    batches: Iterator[pa.RecordBatch], checker: RecordChecker, watermark: datetime | None
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield checker.check_batch(batch, watermark)


@cache
def record_checker(limits: Limits, screen: str, allow: AllowList | None = None) -> RecordChecker:
    """One checker per process and settings (executors reuse their Python workers); `allow`
    lists the public contacts that are not personal data (settings `privacy.pii_allowed_*`).
    """
    from pipelines.privacy.detectors import detector_names

    return RecordChecker(limits, screen=screen, detect=partial(detector_names, allow=allow))
