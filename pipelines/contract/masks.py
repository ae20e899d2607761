"""Arrow boolean arrays as numpy masks: the columnar checks compute each check with Arrow
compute and combine the results row by row in numpy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array (no nulls) as numpy."""
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def bool_mask(arr: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return mask(arr.fill_null(False))
