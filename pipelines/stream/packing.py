"""The Arrow rows the executors send the driver: `PARTIAL_SCHEMA`, and rows packed in one.

Each partition's pass (pipelines.stream.partials) yields PARTIAL_SCHEMA rows of a few kinds:
a window x segment's sums (`counters` in the order of COUNTERS and `bucket_cells` of
BUCKET_COUNTERS, pipelines.stream.counting; `histogram` as HISTOGRAM_OFFSETS lays it out,
pipelines.stream.histograms), the offsets per Kafka partition and status, the new segment
values, and records the DLQ may receive. Many small rows travel as one: the sampled events
(SAMPLE_SCHEMA) and the ids deduplication needs (IDS_SCHEMA) are packed into a single row
as one Arrow IPC stream (`packed`), and read back on the driver (`unpacked`, `ids_of`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.shapes import output_schema

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


def packed(batch: pa.RecordBatch) -> pa.Array:
    """`batch` as one Arrow IPC stream, in a one-row binary array."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return pa.array([sink.getvalue().to_pybytes()], pa.binary())


def unpacked(partials: pa.Table, kind: str, schema: pa.Schema) -> pa.Table:
    """The rows packed in the `kind` rows of `partials`, as one table of `schema`."""
    rows = partials.filter(pc.equal(partials.column("kind"), kind))
    blobs = rows.column("packed").to_pylist()
    tables = [pa.ipc.open_stream(blob).read_all() for blob in blobs if blob is not None]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def ids_of(partials: pa.Table) -> pa.Table:
    """The IDS_SCHEMA rows of the `ids` rows among `partials`."""
    return unpacked(partials, IDS, IDS_SCHEMA)


def partial_batch(given: dict[str, Any], n: int) -> pa.RecordBatch:
    """`n` PARTIAL_SCHEMA rows: the `given` columns, nulls in the others."""
    return pa.RecordBatch.from_arrays(
        [given[f.name] if f.name in given else pa.nulls(n, f.type) for f in PARTIAL_SCHEMA],
        schema=PARTIAL_SCHEMA,
    )


def sparse(matrix: np.ndarray) -> tuple[list[int], list[int]]:
    """The non-zero cells of a BUCKET_COUNTERS x parts matrix, row major: positions, values."""
    flat = matrix.reshape(-1)
    cells = np.flatnonzero(flat)
    return cells.tolist(), flat[cells].tolist()
