"""Objects of free keys (maps, such as `privacy.entity_counts`) as the columnar checks read
them: Arrow's JSON reader is given a struct with no fields for a map (`shapes.read_type`)
and adds one field per key it meets in the block. Here are the entry names it found, and
such a struct turned into the contract's map, keys in sorted order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.contract.masks import mask


def map_keys(actual: pa.DataType, expected: pa.DataType) -> list[str]:
    """The entry names the reader found in the maps of a block (fields of `actual` that
    `expected`, the struct the reader was given, does not have).
    """
    out: list[str] = []
    if not pa.types.is_struct(actual):
        return out
    if pa.types.is_struct(expected) and expected.num_fields == 0:
        return [actual.field(i).name for i in range(actual.num_fields)]
    for i in range(expected.num_fields):
        out += map_keys(actual.field(i).type, expected.field(i).type)
    return out


def to_map(arr: pa.StructArray, target: pa.MapType) -> pa.Array:
    """A struct with one field per key -> a map of its non-null fields, keys sorted."""
    n = len(arr)
    names = sorted(arr.type.field(i).name for i in range(arr.type.num_fields))
    if not names:
        offsets = pa.array(np.zeros(n + 1, dtype=np.int32))
        return pa.MapArray.from_arrays(
            offsets, pa.array([], target.key_type), pa.array([], target.item_type)
        )
    present = np.column_stack([mask(arr.field(k).is_valid()) for k in names])
    values = np.column_stack(
        [arr.field(k).fill_null(0).to_numpy(zero_copy_only=False) for k in names]
    )
    counts = present.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    keys = np.tile(np.array(names, dtype=object), n)[present.ravel()]
    return pa.MapArray.from_arrays(
        pa.array(offsets),
        pa.array(keys.tolist(), target.key_type),
        pa.array(values.ravel()[present.ravel()], target.item_type),
    )
