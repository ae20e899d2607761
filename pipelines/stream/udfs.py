"""Vectorised (Arrow) Python UDFs that wrap the pure privacy functions.

They run only on the few records the contract singled out (the callers filter first: Spark
evaluates a Python UDF on every row of its input, even inside a CASE).
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

from pipelines.privacy.detectors import mask
from pipelines.privacy.scrub import scrub_payload


@pandas_udf(  # type: ignore[call-overload]
    T.StructType(
        [
            T.StructField("payload", T.StringType()),
            T.StructField("errors", T.ArrayType(T.StringType())),
        ]
    )
)
def scrub_udf(values: pd.Series, errors: pd.Series) -> pd.DataFrame:
    """The scrubbed payload and error messages of rejected records."""
    return pd.DataFrame(
        {
            "payload": values.map(lambda v: scrub_payload(v) if v is not None else None),
            "errors": errors.map(lambda es: [mask(e) for e in es] if es is not None else []),
        }
    )
