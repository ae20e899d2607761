"""The Spark schema derived from the contract reads every example event back unchanged."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from pyspark.sql import functions as F

from pipelines.contract.spark_schema import spark_schema_from_json_schema
from schemas import example_paths

pytestmark = pytest.mark.integration


def _normalise(value):
    """JSON-equal form: timestamps as datetimes, so '…00.120Z' equals '…00.12Z'."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str) and len(value) >= 20 and value[10] == "T" and value[-1] == "Z":
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_round_trips_through_the_derived_spark_schema(spark, path):
    original = json.loads(path.read_text())
    df = spark.createDataFrame([(json.dumps(original),)], "value string")
    parsed = df.select(F.from_json("value", spark_schema_from_json_schema()).alias("e"))
    back = parsed.select(
        F.to_json(
            "e",
            {
                "ignoreNullFields": "false",
                "timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
            },
        )
    ).first()[0]
    result = json.loads(back)
    if "excerpts" not in original:
        assert result.pop("excerpts") is None  # optional struct comes back as null
    assert _normalise(result) == _normalise(original)
