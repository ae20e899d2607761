"""The quality sample: a deterministic sample of a micro-batch's parsed records.

Each partition keeps the records of the smallest hashes of their coordinates (`add_sample`,
`sample_hash`) and packs them in one row; the driver keeps the smallest of those
(`sample_of`), so nothing sorts the batch and a replayed batch draws the same sample. The
data-quality suite (pipelines.quality) runs on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.reasons import UNPARSED
from pipelines.stream.counting import Partial, numpy_mask
from pipelines.stream.packing import SAMPLE, SAMPLE_SCHEMA, unpacked


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


def add_sample(partial: Partial, batch: pa.RecordBatch, statuses: pa.Array,
                sampling: Sampling) -> None:  # fmt: skip
    """Keep the parsed records of the smallest hashes, `sampling.rows` at most."""
    if sampling.rows <= 0:
        return
    u = sample_hash(
        batch.column("partition").to_numpy(zero_copy_only=False),
        batch.column("offset").to_numpy(zero_copy_only=False),
        sampling.seed,
    )
    rows = np.flatnonzero(~numpy_mask(pc.is_in(statuses, value_set=pa.array(UNPARSED))))
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


def sample_of(partials: pa.Table, rows: int) -> pa.Array:
    """The `rows` sampled events of smallest key among the partitions' samples (the
    `sample` rows of `partials`, PARTIAL_SCHEMA), in key order.
    """
    samples = unpacked(partials, SAMPLE, SAMPLE_SCHEMA)
    keys = samples.column("sample_key").to_numpy()
    order = np.argsort(keys, kind="stable")[:rows]
    return samples.column("event").combine_chunks().take(pa.array(order, pa.int64()))
