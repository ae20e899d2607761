"""What the record checks derive from the event's JSON Schema: the JSON type of a schema
node and the field names it holds, the Arrow schemas of the Kafka records the checks read
(`INPUT_SCHEMA`) and of the rows they return (`output_schema`), the Arrow type of the typed
event and the one Arrow's JSON reader is given, the msgspec types the fast path decodes
into, the paths of the fields checked after decoding, the free-text fields the privacy
screen reads, and the contract's date-time format.

Pure (no I/O). The types and paths are computed once, when a checker is built
(`records.RecordChecker`, `columns.ColumnChecks`); `parse_date_time` is the one function
here called per record.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import pyarrow as pa

from schemas import event_schema

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# RFC 3339 in UTC as the contract writes it, matched whole (no trailing newline).
DATE_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                       r"(?:\.([0-9]{1,6}))?Z")  # fmt: skip

INPUT_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("value", pa.binary()),
    ]
)


def node_kind(node: dict[str, Any]) -> tuple[str, bool]:
    """(JSON type, allows null) of a schema node."""
    kind = node.get("type")
    if isinstance(kind, list):
        return next(k for k in kind if k != "null"), "null" in kind
    if kind is None and "const" in node:
        return "string", False
    return str(kind), False


def is_map(node: dict[str, Any]) -> bool:
    """Whether a schema node is an object of free keys (the contract's map)."""
    return node_kind(node)[0] == "object" and "properties" not in node


def field_names(node: dict[str, Any]) -> list[str]:
    """The name of every field, nested ones included: once per field that has it."""
    out: list[str] = []
    for name, child in node.get("properties", {}).items():
        out.append(name)
        out += field_names(child)
    return out


def optional_keys(node: dict[str, Any]) -> list[str]:
    """Names of the fields that may be absent but not null."""
    out: list[str] = []
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        if name not in required and not node_kind(child)[1]:
            out.append(name)
        out += optional_keys(child)
    return out


def free_text_paths(node: dict[str, Any] | None = None, prefix: str = "") -> list[str]:
    """Dotted paths of the string fields a person could type into: no enum, pattern, format
    or const. These are where upstream redaction can fail, so the privacy screen reads them.
    """
    node = node if node is not None else event_schema("1")
    out: list[str] = []
    for name, child in node.get("properties", {}).items():
        kind, _ = node_kind(child)
        path = f"{prefix}{name}"
        if kind == "object" and "properties" in child:
            out += free_text_paths(child, path + ".")
        elif kind == "string" and not ({"enum", "pattern", "format", "const"} & child.keys()):
            out.append(path)
    return out


# --- Arrow types ---------------------------------------------------------------------------


def arrow_type(node: dict[str, Any]) -> pa.DataType:
    """The Arrow type of a schema node; every field nullable (a rejected event is partial)."""
    kind, _ = node_kind(node)
    if kind == "object" and "properties" in node:
        return pa.struct([(n, arrow_type(c)) for n, c in node["properties"].items()])
    if kind == "object":
        return pa.map_(pa.string(), arrow_type(node["additionalProperties"]))
    if kind == "array":
        return pa.list_(arrow_type(node["items"]))
    if kind == "string":
        return pa.timestamp("us", tz="UTC") if node.get("format") == "date-time" else pa.string()
    return {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}[kind]


def read_type(node: dict[str, Any]) -> pa.DataType:
    """The type the reader reads a schema node as: date-times as text, maps as a struct
    with no fields (the reader adds one per key it meets).
    """
    kind, _ = node_kind(node)
    if kind == "object" and "properties" in node:
        return pa.struct([(n, read_type(c)) for n, c in node["properties"].items()])
    if kind == "object":
        return pa.struct([])
    if kind == "array":
        return pa.list_(read_type(node["items"]))
    if kind == "string":
        return pa.string()
    return {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}[kind]


def output_schema(schema: dict[str, Any] | None = None) -> pa.Schema:
    """The columns `check_batch` returns."""
    return pa.schema(
        [
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
            # Kept only for records that leave here rejected or late (the DLQ needs them).
            ("value", pa.binary()),
            ("event", arrow_type(schema if schema is not None else event_schema("1"))),
            ("errors", pa.list_(pa.string())),
            ("reason", pa.string()),
            ("detectors", pa.list_(pa.string())),
        ]
    )


# --- the fast path's types -----------------------------------------------------------------


def fast_type(node: dict[str, Any], name: str) -> Any:
    """A msgspec type that decodes exactly the values the node accepts (a subset, where
    msgspec cannot say it: unique items and calendar dates are checked after decoding).
    """
    kind, nullable = node_kind(node)
    result: Any
    if "const" in node:
        result = Literal[node["const"]]
    elif "enum" in node:
        result = Literal[tuple(v for v in node["enum"] if v is not None)]
    elif kind == "object" and "properties" in node:
        required = set(node.get("required", []))
        fields: list[Any] = []
        for child_name, child in node["properties"].items():
            child_type = fast_type(child, child_name)
            if child_name in required:
                fields.append((child_name, child_type))
            else:
                # Absent is fine, JSON null only where the node allows it.
                fields.append((child_name, child_type | msgspec.UnsetType, msgspec.UNSET))
        result = msgspec.defstruct(
            f"_{name}", fields, forbid_unknown_fields=node.get("additionalProperties") is False
        )
    elif kind == "object":
        names = node.get("propertyNames", {})
        key: Any = str
        if "pattern" in names:
            key = Annotated[str, msgspec.Meta(pattern=names["pattern"])]
        result = dict[key, fast_type(node["additionalProperties"], name)]  # type: ignore[misc,valid-type]
    elif kind == "array":
        result = list[fast_type(node["items"], name)]  # type: ignore[misc]
    else:
        meta: dict[str, Any] = {}
        if "minimum" in node:
            meta["ge"] = node["minimum"]
        if "maximum" in node:
            meta["le"] = node["maximum"]
        if "maxLength" in node:
            meta["max_length"] = node["maxLength"]
        if "pattern" in node:
            meta["pattern"] = node["pattern"]
        if kind == "integer":
            meta["ge"] = max(meta.get("ge", INT64_MIN), INT64_MIN)
            meta["le"] = min(meta.get("le", INT64_MAX), INT64_MAX)
        base = {"string": str, "integer": int, "number": float, "boolean": bool}[kind]
        result = Annotated[base, msgspec.Meta(**meta)] if meta else base
    return result | None if nullable else result


def unique_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the arrays whose items must be unique."""
    out: list[tuple[str, ...]] = []
    for name, child in node.get("properties", {}).items():
        if child.get("uniqueItems"):
            out.append((*prefix, name))
        out += unique_paths(child, (*prefix, name))
    return out


def map_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the objects of free keys (maps)."""
    out: list[tuple[str, ...]] = []
    for name, child in node.get("properties", {}).items():
        if node_kind(child)[0] == "object" and "properties" not in child:
            out.append((*prefix, name))
        out += map_paths(child, (*prefix, name))
    return out


def date_time_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the date-time strings."""
    out: list[tuple[str, ...]] = []
    for name, child in node.get("properties", {}).items():
        if child.get("format") == "date-time":
            out.append((*prefix, name))
        out += date_time_paths(child, (*prefix, name))
    return out


def parse_date_time(text: str) -> datetime | None:
    """The instant of an RFC 3339 UTC date-time as the contract writes it, or None (also for
    dates that do not exist, such as Feb 30 or hour 25).
    """
    m = DATE_TIME.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction = m.groups()
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                        int((fraction or "0").ljust(6, "0")), tzinfo=UTC)  # fmt: skip
    except ValueError:
        return None
