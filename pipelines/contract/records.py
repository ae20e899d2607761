"""Check raw Kafka records against the event contract: bytes in, typed events and reasons out.

Pure functions over Arrow record batches (no Spark, no I/O), derived from the JSON Schema of
the event: the job runs `check_batch` on its executors (`DataFrame.mapInArrow`), the tests
call it directly.

`check_batch` first reads the whole batch by column (`pipelines.contract.columns`: Arrow's
JSON reader and Arrow compute, a few times cheaper per record); the records that path
proves valid are done. Every other record is decoded once and decided here, one by one.
Two paths decide a record here:
- the fast path decodes the bytes straight into types built from the schema (msgspec, in C;
  `pipelines.contract.shapes`): unknown keys, missing or null required fields, wrong JSON
  types, enums, ranges, patterns and lengths all fail the decode. Unique items and real
  calendar date-times are checked after it. A record that passes is valid, with no further
  work;
- every other record takes the detailed path (`pipelines.contract.detailed`): a generic
  decode, then one walk of the schema that names each violation with its JSON path and keeps
  every field that has the right type (the partial event still places a rejected record in
  its segment).
The fast path only ever accepts what the detailed path accepts (tests/unit/test_contract_
records.py checks both against the reference validator, jsonschema).

After the contract: event_time within [Kafka timestamp - max_age, + max_future], the PII
screen over the free text, then the watermark (late). The first failing check gives the
record's `reason`; `errors` lists '<reason>|<json path>: <message>' ([] when accepted).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.columns import ColumnChecks
from pipelines.contract.detailed import detailed, unstorable
from pipelines.contract.masks import bool_mask
from pipelines.contract.reasons import (
    EVENT_TIME_OUT_OF_RANGE,
    INVALID_JSON,
    LATE,
    MESSAGE_TOO_LARGE,
    UNPROCESSABLE,
)
from pipelines.contract.shapes import (
    DATE_TIME,
    date_time_paths,
    fast_type,
    free_text_paths,
    map_paths,
    output_schema,
    parse_date_time,
    unique_paths,
)
from pipelines.segments import REDACTED_VALUE
from schemas import event_schema

if TYPE_CHECKING:
    from pipelines.privacy.detectors import AllowList


REDACTED_TEXT = REDACTED_VALUE  # what replaces a free text in which a detector hits


# --- the fast path -------------------------------------------------------------------------


class _FastPath:
    """Decode-and-validate in one step; None when the record needs the detailed path."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._decoder = msgspec.json.Decoder(fast_type(schema, "event"))
        self._unique = unique_paths(schema)
        self._maps = map_paths(schema)
        self._date_times = date_time_paths(schema)

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
            date_time=DATE_TIME.pattern,
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
