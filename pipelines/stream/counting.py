"""Count the checked records of one partition per tumbling window x segment, on Arrow batches.

`Counting` says how to count; `Partial` holds one partition's running sums, and `add_batch`
adds one Arrow batch of checked records to them: counters, dense histograms
(pipelines.stream.histograms), HyperLogLog sketches of user ids, the sums of BUCKET_COUNTERS
per user bucket and per slice of the window, and per Kafka partition and status the offset
range, rows and latest event time (to the microsecond). What one record contributes:

- an aggregated record: every catalog counter whose predicate holds
  (pipelines.stream.predicates), one entry in each histogram
  (pipelines.metrics.distributions), its user id in the sketch, and the telemetry counters
  below;
- a record attributable to a segment (aggregated or schema_violation, with a readable
  event_time and a segment that met the contract): events_seen, telemetry_complete when no
  safety field failed the contract, redaction_failures when it is an aggregated record whose
  free text held personal data (the checker dropped that text and listed its `detectors`).
  Whatever the record's status, a segment value that the PII screen flags is counted as
  `[REDACTED]`.

With `Counting.values` (`ValueLimits`), a partition keeps few new segment values and counts
the rest as `other`. Nothing here does I/O or needs Spark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import datasketches as ds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.reasons import AGGREGATED, SCHEMA_VIOLATION
from pipelines.metrics.buckets import BUCKETS, user_bucket
from pipelines.metrics.catalog import EVENT_COUNTERS, bucket_counter_ids, telemetry_counter_ids
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
from pipelines.stream.histograms import HISTOGRAM_BINS, histogram_entries
from pipelines.stream.predicates import Columns, predicate

# Paths whose errors make an event's safety telemetry incomplete.
SAFETY_PATHS = ("moderation", "refusal", "injection", "jailbreak", "tool_calls", "privacy",
                "feedback", "request.outcome")  # fmt: skip
_SAFETY_ERROR = r"\|\$\.(" + "|".join(p.replace(".", r"\.") for p in SAFETY_PATHS) + ")"
TELEMETRY_COUNTERS = telemetry_counter_ids()
COUNTERS = (*[c.id for c in EVENT_COUNTERS], *TELEMETRY_COUNTERS)
NO_TIME = -(2**62)  # the latest event time of records that have none
_ATTRIBUTABLE = pa.array([AGGREGATED, SCHEMA_VIOLATION])
# The counters kept per user bucket (pipelines.metrics.buckets), as positions among
# EVENT_COUNTERS: a window's bucket sums are a (len(BUCKET_COUNTERS), BUCKETS) matrix.
BUCKET_COUNTERS = bucket_counter_ids()
_BUCKET_ROW = {c: i for i, c in enumerate(BUCKET_COUNTERS)}
_BUCKET_ROWS = len(BUCKET_COUNTERS)


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
    """Cardinality control on the executors (pipelines.cardinality), so that a flood
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


@dataclass
class _Window:
    counters: np.ndarray
    histogram: np.ndarray
    buckets: np.ndarray  # BUCKET_COUNTERS x BUCKETS
    slices: np.ndarray  # BUCKET_COUNTERS x Counting.slices
    sketch: Any = None


@dataclass
class Partial:
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


def numpy_mask(values: pa.Array) -> np.ndarray:
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


def _limit_values(partial: Partial, codes: list[np.ndarray], values: list[list[str]]) -> None:
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


def add_batch(partial: Partial, batch: pa.RecordBatch, statuses: pa.Array) -> None:
    """Add one Arrow batch of checked records, of the given `statuses`, to `partial`."""
    counting = partial.counting
    events = batch.column("event")
    event_time = pc.struct_field(events, "event_time").cast(pa.int64())  # microseconds
    has_time = np.asarray(pc.is_valid(event_time).to_numpy(zero_copy_only=False), dtype=bool)
    micros = np.asarray(pc.fill_null(event_time, 0).to_numpy(zero_copy_only=False))
    seconds = micros // 1_000_000

    # Offsets, rows and latest event time per partition and status.
    latest = pa.array(np.where(has_time, micros, NO_TIME), pa.int64())
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
    segment_ok[parents[numpy_mask(pc.match_substring(flat, "|$.segment"))]] = False
    complete = np.ones(len(batch), dtype=bool)
    complete[parents[numpy_mask(pc.match_substring_regex(flat, _SAFETY_ERROR))]] = False
    has_segment = np.asarray(pc.is_valid(pc.struct_field(events, "segment")).to_numpy(
        zero_copy_only=False), dtype=bool)  # fmt: skip
    attributable = (
        numpy_mask(pc.is_in(statuses, value_set=_ATTRIBUTABLE))
        & has_time
        & has_segment
        & segment_ok
    )
    rows = np.flatnonzero(attributable)
    if len(rows) == 0:
        return
    status = statuses.take(pa.array(rows, pa.int64()))
    aggregated = numpy_mask(pc.equal(status, AGGREGATED))
    # Counted with its text dropped: the checker found personal data in its free text.
    flagged = pc.greater(pc.list_value_length(batch.column("detectors")), 0)
    pii = aggregated & numpy_mask(flagged.take(pa.array(rows, pa.int64())))
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
            mask = predicate(counter.predicate or "false")(columns)
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
