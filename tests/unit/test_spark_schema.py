"""The Spark schema is derived from the JSON Schema: same fields, same nesting, same types."""

from pyspark.sql import types as T

from pipelines.contract.spark_schema import spark_schema_from_json_schema
from schemas import event_schema


def _json_paths(node, prefix=""):
    paths = {}
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        paths[path] = child
        if "properties" in child:
            paths.update(_json_paths(child, path + "."))
    return paths


def _spark_paths(struct, prefix=""):
    paths = {}
    for field in struct.fields:
        path = f"{prefix}{field.name}"
        paths[path] = field
        if isinstance(field.dataType, T.StructType):
            paths.update(_spark_paths(field.dataType, path + "."))
    return paths


def test_every_json_schema_property_has_a_spark_field_and_no_more():
    assert set(_json_paths(event_schema("1"))) == set(_spark_paths(spark_schema_from_json_schema()))


def test_types_and_nullability_follow_the_json_schema():
    fields = _spark_paths(spark_schema_from_json_schema())
    assert fields["event_time"].dataType == T.TimestampType()
    assert fields["request.input_tokens"].dataType == T.LongType()
    assert fields["request.latency_ms"].dataType == T.DoubleType()
    assert fields["refusal.refused"].dataType == T.BooleanType()
    assert fields["moderation.flagged_categories"].dataType == T.ArrayType(T.StringType(), False)
    counts = fields["privacy.entity_counts"].dataType
    assert counts == T.MapType(T.StringType(), T.LongType(), False)
    assert not fields["event_id"].nullable  # required
    assert fields["excerpts"].nullable  # optional
    assert fields["injection.source"].nullable  # type ["string", "null"]


def test_a_changed_json_schema_changes_the_spark_schema():
    schema = {
        "type": "object",
        "required": ["a"],
        "properties": {"a": {"type": "integer"}, "b": {"type": "string", "format": "date-time"}},
    }
    assert spark_schema_from_json_schema(schema) == T.StructType(
        [T.StructField("a", T.LongType(), False), T.StructField("b", T.TimestampType(), True)]
    )
