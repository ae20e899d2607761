"""Count classified records per tumbling window x segment: pure functions over Arrow batches.

The executors count (`partial_counts`, run through `DataFrame.mapInArrow` on each partition of
a micro-batch) and the driver merges their partial sums (`merge_partials`): counters, dense
histograms, HyperLogLog sketches of user ids, and per Kafka partition and status the offset
range, rows and latest event time (to the microsecond). What one record contributes:

- an aggregated record: every catalog counter whose predicate holds, one entry in each
  histogram (pipelines.metrics.distributions), its user id in the sketch, and the telemetry
  counters below;
- a record attributable to a segment (aggregated or schema_violation, with a readable
  event_time and a segment that met the contract): events_seen, telemetry_complete when no
  safety field failed the contract, redaction_failures when it is an aggregated record whose
  free text held personal data (the checker dropped that text and listed its `detectors`).
  Whatever the record's status, a segment value that the PII screen flags is counted as
  `[REDACTED]`.

The catalog's predicates are Spark SQL (one definition, shown in the docs); `SqlPredicate`
evaluates the subset they use on Arrow columns, and a test checks it against Spark itself.
Nothing here does I/O or needs Spark.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import datasketches as ds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.reasons import AGGREGATED, DUPLICATE, SCHEMA_VIOLATION, UNPARSED
from pipelines.contract.records import output_schema
from pipelines.metrics.buckets import BUCKETS, user_bucket
from pipelines.metrics.catalog import EVENT_COUNTERS, bucket_counter_ids, telemetry_counter_ids
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.metrics.sketches import merge_sketches
from pipelines.privacy.detectors import AllowList, detector_names
from pipelines.privacy.normalise import normalise
from pipelines.segments import (
    ALL_DIMENSIONS_VALUE,
    OTHER_VALUE,
    REDACTED_VALUE,
    RESERVED_VALUES,
    SEGMENT_DIMENSIONS,
    UNKNOWN_VALUE,
)

# Paths whose errors make an event's safety telemetry incomplete.
SAFETY_PATHS = ("moderation", "refusal", "injection", "jailbreak", "tool_calls", "privacy",
                "feedback", "request.outcome")  # fmt: skip
_SAFETY_ERROR = r"\|\$\.(" + "|".join(p.replace(".", r"\.") for p in SAFETY_PATHS) + ")"
TELEMETRY_COUNTERS = telemetry_counter_ids()
COUNTERS = (*[c.id for c in EVENT_COUNTERS], *TELEMETRY_COUNTERS)
# Offsets of each distribution's bins in one dense histogram vector.
HISTOGRAM_OFFSETS = tuple(np.cumsum([0] + [d.bins for d in DISTRIBUTIONS[:-1]]).tolist())
HISTOGRAM_BINS = sum(d.bins for d in DISTRIBUTIONS)
_NO_TIME = -(2**62)  # the latest event time of records that have none
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ATTRIBUTABLE = pa.array([AGGREGATED, SCHEMA_VIOLATION])
_OFFSETS = np.asarray(HISTOGRAM_OFFSETS)
_DISTRIBUTION_IDS = [d.id for d in DISTRIBUTIONS]
# The counters kept per user bucket (pipelines.metrics.buckets), as positions among
# EVENT_COUNTERS: a window's bucket sums are a (len(BUCKET_COUNTERS), BUCKETS) matrix.
BUCKET_COUNTERS = bucket_counter_ids()
_BUCKET_ROW = {c: i for i, c in enumerate(BUCKET_COUNTERS)}
_BUCKET_ROWS = len(BUCKET_COUNTERS)
_BUCKET_CELLS = _BUCKET_ROWS * BUCKETS

PARTIAL_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # "window", "offsets", "value", "sample" or "record"
        ("window_start_s", pa.int64()),
        # SEGMENT_DIMENSIONS' values, in order; of a `value` row: [dimension, value], with
        # its events_seen in `rows` and status "folded" when the partition folded it.
        ("segment", pa.list_(pa.string())),
        ("counters", pa.list_(pa.int64())),  # COUNTERS, in order
        ("histogram", pa.list_(pa.int64())),  # dense, HISTOGRAM_OFFSETS
        ("users_sketch", pa.binary()),
        # The non-zero cells of the window's bucket sums (BUCKET_COUNTERS x BUCKETS, row
        # major): flat positions and values.
        ("bucket_cells", pa.list_(pa.int32())),
        ("bucket_values", pa.list_(pa.int64())),
        # The non-zero cells of the window's slice sums (BUCKET_COUNTERS x slices, row
        # major): flat positions and values.
        ("slice_cells", pa.list_(pa.int32())),
        ("slice_values", pa.list_(pa.int64())),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("status", pa.string()),
        ("start_offset", pa.int64()),
        ("end_offset", pa.int64()),
        ("rows", pa.int64()),
        ("max_event_time_us", pa.int64()),  # microseconds since the epoch, as events carry
        # A record (`keep_records`) the DLQ may receive: its coordinates, reason and what
        # the dead-letter record holds.
        ("offset", pa.int64()),
        ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("reason", pa.string()),
        ("value", pa.binary()),
        ("errors", pa.list_(pa.string())),
        ("detectors", pa.list_(pa.string())),
        # Rows packed as one Arrow IPC stream (one row instead of one per record or event:
        # far cheaper to bring back to the driver): of an `ids` row, IDS_SCHEMA's rows of a
        # batch's on-time valid records; of a `sample` row, a partition's SAMPLE_SCHEMA rows.
        ("packed", pa.binary()),
    ]
)
SAMPLE, RECORD, VALUE, IDS = "sample", "record", "value", "ids"
# A sampled parsed event and its place in the sample (sample_hash).
SAMPLE_SCHEMA = pa.schema(
    [("event", output_schema().field("event").type), ("sample_key", pa.float64())]
)
# What deduplication needs of each on-time valid record; text_dropped: its free text held
# personal data and was dropped.
IDS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("text_dropped", pa.bool_()),
    ]
)
FOLDED = "folded"


# --- the catalog's predicates on Arrow columns -----------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'[^']*')|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op>>=|<=|!=|<>|=|>|<|\(|\)|,))"
)
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": np.equal, "!=": np.not_equal, "<>": np.not_equal,
    ">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal,
}  # fmt: skip


class Columns:
    """Leaf columns of a batch of typed events, as numpy arrays (nulls as False, 0 or '')."""

    def __init__(self, events: pa.StructArray) -> None:
        self.events = events
        self.size = len(events)
        self._cache: dict[str, Any] = {}

    def array(self, path: str) -> pa.Array:
        value: pa.Array = self.events
        for part in path.split("."):
            value = pc.struct_field(value, part)
        return value

    def values(self, path: str) -> np.ndarray:
        if path not in self._cache:
            arr = self.array(path)
            if pa.types.is_boolean(arr.type):
                out = pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
            elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
                out = pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
            elif pa.types.is_string(arr.type):
                out = np.asarray(pc.fill_null(arr, "").to_numpy(zero_copy_only=False), dtype=object)
            else:
                out = arr  # lists stay Arrow arrays
            self._cache[path] = out
        return self._cache[path]


class SqlPredicate:
    """A boolean Spark SQL expression of the catalog's subset, evaluated per event on numpy:
    field paths, string and number literals, true/false, AND, OR, NOT, parentheses,
    comparisons, `size(list)` and `array_contains(list, literal)`. A null counts as false,
    as `coalesce(predicate, false)` does in Spark.
    """

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self._tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(sql.rstrip()):
            m = _TOKEN.match(sql, pos)
            if m is None or m.end() == pos:
                msg = f"cannot read predicate {sql!r} at position {pos}"
                raise ValueError(msg)
            kind = m.lastgroup or ""
            self._tokens.append((kind, m.group(kind)))
            pos = m.end()

    def __call__(self, columns: Columns) -> np.ndarray:
        self._pos = 0
        result = self._or(columns)
        if self._pos != len(self._tokens):
            msg = f"unexpected {self._tokens[self._pos][1]!r} in predicate {self.sql!r}"
            raise ValueError(msg)
        return np.broadcast_to(np.asarray(result, dtype=bool), (columns.size,)).copy()

    def _peek(self) -> str:
        if self._pos < len(self._tokens):
            return self._tokens[self._pos][1]
        return ""

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self._pos >= len(self._tokens):
            msg = f"predicate {self.sql!r} ends too early"
            raise ValueError(msg)
        token = self._tokens[self._pos]
        if expected is not None and token[1].upper() != expected:
            msg = f"expected {expected!r}, got {token[1]!r} in predicate {self.sql!r}"
            raise ValueError(msg)
        self._pos += 1
        return token

    def _or(self, c: Columns) -> Any:
        value = self._and(c)
        while self._peek().upper() == "OR":
            self._take()
            value = np.logical_or(value, self._and(c))
        return value

    def _and(self, c: Columns) -> Any:
        value = self._not(c)
        while self._peek().upper() == "AND":
            self._take()
            value = np.logical_and(value, self._not(c))
        return value

    def _not(self, c: Columns) -> Any:
        if self._peek().upper() == "NOT":
            self._take()
            return np.logical_not(self._not(c))
        left = self._atom(c)
        if self._peek() in _COMPARE:
            op = self._take()[1]
            return _COMPARE[op](left, self._atom(c))
        return left

    def _atom(self, c: Columns) -> Any:
        kind, text = self._take()
        if text == "(":
            value = self._or(c)
            self._take(")")
            return value
        if kind == "num":
            return float(text)
        if kind == "str":
            return text[1:-1]
        if kind != "name":
            msg = f"unexpected {text!r} in predicate {self.sql!r}"
            raise ValueError(msg)
        if text.upper() in ("TRUE", "FALSE"):
            return text.upper() == "TRUE"
        if self._peek() == "(":
            return self._function(text.lower(), c)
        return c.values(text)

    def _function(self, name: str, c: Columns) -> Any:
        self._take("(")
        _, path = self._take()
        lists = c.values(path)
        if name == "size":
            self._take(")")
            return pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        if name == "array_contains":
            self._take(",")
            _, literal = self._take()
            self._take(")")
            held = np.zeros(c.size, dtype=bool)
            flat = pc.list_flatten(lists)
            parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
            hits = pc.fill_null(pc.equal(flat, literal.strip("'")), False)
            held[parents[hits.to_numpy(zero_copy_only=False)]] = True
            return held
        msg = f"function {name}() is not supported in predicate {self.sql!r}"
        raise ValueError(msg)


# --- histograms ------------------------------------------------------------------------------


def histogram_entries(columns: Columns) -> tuple[np.ndarray, np.ndarray]:
    """(event index, dense histogram position) of every entry the events count in: one per
    numeric or categorical distribution, one per held value of a multi (the first bin,
    `none`, when it holds none). Numeric values clip into the first and last bins.
    """
    rows: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    everyone = np.arange(columns.size)
    for offset, d in zip(HISTOGRAM_OFFSETS, DISTRIBUTIONS, strict=True):
        if d.kind == "numeric":
            inner = np.asarray(d.edges[1:-1], dtype=float)
            values = columns.values(d.expression)
            rows.append(everyone)
            codes.append(offset + np.searchsorted(inner, values, side="right"))
        elif d.kind == "categorical":
            found = pc.index_in(columns.array(d.expression), value_set=pa.array(d.values))
            bins = np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), np.int64)
            known = bins >= 0
            rows.append(everyone[known])
            codes.append(offset + bins[known])
        else:
            lists = columns.values(d.expression)
            flat = pc.list_flatten(lists)
            parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
            found = pc.index_in(flat, value_set=pa.array(d.values))
            bins = np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), np.int64)
            known = bins > 0
            held = np.zeros(columns.size, dtype=bool)
            held[parents[known]] = True
            rows += [parents[known], everyone[~held]]
            codes += [offset + bins[known], np.full(int((~held).sum()), offset)]
    return np.concatenate(rows), np.concatenate(codes)


# --- one partition -------------------------------------------------------------------------


@dataclass(frozen=True)
class Counting:
    """How to count: tumbling window length, grouped dimensions, sketch size, PII screen and
    the public contacts that are not personal data (`allow`).
    """

    window_s: int
    dimensions: tuple[str, ...]
    users_lg_k: int
    screen: str
    allow: AllowList | None = None
    values: ValueLimits | None = None  # cardinality control on the executors
    # Length of the slices of a window whose sums of BUCKET_COUNTERS are kept too (for early
    # alerting on the window's latest minutes); None: one slice, the window itself.
    slice_s: int | None = None

    def __post_init__(self) -> None:
        if self.window_s < 1:
            msg = f"window_s must be positive, got {self.window_s}"
            raise ValueError(msg)
        if self.slice_s is not None and (self.slice_s < 1 or self.window_s % self.slice_s):
            msg = f"slice_s ({self.slice_s}) must divide window_s ({self.window_s})"
            raise ValueError(msg)

    @property
    def slices(self) -> int:
        """The number of slices of a window."""
        return 1 if self.slice_s is None else self.window_s // self.slice_s


@dataclass(frozen=True)
class ValueLimits:
    """Cardinality control on the executors (pipelines.stream.cardinality), so that a flood
    of distinct segment values never reaches the driver: per grouped dimension, the values
    that stay (`keep`, reserved values always stay) and how many new values each partition
    may keep (`room`, first come) before it counts the rest as `other`. Each partition also
    reports the events_seen of every new value (`value` rows), from which the driver admits
    the batch's new values exactly; when it admits one that a partition folded, it counts
    the batch again with `final` limits: `keep` is then what the batch may hold, no room.
    """

    keep: tuple[tuple[str, frozenset[str]], ...]
    room: tuple[tuple[str, int], ...] = ()
    final: bool = False


@dataclass(frozen=True)
class Sampling:
    """A deterministic sample of at most `rows` parsed records (for the data-quality suite):
    those with the smallest hash of (partition, offset, seed). Each partition keeps its
    smallest `rows` and the driver the smallest of those (`sample_of`), so nothing sorts the
    batch and a replayed batch draws the same sample.
    """

    rows: int = 0
    seed: int = 0


NO_SAMPLE = Sampling()


def sample_hash(partitions: np.ndarray, offsets: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per record (splitmix64 of its coordinates and the seed)."""
    with np.errstate(over="ignore"):
        x = (partitions.astype(np.uint64) << np.uint64(40)) ^ offsets.astype(np.uint64)
        x = x + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


@dataclass
class _Window:
    counters: np.ndarray
    histogram: np.ndarray
    buckets: np.ndarray  # BUCKET_COUNTERS x BUCKETS
    slices: np.ndarray  # BUCKET_COUNTERS x Counting.slices
    sketch: Any = None


@dataclass
class _Partial:
    """The running sums of one partition."""

    counting: Counting
    windows: dict[tuple[Any, ...], _Window] = field(default_factory=dict)
    offsets: dict[tuple[str, int, str], list[int]] = field(default_factory=dict)
    sample: pa.Array | None = None  # at most Sampling.rows parsed events
    sample_keys: np.ndarray = field(default_factory=lambda: np.zeros(0))  # their sample_hash
    # Cardinality control (Counting.values): events_seen of each new value, the new values
    # this partition kept and those it folded into `other`, per dimension.
    new_values: dict[tuple[str, str], int] = field(default_factory=dict)
    kept: dict[str, set[str]] = field(default_factory=dict)
    folded: set[tuple[str, str]] = field(default_factory=set)
    user_buckets: dict[str, int] = field(default_factory=dict)  # user key -> its bucket

    def window(self, key: tuple[Any, ...]) -> _Window:
        found = self.windows.get(key)
        if found is None:
            found = _Window(
                np.zeros(len(COUNTERS), np.int64),
                np.zeros(HISTOGRAM_BINS, np.int64),
                np.zeros((_BUCKET_ROWS, BUCKETS), np.int64),
                np.zeros((_BUCKET_ROWS, self.counting.slices), np.int64),
            )
            self.windows[key] = found
        return found

    def buckets_of(self, users: list[str | None], event_ids: pa.Array) -> np.ndarray:
        """The user bucket of each event: its user's, or (no user id) its own event id's,
        each event then being its own cluster.
        """
        cache = self.user_buckets
        out = np.empty(len(users), np.int64)
        for i, user in enumerate(users):
            if user is None:
                out[i] = user_bucket(event_ids[i].as_py() or "")
                continue
            found = cache.get(user)
            if found is None:
                found = cache[user] = user_bucket(user)
            out[i] = found
        return out


_PREDICATES: dict[str, SqlPredicate] = {}


def _predicate(sql: str) -> SqlPredicate:
    if sql not in _PREDICATES:
        _PREDICATES[sql] = SqlPredicate(sql)
    return _PREDICATES[sql]


def _statuses(batch: pa.RecordBatch, duplicates: frozenset[tuple[int, int]]) -> pa.Array:
    """Each record's status: its reason, else duplicate when it is at `duplicates`, else
    aggregated.
    """
    reasons = batch.column("reason")
    if duplicates:
        coordinates = zip(batch.column("partition").to_pylist(),
                          batch.column("offset").to_pylist(), strict=True)  # fmt: skip
        marked = pa.array([xy in duplicates for xy in coordinates], pa.bool_())
        reasons = pc.if_else(pc.and_(pc.is_null(reasons), marked), DUPLICATE, reasons)
    return pc.fill_null(reasons, AGGREGATED)


def _mask(values: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy (null as False)."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _segment_codes(
    events: pa.StructArray, rows: np.ndarray, counting: Counting
) -> tuple[list[np.ndarray], list[list[str]]]:
    """Per grouped dimension, a code per row and the values the codes stand for (`unknown`
    for null, `[REDACTED]` for a value the PII screen flags: each distinct value is screened
    once, whatever the status of the records that hold it).
    """
    segment = pc.struct_field(events, "segment").take(pa.array(rows, pa.int64()))
    codes: list[np.ndarray] = []
    values: list[list[str]] = []
    for name in counting.dimensions:
        encoded = pc.fill_null(pc.struct_field(segment, name), UNKNOWN_VALUE).dictionary_encode()
        indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        distinct = [_screened(v, counting) for v in encoded.dictionary.to_pylist()]
        if len(set(distinct)) < len(distinct):  # two values redacted: one code for both
            canonical = {v: i for i, v in enumerate(distinct)}
            indices = np.asarray([canonical[v] for v in distinct], np.int64)[indices]
        codes.append(indices)
        values.append(distinct)
    return codes, values


@cache
def _screen(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _screened(value: str, counting: Counting) -> str:
    """`value`, or `[REDACTED]` when a detector hits it, as the record checks decide for a
    free text: the screen on the normalised text (an address written with zero-width
    characters is flagged too), then the detectors, less the allowed public contacts.
    """
    if _screen(counting.screen).search(normalise(value)) is None:
        return value
    return REDACTED_VALUE if detector_names(value, counting.allow) else value


def _limit_values(partial: _Partial, codes: list[np.ndarray], values: list[list[str]]) -> None:
    """Cardinality control (Counting.values) on one Arrow batch's segment codes, in place: a
    new value beyond the partition's room, or outside final limits, becomes `other`.
    """
    limits = partial.counting.values
    assert limits is not None
    keep, room = dict(limits.keep), dict(limits.room)
    for i, dim in enumerate(partial.counting.dimensions):
        if dim not in keep:
            continue
        seen = np.bincount(codes[i], minlength=len(values[i]))
        kept = partial.kept.setdefault(dim, set())
        mapped = list(values[i])
        for j, value in enumerate(values[i]):
            if value in keep[dim] or value in RESERVED_VALUES or seen[j] == 0:
                continue
            if not limits.final:
                key = (dim, value)
                partial.new_values[key] = partial.new_values.get(key, 0) + int(seen[j])
                if value in kept or len(kept) < room.get(dim, 0):
                    kept.add(value)
                    continue
                partial.folded.add(key)
            mapped[j] = OTHER_VALUE
        if mapped != values[i]:
            first = {v: k for k, v in reversed(list(enumerate(mapped)))}
            codes[i] = np.asarray([first[v] for v in mapped], np.int64)[codes[i]]
            values[i] = mapped


def _add_batch(partial: _Partial, batch: pa.RecordBatch, statuses: pa.Array) -> None:
    counting = partial.counting
    events = batch.column("event")
    event_time = pc.struct_field(events, "event_time").cast(pa.int64())  # microseconds
    has_time = np.asarray(pc.is_valid(event_time).to_numpy(zero_copy_only=False), dtype=bool)
    micros = np.asarray(pc.fill_null(event_time, 0).to_numpy(zero_copy_only=False))
    seconds = micros // 1_000_000

    # Offsets, rows and latest event time per partition and status.
    latest = pa.array(np.where(has_time, micros, _NO_TIME), pa.int64())
    per_status = pa.table(
        [batch.column("topic"), batch.column("partition"), statuses, batch.column("offset"),
         latest],
        names=["topic", "partition", "status", "offset", "latest"],
    ).group_by(["topic", "partition", "status"], use_threads=False).aggregate(
        [("offset", "min"), ("offset", "max"), ("offset", "count"), ("latest", "max")]
    )  # fmt: skip
    for s in per_status.to_pylist():
        key = (s["topic"], s["partition"], s["status"])
        entry = partial.offsets.get(key)
        found = [s["offset_min"], s["offset_max"], s["offset_count"], s["latest_max"]]
        if entry is None:
            partial.offsets[key] = found
        else:
            entry[0] = min(entry[0], found[0])
            entry[1] = max(entry[1], found[1])
            entry[2] += found[2]
            entry[3] = max(entry[3], found[3])

    # Telemetry: records attributable to a segment.
    errors = batch.column("errors")
    flat = pc.list_flatten(errors)
    parents = pc.list_parent_indices(errors).to_numpy(zero_copy_only=False)
    segment_ok = np.ones(len(batch), dtype=bool)
    segment_ok[parents[_mask(pc.match_substring(flat, "|$.segment"))]] = False
    complete = np.ones(len(batch), dtype=bool)
    complete[parents[_mask(pc.match_substring_regex(flat, _SAFETY_ERROR))]] = False
    has_segment = np.asarray(pc.is_valid(pc.struct_field(events, "segment")).to_numpy(
        zero_copy_only=False), dtype=bool)  # fmt: skip
    attributable = (
        _mask(pc.is_in(statuses, value_set=_ATTRIBUTABLE)) & has_time & has_segment & segment_ok
    )
    rows = np.flatnonzero(attributable)
    if len(rows) == 0:
        return
    status = statuses.take(pa.array(rows, pa.int64()))
    aggregated = _mask(pc.equal(status, AGGREGATED))
    # Counted with its text dropped: the checker found personal data in its free text.
    flagged = pc.greater(pc.list_value_length(batch.column("detectors")), 0)
    pii = aggregated & _mask(flagged.take(pa.array(rows, pa.int64())))
    codes, values = _segment_codes(events, rows, counting)
    if counting.values is not None:
        _limit_values(partial, codes, values)
    window_starts = (seconds[rows] // counting.window_s) * counting.window_s
    keys, group = np.unique(np.column_stack([window_starts, *codes]), axis=0, return_inverse=True)
    group = group.reshape(-1)
    n_groups = len(keys)
    sums = np.zeros((n_groups, len(COUNTERS)), np.int64)
    base = len(EVENT_COUNTERS)
    sums[:, base + 0] = np.bincount(group, minlength=n_groups)
    sums[:, base + 1] = np.bincount(group, weights=complete[rows].astype(float),
                                    minlength=n_groups)  # fmt: skip
    sums[:, base + 2] = np.bincount(group, weights=pii.astype(float), minlength=n_groups)

    histograms = np.zeros((n_groups, HISTOGRAM_BINS), np.int64)
    bucket_sums = np.zeros((n_groups, _BUCKET_ROWS, BUCKETS), np.int64)
    n_slices = counting.slices
    slice_sums = np.zeros((n_groups, _BUCKET_ROWS, n_slices), np.int64)
    counted = rows[aggregated]
    users: list[str | None] = []
    if len(counted):
        taken = events.take(pa.array(counted, pa.int64()))
        columns = Columns(taken)
        counted_group = group[aggregated]
        users = pc.struct_field(taken, "user_id").to_pylist()
        cells = counted_group * BUCKETS + partial.buckets_of(
            users, pc.struct_field(taken, "event_id")
        )
        offset_s = seconds[counted] - window_starts[aggregated]
        slice_cells = counted_group * n_slices + offset_s * n_slices // counting.window_s
        for j, counter in enumerate(EVENT_COUNTERS):
            mask = _predicate(counter.predicate or "false")(columns)
            weights = mask.astype(float)
            sums[:, j] = np.bincount(counted_group, weights=weights, minlength=n_groups)
            b = _BUCKET_ROW.get(counter.id)
            if b is not None:
                bucket_sums[:, b, :] = np.bincount(
                    cells, weights=weights, minlength=n_groups * BUCKETS
                ).reshape(n_groups, BUCKETS)
                slice_sums[:, b, :] = np.bincount(
                    slice_cells, weights=weights, minlength=n_groups * n_slices
                ).reshape(n_groups, n_slices)
        entry_rows, bins = histogram_entries(columns)
        flat_bins = np.bincount(
            counted_group[entry_rows] * HISTOGRAM_BINS + bins,
            minlength=n_groups * HISTOGRAM_BINS,
        )
        histograms += flat_bins.reshape(n_groups, HISTOGRAM_BINS)

    grouped = {d: i for i, d in enumerate(counting.dimensions)}
    windows = []
    for key in keys.tolist():
        segment = tuple(
            values[grouped[d]][key[1 + grouped[d]]] if d in grouped else ALL_DIMENSIONS_VALUE
            for d in SEGMENT_DIMENSIONS
        )
        windows.append(partial.window((key[0], *segment)))
    for g, w in enumerate(windows):
        w.counters += sums[g]
        w.histogram += histograms[g]
        w.buckets += bucket_sums[g]
        w.slices += slice_sums[g]
    if len(counted):
        for g, user in zip(group[aggregated].tolist(), users, strict=True):
            if user is None:
                continue
            w = windows[g]
            if w.sketch is None:
                w.sketch = ds.hll_sketch(counting.users_lg_k)
            w.sketch.update(user)


def _add_sample(partial: _Partial, batch: pa.RecordBatch, statuses: pa.Array,
                sampling: Sampling) -> None:  # fmt: skip
    """Keep the parsed records of the smallest hashes, `sampling.rows` at most."""
    if sampling.rows <= 0:
        return
    u = sample_hash(
        batch.column("partition").to_numpy(zero_copy_only=False),
        batch.column("offset").to_numpy(zero_copy_only=False),
        sampling.seed,
    )
    rows = np.flatnonzero(~_mask(pc.is_in(statuses, value_set=pa.array(UNPARSED))))
    if partial.sample is not None and len(partial.sample_keys) >= sampling.rows:
        rows = rows[u[rows] < partial.sample_keys.max()]
    if len(rows) == 0:
        return
    events = batch.column("event").take(pa.array(rows, pa.int64()))
    keys = u[rows]
    if partial.sample is not None:
        events = pa.concat_arrays([partial.sample, events])
        keys = np.concatenate([partial.sample_keys, keys])
    if len(keys) > sampling.rows:
        keep = np.argpartition(keys, sampling.rows - 1)[: sampling.rows]
        events, keys = events.take(pa.array(keep, pa.int64())), keys[keep]
    partial.sample, partial.sample_keys = events, keys


def _records(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """What deduplication and the DLQ need of the checked records: one `ids` row holding
    the on-time valid records' IDS_SCHEMA rows, and a `record` row for each record the DLQ
    may receive (rejected or late, or counted with its text dropped).
    """
    on_time = pc.is_null(batch.column("reason"))
    dropped = pc.fill_null(pc.greater(pc.list_value_length(batch.column("detectors")), 0), False)
    valid = batch.filter(on_time)
    events = valid.column("event")
    ids = pa.RecordBatch.from_arrays(
        [
            pc.struct_field(events, "event_id"),
            valid.column("partition"),
            valid.column("offset"),
            pc.struct_field(events, "event_time"),
            dropped.filter(on_time),
        ],
        schema=IDS_SCHEMA,
    )
    yield _partial_batch({"kind": pa.array([IDS]), "packed": _packed(ids)}, 1)
    kept = batch.filter(pc.or_(pc.invert(on_time), dropped))
    if kept.num_rows:
        n = kept.num_rows
        given = {
            "kind": pa.array([RECORD] * n, pa.string()),
            "topic": kept.column("topic"),
            "partition": kept.column("partition"),
            "offset": kept.column("offset"),
            "kafka_timestamp": kept.column("kafka_timestamp"),
            "reason": kept.column("reason"),
            "value": kept.column("value"),
            "errors": kept.column("errors"),
            "detectors": kept.column("detectors"),
        }
        yield _partial_batch(given, n)


def _packed(batch: pa.RecordBatch) -> pa.Array:
    """`batch` as one Arrow IPC stream, in a one-row binary array."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return pa.array([sink.getvalue().to_pybytes()], pa.binary())


def _unpacked(partials: pa.Table, kind: str, schema: pa.Schema) -> pa.Table:
    """The rows packed in the `kind` rows of `partials`, as one table of `schema`."""
    rows = partials.filter(pc.equal(partials.column("kind"), kind))
    blobs = rows.column("packed").to_pylist()
    tables = [pa.ipc.open_stream(blob).read_all() for blob in blobs if blob is not None]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def ids_of(partials: pa.Table) -> pa.Table:
    """The IDS_SCHEMA rows of the `ids` rows among `partials`."""
    return _unpacked(partials, IDS, IDS_SCHEMA)


def _partial_batch(given: dict[str, Any], n: int) -> pa.RecordBatch:
    """`n` PARTIAL_SCHEMA rows: the `given` columns, nulls in the others."""
    return pa.RecordBatch.from_arrays(
        [given[f.name] if f.name in given else pa.nulls(n, f.type) for f in PARTIAL_SCHEMA],
        schema=PARTIAL_SCHEMA,
    )


def _sparse(matrix: np.ndarray) -> tuple[list[int], list[int]]:
    """The non-zero cells of a BUCKET_COUNTERS x parts matrix, row major: positions, values."""
    flat = matrix.reshape(-1)
    cells = np.flatnonzero(flat)
    return cells.tolist(), flat[cells].tolist()


def _per_counter(flat: np.ndarray, parts: int) -> dict[str, list[int]]:
    """Flat BUCKET_COUNTERS x parts sums as the warehouse keeps them: counter id -> its
    `parts` sums, all-zero counters left out.
    """
    return {
        c: row.tolist()
        for c, row in zip(BUCKET_COUNTERS, flat.reshape(-1, parts), strict=True)
        if row.any()
    }


def partial_counts(
    batches: Iterable[pa.RecordBatch],
    counting: Counting,
    duplicates: frozenset[tuple[int, int]] = frozenset(),
    sampling: Sampling = NO_SAMPLE,
    *,
    keep_records: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The partial sums of one partition's checked records (PARTIAL_SCHEMA), its sampled
    parsed events and, with `keep_records`, a `record` row per record (`_records`).

    `duplicates` holds the (partition, offset) of the on-time valid records that repeat an
    event id; every other record's status is its reason, or aggregated.
    """
    partial = _Partial(counting)
    for batch in batches:
        statuses = _statuses(batch, duplicates)
        _add_batch(partial, batch, statuses)
        _add_sample(partial, batch, statuses, sampling)
        if keep_records:
            yield from _records(batch)
    rows: list[dict[str, Any]] = []
    for (window_start, *segment), w in partial.windows.items():
        sketch = w.sketch.serialize_compact() if w.sketch is not None else None
        bucket_cells, bucket_values = _sparse(w.buckets)
        slice_cells, slice_values = _sparse(w.slices)
        rows.append({
            "kind": "window", "window_start_s": window_start, "segment": segment,
            "counters": w.counters.tolist(), "histogram": w.histogram.tolist(),
            "users_sketch": bytes(sketch) if sketch is not None else None,
            "bucket_cells": bucket_cells, "bucket_values": bucket_values,
            "slice_cells": slice_cells, "slice_values": slice_values,
        })  # fmt: skip
    for (dimension, value), n in partial.new_values.items():
        rows.append({
            "kind": VALUE, "segment": [dimension, value], "rows": n,
            "status": FOLDED if (dimension, value) in partial.folded else None,
        })  # fmt: skip
    for (topic, partition, status), (lo, hi, n, latest) in partial.offsets.items():
        rows.append({
            "kind": "offsets", "topic": topic, "partition": partition, "status": status,
            "start_offset": lo, "end_offset": hi, "rows": n,
            "max_event_time_us": latest if latest > _NO_TIME else None,
        })  # fmt: skip
    yield pa.RecordBatch.from_pylist(rows, schema=PARTIAL_SCHEMA)
    if partial.sample is not None:
        sample = pa.RecordBatch.from_arrays(
            [partial.sample, pa.array(partial.sample_keys, pa.float64())], schema=SAMPLE_SCHEMA
        )
        yield _partial_batch({"kind": pa.array([SAMPLE]), "packed": _packed(sample)}, 1)


def sample_of(partials: pa.Table, rows: int) -> pa.Array:
    """The `rows` sampled events of smallest key among the partitions' samples (the
    `sample` rows of `partials`, PARTIAL_SCHEMA), in key order.
    """
    samples = _unpacked(partials, SAMPLE, SAMPLE_SCHEMA)
    keys = samples.column("sample_key").to_numpy()
    order = np.argsort(keys, kind="stable")[:rows]
    return samples.column("event").combine_chunks().take(pa.array(order, pa.int64()))


# --- the driver ------------------------------------------------------------------------------


_STATS = ("topic", "partition", "status", "start_offset", "end_offset", "rows",
          "max_event_time_us")  # fmt: skip


@dataclass(frozen=True)
class Counts:
    """A micro-batch's counts, merged from the partitions' partial sums."""

    # Per topic, partition, status: offsets, rows, max event time (microseconds).
    stats: list[dict[str, Any]]
    aggregates: list[dict[str, Any]]  # per window x segment: counters and users_sketch
    histograms: list[dict[str, Any]]  # per window x segment x distribution x non-empty bin
    sample: pa.Array | None = None  # sampled parsed events (Sampling), typed
    # With Counting.values: events_seen of each new segment value, per dimension, and the
    # (dimension, value) pairs some partition counted as `other`.
    new_values: dict[str, dict[str, int]] | None = None
    folded: frozenset[tuple[str, str]] = frozenset()


def latest_event_time(stats: Iterable[dict[str, Any]]) -> datetime | None:
    """The newest event time of the aggregated and duplicate records of a batch's `stats`
    (Counts.stats), or None when they have none: the batch's `max_event_time`.
    """
    times = [
        s["max_event_time_us"]
        for s in stats
        if s["status"] in (AGGREGATED, DUPLICATE) and s["max_event_time_us"] is not None
    ]
    # Integer microseconds, not a float timestamp: exact to the microsecond.
    return _EPOCH + timedelta(microseconds=max(times)) if times else None


def merge_partials(partials: Sequence[dict[str, Any]], counting: Counting) -> Counts:
    """Sum the partial rows (PARTIAL_SCHEMA as dicts) of every partition."""
    windows: dict[tuple[Any, ...], list[Any]] = {}
    stats: dict[tuple[str, int, str], dict[str, Any]] = {}
    new_values: dict[str, dict[str, int]] = {d: {} for d in counting.dimensions}
    folded: set[tuple[str, str]] = set()
    for p in partials:
        if p["kind"] in (SAMPLE, RECORD):
            continue
        if p["kind"] == VALUE:
            dimension, value = p["segment"]
            per_value = new_values[dimension]
            per_value[value] = per_value.get(value, 0) + p["rows"]
            if p["status"] == FOLDED:
                folded.add((dimension, value))
            continue
        if p["kind"] == "offsets":
            key = (p["topic"], p["partition"], p["status"])
            s = stats.get(key)
            if s is None:
                stats[key] = {k: p[k] for k in _STATS}
                continue
            s["start_offset"] = min(s["start_offset"], p["start_offset"])
            s["end_offset"] = max(s["end_offset"], p["end_offset"])
            s["rows"] += p["rows"]
            times = [t for t in (s["max_event_time_us"], p["max_event_time_us"]) if t is not None]
            s["max_event_time_us"] = max(times) if times else None
            continue
        key = (p["window_start_s"], *p["segment"])
        entry = windows.get(key)
        counters = np.asarray(p["counters"], np.int64)
        histogram = np.asarray(p["histogram"], np.int64)
        if entry is None:
            entry = windows[key] = [counters, histogram, [p["users_sketch"]],
                                    np.zeros(_BUCKET_CELLS, np.int64),
                                    np.zeros(_BUCKET_ROWS * counting.slices, np.int64)]  # fmt: skip
        else:
            entry[0] = entry[0] + counters
            entry[1] = entry[1] + histogram
            entry[2].append(p["users_sketch"])
        for at, kind in ((3, "bucket"), (4, "slice")):
            cells = p.get(f"{kind}_cells")
            if cells:
                np.add.at(entry[at], np.asarray(cells, np.int64),
                          np.asarray(p[f"{kind}_values"], np.int64))  # fmt: skip
    dimension_set = ",".join(counting.dimensions)
    aggregates: list[dict[str, Any]] = []
    histograms: list[dict[str, Any]] = []
    for (window_start, *segment), (counters, histogram, sketches, cells, slice_cells) in sorted(
        windows.items()
    ):
        start = datetime.fromtimestamp(window_start, UTC)
        where = {"window_start": start, "dimension_set": dimension_set,
                 **dict(zip(SEGMENT_DIMENSIONS, segment, strict=True))}  # fmt: skip
        present = [s for s in sketches if s is not None]
        sketch = (
            present[0] if len(present) == 1 else merge_sketches(present, counting.users_lg_k)[0]
        )
        aggregates.append({
            **where, "window_end": datetime.fromtimestamp(window_start + counting.window_s, UTC),
            **dict(zip(COUNTERS, (int(v) for v in counters), strict=True)),
            "users_sketch": sketch,
            "bucket_sums": _per_counter(cells, BUCKETS),
            "slice_sums": _per_counter(slice_cells, counting.slices),
        })  # fmt: skip
        positions = np.flatnonzero(histogram)
        owners = np.searchsorted(_OFFSETS, positions, side="right") - 1
        for d, bin_, count in zip(owners.tolist(), (positions - _OFFSETS[owners]).tolist(),
                                  histogram[positions].tolist(), strict=True):  # fmt: skip
            histograms.append(
                {**where, "distribution": _DISTRIBUTION_IDS[d], "bin": bin_, "count": count}
            )
    return Counts(
        stats=list(stats.values()), aggregates=aggregates, histograms=histograms,
        new_values=new_values if counting.values is not None else None,
        folded=frozenset(folded),
    )  # fmt: skip
