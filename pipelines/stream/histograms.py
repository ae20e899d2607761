"""The dense histogram vector of a window x segment, and where each event falls in it.

Every distribution of pipelines.metrics.distributions owns a run of bins in one dense
vector (`HISTOGRAM_OFFSETS`, `HISTOGRAM_BINS` in all); `histogram_entries` gives, for a
batch of parsed events, the position of every entry they count in.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.stream.predicates import Columns

# Offsets of each distribution's bins in one dense histogram vector.
HISTOGRAM_OFFSETS = tuple(np.cumsum([0] + [d.bins for d in DISTRIBUTIONS[:-1]]).tolist())
HISTOGRAM_BINS = sum(d.bins for d in DISTRIBUTIONS)


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
