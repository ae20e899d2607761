"""One partition's pass on the executors: its checked records in, its partial sums out.

`partial_counts` runs through `DataFrame.mapInArrow` on each partition of a micro-batch: it
gives each checked record its status, counts it (pipelines.stream.counting), samples it
(pipelines.stream.sampling) and yields the partition's PARTIAL_SCHEMA rows
(pipelines.stream.packing), which the driver merges (pipelines.stream.merge).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.reasons import AGGREGATED, DUPLICATE
from pipelines.stream.counting import NO_TIME, Counting, Partial, add_batch
from pipelines.stream.packing import (
    FOLDED,
    IDS,
    IDS_SCHEMA,
    PARTIAL_SCHEMA,
    RECORD,
    SAMPLE,
    SAMPLE_SCHEMA,
    VALUE,
    packed,
    partial_batch,
    sparse,
)
from pipelines.stream.sampling import NO_SAMPLE, Sampling, add_sample


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
    yield partial_batch({"kind": pa.array([IDS]), "packed": packed(ids)}, 1)
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
        yield partial_batch(given, n)


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
    partial = Partial(counting)
    for batch in batches:
        statuses = _statuses(batch, duplicates)
        add_batch(partial, batch, statuses)
        add_sample(partial, batch, statuses, sampling)
        if keep_records:
            yield from _records(batch)
    rows: list[dict[str, Any]] = []
    for (window_start, *segment), w in partial.windows.items():
        sketch = w.sketch.serialize_compact() if w.sketch is not None else None
        bucket_cells, bucket_values = sparse(w.buckets)
        slice_cells, slice_values = sparse(w.slices)
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
            "max_event_time_us": latest if latest > NO_TIME else None,
        })  # fmt: skip
    yield pa.RecordBatch.from_pylist(rows, schema=PARTIAL_SCHEMA)
    if partial.sample is not None:
        sample = pa.RecordBatch.from_arrays(
            [partial.sample, pa.array(partial.sample_keys, pa.float64())], schema=SAMPLE_SCHEMA
        )
        yield partial_batch({"kind": pa.array([SAMPLE]), "packed": packed(sample)}, 1)
