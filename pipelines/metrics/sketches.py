"""Mergeable distinct counts: HyperLogLog sketches in Apache DataSketches' format.

Spark's `hll_sketch_agg` writes the same binary format that the `datasketches` package
reads, so a window x segment's sketch can be merged across micro-batches (and any roll-up
of windows or segments) without keeping user ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import datasketches as ds

DEFAULT_LG_K = 11


def merge_sketches(
    sketches: Iterable[bytes | bytearray | memoryview | None], lg_k: int = DEFAULT_LG_K
) -> tuple[bytes | None, int]:
    """Union of the serialized sketches (None entries skipped): (bytes, rounded estimate).

    Returns (None, 0) when there is nothing to merge.
    """
    union = ds.hll_union(lg_k)
    merged = False
    for sketch in sketches:
        if sketch is None:
            continue
        union.update(ds.hll_sketch.deserialize(bytes(sketch)))
        merged = True
    if not merged:
        return None, 0
    result = union.get_result()
    return bytes(result.serialize_compact()), round(result.get_estimate())


def estimate(sketch: bytes | None) -> int:
    return 0 if sketch is None else round(ds.hll_sketch.deserialize(bytes(sketch)).get_estimate())


def bounds(sketch: bytes | None, std_devs: int = 2) -> tuple[int, int]:
    """The sketch's (lower, upper) bound of the distinct count at `std_devs` (1, 2 or 3)
    standard deviations: 2 is about a 95 % interval. (0, 0) for no sketch.
    """
    if sketch is None:
        return 0, 0
    hll = ds.hll_sketch.deserialize(bytes(sketch))
    return math.floor(hll.get_lower_bound(std_devs)), math.ceil(hll.get_upper_bound(std_devs))
