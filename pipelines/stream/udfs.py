"""Vectorised (Arrow) Python UDFs that wrap the pure privacy functions.

They run only on the few records the contract singled out (the callers filter first: Spark
evaluates a Python UDF on every row of its input, even inside a CASE).
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

from pipelines.privacy.scrub import dlq_payload


@pandas_udf(  # type: ignore[call-overload]
    T.StructType(
        [
            T.StructField("payload", T.StringType()),
            T.StructField("errors", T.ArrayType(T.StringType())),
            T.StructField("payload_truncated", T.BooleanType()),
            T.StructField("payload_bytes", T.LongType()),
            T.StructField("payload_sha256", T.StringType()),
        ]
    )
)
def scrub_udf(values: pd.Series, errors: pd.Series, max_bytes: pd.Series) -> pd.DataFrame:
    """The scrubbed payload and error messages of rejected records (`values`: the raw
    message bytes), together at most `max_bytes` as JSON strings (`scrub.dlq_payload`).
    """
    rows = [
        dlq_payload(v if v is not None else b"", list(es) if es is not None else [], max_bytes=m)
        for v, es, m in zip(values, errors, max_bytes, strict=True)
    ]
    # A message without value (a tombstone) has no payload.
    payloads = [None if v is None else r.payload for r, v in zip(rows, values, strict=True)]
    return pd.DataFrame(
        {
            "payload": payloads,
            "errors": [r.errors for r in rows],
            "payload_truncated": [r.truncated for r in rows],
            "payload_bytes": pd.Series([r.original_bytes for r in rows], dtype="int64"),
            "payload_sha256": [r.original_sha256 for r in rows],
        }
    )
