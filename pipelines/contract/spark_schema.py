"""Derive a Spark StructType from the JSON Schema, so there is one definition of the event.

Mapping: object with properties -> StructType (field nullable unless required), object with
only additionalProperties -> MapType(string, value), array -> ArrayType, string with format
date-time -> TimestampType, integer -> LongType, number -> DoubleType, boolean -> BooleanType,
other strings -> StringType. A type list containing "null" makes the field nullable.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import types as T

from schemas import event_schema


def _non_null_type(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if len(kinds) != 1:
            msg = f"cannot map a JSON Schema union {kind!r} to one Spark type"
            raise ValueError(msg)
        return str(kinds[0])
    if kind is None and "const" in node:
        return "string" if isinstance(node["const"], str) else "number"
    if not isinstance(kind, str):
        msg = f"JSON Schema node without a type: {node!r}"
        raise ValueError(msg)
    return kind


def _data_type(node: dict[str, Any]) -> T.DataType:
    kind = _non_null_type(node)
    if kind == "object":
        if "properties" in node:
            required = set(node.get("required", []))
            return T.StructType(
                [
                    T.StructField(
                        name,
                        _data_type(child),
                        nullable=name not in required or _allows_null(child),
                    )
                    for name, child in node["properties"].items()
                ]
            )
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            return T.MapType(T.StringType(), _data_type(values), valueContainsNull=False)
        msg = "an object needs properties or typed additionalProperties"
        raise ValueError(msg)
    if kind == "array":
        return T.ArrayType(_data_type(node["items"]), containsNull=False)
    if kind == "string":
        return T.TimestampType() if node.get("format") == "date-time" else T.StringType()
    if kind == "integer":
        return T.LongType()
    if kind == "number":
        return T.DoubleType()
    if kind == "boolean":
        return T.BooleanType()
    msg = f"unsupported JSON Schema type {kind!r}"
    raise ValueError(msg)


def _allows_null(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return isinstance(kind, list) and "null" in kind


def spark_schema_from_json_schema(schema: dict[str, Any] | None = None) -> T.StructType:
    """The StructType of an event; defaults to interaction_event v1."""
    result = _data_type(schema if schema is not None else event_schema("1"))
    assert isinstance(result, T.StructType)
    return result
