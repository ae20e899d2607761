"""The driver's side of counting: the partitions' partial sums merged into a batch's counts.

`merge_partials` sums the PARTIAL_SCHEMA rows (pipelines.stream.packing) that every
partition sent, per window x segment (counters, histograms, merged user sketches, bucket and
slice sums) and per Kafka partition and status (offset range, rows, latest event time), into
the rows the warehouse keeps (`Counts`). Nothing here does I/O or needs Spark.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.contract.reasons import AGGREGATED, DUPLICATE
from pipelines.metrics.buckets import BUCKETS
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.metrics.sketches import merge_sketches
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.stream.counting import BUCKET_COUNTERS, COUNTERS, Counting
from pipelines.stream.histograms import HISTOGRAM_OFFSETS
from pipelines.stream.packing import FOLDED, RECORD, SAMPLE, VALUE

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OFFSETS = np.asarray(HISTOGRAM_OFFSETS)
_DISTRIBUTION_IDS = [d.id for d in DISTRIBUTIONS]
_BUCKET_ROWS = len(BUCKET_COUNTERS)
_BUCKET_CELLS = _BUCKET_ROWS * BUCKETS
_STATS = ("topic", "partition", "status", "start_offset", "end_offset", "rows",
          "max_event_time_us")  # fmt: skip


def _per_counter(flat: np.ndarray, parts: int) -> dict[str, list[int]]:
    """Flat BUCKET_COUNTERS x parts sums as the warehouse keeps them: counter id -> its
    `parts` sums, all-zero counters left out.
    """
    return {
        c: row.tolist()
        for c, row in zip(BUCKET_COUNTERS, flat.reshape(-1, parts), strict=True)
        if row.any()
    }


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
