"""The columnar fast path of the record checks: a whole Arrow batch of Kafka values read by
Arrow's JSON reader (C++) against the contract's Arrow type, and the contract checked with
Arrow compute over columns. Pure (no Spark, no I/O); `records.RecordChecker` calls it.

It only ever proves records valid. A record it cannot prove valid goes to the per-record
path (`records.py`, `detailed.py`), which decides it and names every violation. The reader
fails a whole block on one bad record (a wrong JSON type, an unknown field, a duplicate
key, a number out of range); such a block is split in halves until the bad records are
isolated in blocks of at most `_MIN_BLOCK` records, which take the per-record path. The
work spent on splitting is capped at `_SPLIT_BUDGET` times the batch, so a batch of broken
records costs what the per-record path costs, never more than a few times that.

What the reader cannot tell apart, and how it is settled:
- Each value is wrapped as `{"i": <row>, "e": <value>}` on its own line: the reader must
  return exactly the rows 0..n-1 in order, so a value holding two objects or an unbalanced
  one (or line breaks) cannot shift the other records.
- A null in a column is either a JSON null or an absent key. Where the contract treats the
  two differently (a required field that may be null, such as `injection.source`; an
  optional object that may not be null, such as `excerpts`; an entry of a map), the raw
  bytes are searched for the key (`key_search`); a record with an escaped character in a
  key could spell a key without matching the search, so it takes the per-record path.
- An object of free keys (`privacy.entity_counts`) is read as a struct with one field per
  key seen in the block; it becomes the contract's map, keys in sorted order (`maps`).
- Date-times are read as text, matched against the contract's format (RE2) and converted;
  a text that is not a real instant (Feb 30, hour 25, year 0) takes the other path.
- Patterns run in RE2, which is stricter than Python's `re` where they differ (`$` does
  not match before a final newline), so a record RE2 refuses is decided by `re`.
- The reader is more lenient than JSON in places, which are checked before or after it:
  it takes `NaN` and `Infinity`, reads `-0` as -0.0 (the per-record path has 0.0), does
  not check UTF-8, and recurses once per level of nesting (thousands of levels exhaust the
  stack: a crash, not an error).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from pipelines.contract.key_search import ESCAPED_KEY, Keys
from pipelines.contract.maps import map_keys, to_map
from pipelines.contract.masks import bool_mask, mask
from pipelines.contract.shapes import field_names, is_map, node_kind, optional_keys, read_type

# A block of at most this many records that the reader refuses takes the per-record path.
_MIN_BLOCK = 64
# Splitting refused blocks may read at most this many times the batch's records in total.
_SPLIT_BUDGET = 3
# A block whose maps hold more distinct keys than this is split (each key costs a search).
_MAX_ENTRIES = 64
# Values that may nest deeper than this take the per-record path (see `prove`).
_MAX_DEPTH = 1000
_READ = pj.ReadOptions(use_threads=False, block_size=1 << 30)
_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Proven:
    """Which rows of a batch the fast path proved valid (`ok`), and their typed events in
    row order (the contract's Arrow type).
    """

    ok: np.ndarray
    events: pa.Array
    read: int = 0  # records the reader read, re-reads of split blocks included


class ColumnChecks:
    """The fast path for one schema; build once per process (see `records.RecordChecker`)."""

    def __init__(
        self,
        schema: dict[str, Any],
        event_type: pa.DataType,
        *,
        date_time: str,
        free_texts: list[str],
        storable: str,
    ) -> None:
        self.schema = schema
        self.event_type = event_type
        self._date_time = f"^(?:{date_time})$"
        self._parse = pj.ParseOptions(
            explicit_schema=pa.schema([("i", pa.int64()), ("e", read_type(schema))]),
            unexpected_field_behavior="infer",
        )
        self._read_type = read_type(schema)
        names = field_names(schema)
        self._schema_keys = set(names)
        # A key name the search may use: it names one field of the schema only.
        self._unique_keys = {n for n in names if names.count(n) == 1}
        self._optional = optional_keys(schema)
        self._free_texts = [tuple(p.split(".")) for p in free_texts]
        self._storable = storable  # the object whose text values may not hold a NUL

    # --- reading ---------------------------------------------------------------------

    def prove(
        self,
        values: pa.Array,
        kafka_times: pa.Array,
        *,
        max_bytes: int,
        max_future: timedelta,
        max_age: timedelta,
        flagged: Callable[[str], bool],
    ) -> Proven:
        """The rows of `values` (Kafka record bytes) proven to meet the contract, with
        event_time within [Kafka time - max_age, + max_future] and no free text that
        `flagged` (the privacy screen) flags.
        """
        n = len(values)
        ok = np.zeros(n, dtype=bool)
        sizes = pc.binary_length(values)
        candidate = mask(
            pc.and_(
                pc.less_equal(sizes, max_bytes),
                pc.invert(pc.match_substring_regex(values, ESCAPED_KEY)),
            ).fill_null(False)
        )
        # The reader recurses once per level of nesting and can exhaust the stack (a
        # crash, not an error) thousands of levels deep: a value that may nest deeper
        # than _MAX_DEPTH takes the per-record path. Only a value longer than twice that
        # can, so only those are counted.
        long = np.flatnonzero(candidate & bool_mask(pc.greater(sizes, 2 * _MAX_DEPTH)))
        if len(long):
            opened = pc.count_substring_regex(values.take(pa.array(long)), r"[\[{]")
            candidate[long[mask(pc.greater(opened, _MAX_DEPTH))]] = False
        # The reader does not check UTF-8: a value that is not valid UTF-8 takes the
        # per-record path (which rejects it as invalid_json).
        try:
            values.cast(pa.string())
        except (pa.ArrowInvalid, UnicodeError):
            for row in np.flatnonzero(candidate).tolist():
                try:
                    values[row].as_py().decode("utf-8")
                except UnicodeDecodeError:
                    candidate[row] = False
        rows = np.flatnonzero(candidate)
        if len(rows) == 0:
            return Proven(ok, pa.array([], self.event_type))
        every = len(rows) == n
        raw = values if every else values.take(pa.array(rows))
        times = kafka_times if every else kafka_times.take(pa.array(rows))
        budget = [_SPLIT_BUDGET * len(rows)]
        pieces: list[tuple[int, int, pa.StructArray]] = []
        self._blocks(raw, 0, len(rows), budget, pieces)
        chosen: list[np.ndarray] = []
        events: list[pa.Array] = []
        # The pieces come in row order, so the proven events do too.
        for lo, hi, parsed in pieces:
            piece = raw.slice(lo, hi - lo)
            good = self._valid(parsed, piece)
            good &= self._in_range(parsed, times.slice(lo, hi - lo), max_future, max_age)
            good &= ~self._flagged(parsed, good, flagged)
            keep = np.flatnonzero(good)
            if len(keep):
                chosen.append(rows[lo + keep])
                kept = parsed if len(keep) == hi - lo else parsed.take(pa.array(keep))
                events.append(self._conform(kept, self.event_type))
        read = _SPLIT_BUDGET * len(rows) - budget[0]
        if not chosen:
            return Proven(ok, pa.array([], self.event_type), read)
        ok[np.concatenate(chosen)] = True
        return Proven(ok, events[0] if len(events) == 1 else pa.concat_arrays(events), read)

    def _blocks(
        self,
        raw: pa.Array,
        lo: int,
        hi: int,
        budget: list[int],
        out: list[tuple[int, int, pa.StructArray]],
    ) -> None:
        """Read the records lo..hi-1 of `raw`, splitting a refused block in halves."""
        parsed = self._read(raw.slice(lo, hi - lo))
        budget[0] -= hi - lo
        if parsed is not None:
            out.append((lo, hi, parsed))
            return
        if hi - lo <= _MIN_BLOCK or budget[0] < hi - lo:
            return
        mid = (lo + hi) // 2
        self._blocks(raw, lo, mid, budget, out)
        self._blocks(raw, mid, hi, budget, out)

    def _read(self, values: pa.Array) -> pa.StructArray | None:
        """The `e` column of the wrapped values, or None when the reader refuses the block
        or returns anything but one row per value, in order, of the expected type.
        """
        rows = pc.cast(pa.array(np.arange(len(values))), pa.string()).cast(pa.binary())
        wrapped = pc.binary_join_element_wise(b'{"i":', rows, b',"e":', values, b"}\n", b"")
        ends = np.frombuffer(wrapped.buffers()[1], dtype=np.int32)
        lines = wrapped.buffers()[2].slice(0, int(ends[wrapped.offset + len(wrapped)]))
        try:
            table = pj.read_json(
                pa.BufferReader(lines), read_options=_READ, parse_options=self._parse
            )
        except (pa.ArrowException, UnicodeError, ValueError, OverflowError):
            return None
        if table.num_rows != len(values) or table.column_names != ["i", "e"]:
            return None
        index = table.column("i").combine_chunks()
        if index.null_count or not np.array_equal(
            index.to_numpy(), np.arange(len(values), dtype=np.int64)
        ):
            return None
        events = table.column("e").combine_chunks()
        if not self._expected(events.type, self._read_type, self.schema):
            return None
        return events  # type: ignore[no-any-return]

    def _expected(self, actual: pa.DataType, expected: pa.DataType, node: dict[str, Any]) -> bool:
        """Whether the read type is the contract's: no field the reader inferred but the
        entries of a map, and those all integers where the map holds integers.
        """
        if is_map(node):
            values = node["additionalProperties"]
            want = read_type(values)
            return (
                pa.types.is_struct(actual)
                and actual.num_fields <= _MAX_ENTRIES
                and all(actual.field(i).type == want for i in range(actual.num_fields))
            )
        if pa.types.is_struct(expected):
            if not pa.types.is_struct(actual) or actual.num_fields != expected.num_fields:
                return False
            props = node["properties"]
            return all(
                actual.field(i).name == expected.field(i).name
                and self._expected(
                    actual.field(i).type, expected.field(i).type, props[expected.field(i).name]
                )
                for i in range(expected.num_fields)
            )
        return bool(actual == expected)

    # --- checks ----------------------------------------------------------------------

    def _has_key(self, raw: Keys, name: str) -> np.ndarray | None:
        """Rows whose bytes hold `name` as a key; None when the search cannot tell."""
        if name not in self._unique_keys and name in self._schema_keys:
            return None
        return raw.holding(name)

    def _valid(self, events: pa.StructArray, raw: pa.Array) -> np.ndarray:
        # Keys that must be shown absent where their column is null: optional fields that
        # may not be null, and the map entries the block holds.
        absent = [*self._optional, *map_keys(events.type, self._read_type)]
        keys = Keys(raw, [k for k in absent if k not in self._schema_keys or k in self._optional])
        ok = mask(events.is_valid())
        return ok & self._object(self.schema, events, keys)

    def _object(self, node: dict[str, Any], arr: pa.StructArray, raw: Keys) -> np.ndarray:
        """Rows where the (non-null) object meets `node`; unknown fields were refused by
        the reader.
        """
        n = len(arr)
        ok = np.ones(n, dtype=bool)
        required = set(node.get("required", []))
        for name, child in node.get("properties", {}).items():
            kind, nullable = node_kind(child)
            column = arr.field(name)
            present = mask(column.is_valid())
            if present.all():
                ok &= self._value(child, column, raw)
                continue
            if name in required and not nullable:
                when_null = np.zeros(n, dtype=bool)
            elif nullable and name not in required:
                when_null = np.ones(n, dtype=bool)
            else:
                key = self._has_key(raw, name)
                if key is None:
                    when_null = np.zeros(n, dtype=bool)
                else:
                    # required and nullable: the key must be there (a JSON null);
                    # optional and not nullable: it must be absent.
                    when_null = key if name in required else ~key
            if present.any():
                ok &= np.where(present, self._value(child, column, raw), when_null)
            else:
                ok &= when_null
        return ok

    def _value(self, node: dict[str, Any], column: pa.Array, raw: Keys | None) -> np.ndarray:
        """Rows where the value meets `node` (rows where it is null: True)."""
        kind, _ = node_kind(node)
        n = len(column)
        if kind == "object":
            if raw is None:
                return ~mask(column.is_valid())  # an object inside an array: not proven here
            if "properties" in node:
                return self._object(node, column, raw) | ~mask(column.is_valid())
            return self._map(node, column, raw)
        if kind == "array":
            return self._array(node, column)
        checks: list[pa.Array] = []
        if "enum" in node:
            allowed = [v for v in node["enum"] if v is not None]
            checks.append(pc.is_in(column, pa.array(allowed, column.type)))
        if "const" in node:
            checks.append(pc.equal(column, pa.scalar(node["const"], column.type)))
        if kind == "number":
            # The reader also takes NaN and Infinity, which are not JSON; and reads `-0` as
            # -0.0 where the per-record path has 0.0: both are left to that path.
            floats = column.to_numpy(zero_copy_only=False)
            plain = np.isfinite(floats) & ~((floats == 0) & np.signbit(floats))
            checks.append(pa.array(plain | ~mask(column.is_valid())))
        if "minimum" in node:
            checks.append(pc.greater_equal(column, node["minimum"]))
        if "maximum" in node:
            checks.append(pc.less_equal(column, node["maximum"]))
        if "maxLength" in node:
            checks.append(pc.less_equal(pc.utf8_length(column), node["maxLength"]))
        if node.get("format") == "date-time":
            checks.append(self._instants(column)[1])
        elif "pattern" in node:
            checks.append(_re2(column, node["pattern"]))
        ok = np.ones(n, dtype=bool)
        for check in checks:
            ok &= mask(check.fill_null(True))
        return ok

    def _array(self, node: dict[str, Any], column: pa.ListArray) -> np.ndarray:
        n = len(column)
        ok = np.ones(n, dtype=bool)
        items = node.get("items", {})
        flat = column.flatten()
        if len(flat) == 0:
            return ok
        parents = pc.list_parent_indices(column).to_numpy()
        if flat.null_count:
            ok[np.unique(parents[mask(flat.is_null())])] = False
        bad = ~self._value(items, flat, None)
        ok[np.unique(parents[bad])] = False
        if node.get("uniqueItems"):
            # (a null item already failed the row: counting it as index 0 changes nothing)
            codes = pc.dictionary_encode(flat).indices.fill_null(0).to_numpy(zero_copy_only=False)
            pairs = parents.astype(np.int64) * (int(codes.max()) + 1) + codes
            unique, counts = np.unique(pairs, return_counts=True)
            repeated = unique[counts > 1] // (int(codes.max()) + 1)
            ok[repeated] = False
        return ok

    def _map(self, node: dict[str, Any], column: pa.StructArray, raw: Keys) -> np.ndarray:
        n = len(column)
        ok = np.ones(n, dtype=bool)
        values = node["additionalProperties"]
        pattern = node.get("propertyNames", {}).get("pattern")
        for i in range(column.type.num_fields):
            name = column.type.field(i).name
            entry = column.field(i)
            present = mask(entry.is_valid())
            named = pattern is None or re.search(pattern, name) is not None
            # A map key spelled like a field of the schema would confuse the key search.
            key = self._has_key(raw, name) if named and name not in self._schema_keys else None
            if key is None:
                # A key the contract refuses, or one the search cannot place: every record
                # that may hold it is decided by the other path.
                ok &= ~present & ~raw.mentioning(name)
                continue
            ok &= np.where(present, self._value(values, entry, raw), ~key)
        return ok

    def _instants(self, column: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(timestamps, valid) of date-time texts: matched whole against the contract's
        format and a real instant (year 1 to 9999, a day of that month, hour < 24).
        """
        shaped = pc.and_(
            pc.match_substring_regex(column, self._date_time),
            pc.invert(pc.starts_with(column, "0000")),
        ).fill_null(False)
        placeholder = pa.scalar("1970-01-01T00:00:00Z")
        texts = pc.if_else(shaped, column, placeholder)
        try:
            stamps = texts.cast(_TIMESTAMP)
            return stamps, shaped
        except (pa.ArrowInvalid, ValueError):
            pass
        good = []
        for text in texts.to_pylist():
            try:
                pa.scalar(text).cast(_TIMESTAMP)
                good.append(True)
            except (pa.ArrowInvalid, ValueError):
                good.append(False)
        valid = pc.and_(shaped, pa.array(good))
        stamps = pc.if_else(valid, texts, placeholder).cast(_TIMESTAMP)
        return stamps, valid

    def _in_range(
        self,
        events: pa.StructArray,
        kafka_times: pa.Array,
        max_future: timedelta,
        max_age: timedelta,
    ) -> np.ndarray:
        stamps, valid = self._instants(events.field("event_time"))
        kafka = kafka_times.cast(_TIMESTAMP)
        later = pc.add(kafka, pa.scalar(max_future, pa.duration("us")))
        earlier = pc.subtract(kafka, pa.scalar(max_age, pa.duration("us")))
        inside = pc.and_(pc.less_equal(stamps, later), pc.greater_equal(stamps, earlier))
        # No Kafka timestamp: no range to check.
        return mask(pc.or_kleene(inside, kafka.is_null()).fill_null(True)) & bool_mask(valid)

    def _flagged(
        self, events: pa.StructArray, good: np.ndarray, flagged: Callable[[str], bool]
    ) -> np.ndarray:
        """Rows with a free text the screen flags (each distinct text screened once), or a
        NUL in a text of the storable object (`records.unstorable`).
        """
        out = np.zeros(len(events), dtype=bool)
        rows = np.flatnonzero(good)
        if len(rows) == 0:
            return out
        chosen = events.take(rows)
        for path in self._free_texts:
            column: pa.Array = chosen
            for name in path:
                column = column.field(name)
            codes = pc.dictionary_encode(column)
            texts = codes.dictionary.to_pylist()
            hits = [flagged(t) or (path[0] == self._storable and "\x00" in t) for t in texts]
            if any(hits):
                index = codes.indices.fill_null(0).to_numpy(zero_copy_only=False)
                hit = np.array(hits, dtype=bool)
                valid = mask(codes.indices.is_valid())
                out[rows[valid & hit[index]]] = True
        return out

    # --- typed events ----------------------------------------------------------------

    def _conform(self, arr: pa.Array, target: pa.DataType) -> pa.Array:
        """`arr` as read, as the contract's Arrow type (the rows are valid)."""
        if pa.types.is_struct(target):
            children = [self._conform(arr.field(f.name), f.type) for f in target]
            mask = arr.is_null() if arr.null_count else None
            return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
        if pa.types.is_map(target):
            return to_map(arr, target)
        if pa.types.is_timestamp(target):
            return arr.cast(target)
        return arr.cast(target) if arr.type != target else arr


def _re2(column: pa.Array, pattern: str) -> pa.Array:
    """Rows matching `pattern` in RE2; all False when RE2 cannot compile it."""
    try:
        return pc.match_substring_regex(column, pattern)
    except pa.ArrowInvalid:
        return pa.array(np.zeros(len(column), dtype=bool))
