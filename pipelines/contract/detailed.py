"""The detailed path of the record checks: one record's bytes -> the partial typed event
and every violation, each named with its JSON path ('<reason>|<json path>: <message>').

A generic decode, then one walk of the schema that keeps every field that has the right
type (the partial event still places a rejected record in its segment). `records.py` sends
here every record that neither the columnar path nor the fast path proves valid; the fast
path only ever accepts what this path accepts (tests/unit/test_contract_records.py checks
both against the reference validator, jsonschema). `unstorable` is the one rule the schema
leaves out, checked on every record.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from pipelines.contract.reasons import INVALID_JSON, SCHEMA_VIOLATION, UNKNOWN_SCHEMA_VERSION
from pipelines.contract.shapes import INT64_MAX, INT64_MIN, node_kind, parse_date_time
from schemas import SUPPORTED_EVENT_VERSIONS


def _violation(path: str, message: str) -> str:
    return f"{SCHEMA_VIOLATION}|{path}: {message}"


def _scalar(kind: str, node: dict[str, Any], value: Any) -> Any:
    """`value` converted to the node's type, or None when it has another JSON type."""
    if isinstance(value, bool):
        return value if kind == "boolean" else None
    if kind == "string":
        if not isinstance(value, str):
            return None
        return parse_date_time(value) if node.get("format") == "date-time" else value
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1.0 is an integer to JSON Schema
        return value if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX else None
    if kind == "number" and isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _expected(node: dict[str, Any], kind: str) -> str:
    return "string (date-time)" if node.get("format") == "date-time" else kind


def _checked_scalar(
    node: dict[str, Any], kind: str, value: Any, path: str, errors: list[str]
) -> Any:
    typed = _scalar(kind, node, value)
    if typed is None:
        errors.append(_violation(path, f"mistyped, expected {_expected(node, kind)}"))
        return None
    if "enum" in node and typed not in node["enum"]:
        errors.append(_violation(path, f"not one of {[v for v in node['enum'] if v is not None]}"))
    if "const" in node and typed != node["const"]:
        errors.append(_violation(path, f"must be {node['const']!r}"))
    if "minimum" in node and typed < node["minimum"]:
        errors.append(_violation(path, f"below minimum {node['minimum']}"))
    if "maximum" in node and typed > node["maximum"]:
        errors.append(_violation(path, f"above maximum {node['maximum']}"))
    if "maxLength" in node and len(typed) > node["maxLength"]:
        errors.append(_violation(path, f"longer than {node['maxLength']} characters"))
    if "pattern" in node and node.get("format") != "date-time":
        if re.search(node["pattern"], typed) is None:
            errors.append(_violation(path, "does not match the required format"))
    return typed


def _array(node: dict[str, Any], value: Any, path: str, errors: list[str]) -> Any:
    items = node.get("items", {})
    kind, _ = node_kind(items)
    typed = [_scalar(kind, items, v) for v in value] if isinstance(value, list) else None
    if typed is None or any(t is None for t in typed):
        errors.append(_violation(path, f"mistyped, expected array of {_expected(items, kind)}"))
        return None
    if "enum" in items and any(t not in items["enum"] for t in typed):
        errors.append(_violation(path, f"items must be in {items['enum']}"))
    if node.get("uniqueItems") and len(set(typed)) != len(typed):
        errors.append(_violation(path, "items are not unique"))
    return typed


def _map(node: dict[str, Any], value: Any, path: str, errors: list[str]) -> Any:
    values = node["additionalProperties"]
    kind, _ = node_kind(values)
    typed = (
        {k: _scalar(kind, values, v) for k, v in value.items()} if isinstance(value, dict) else None
    )
    if typed is None or any(v is None for v in typed.values()):
        errors.append(_violation(path, f"mistyped, expected object of {_expected(values, kind)}"))
        return None
    pattern = node.get("propertyNames", {}).get("pattern")
    if pattern is not None and any(re.search(pattern, k) is None for k in typed):
        errors.append(_violation(path, "key does not match the required format"))
    minimum = values.get("minimum")
    if minimum is not None and any(v < minimum for v in typed.values()):
        errors.append(_violation(path, f"value below minimum {minimum}"))
    return dict(sorted(typed.items()))  # entries in key order, as the columnar path has them


def _object(
    node: dict[str, Any], doc: dict[str, Any], path: str, errors: list[str]
) -> dict[str, Any]:
    props: dict[str, Any] = node.get("properties", {})
    if node.get("additionalProperties") is False:
        extra = sorted(k for k in doc if k not in props)
        if extra:
            errors.append(_violation(path, f"unexpected field(s) {', '.join(extra)}"))
    required = set(node.get("required", []))
    out: dict[str, Any] = {}
    for name, child in props.items():
        child_path = f"{path}.{name}"
        kind, nullable = node_kind(child)
        if name not in doc:
            if name in required:
                errors.append(_violation(child_path, "missing"))
            out[name] = None
            continue
        value = doc[name]
        if value is None:
            if not nullable:
                errors.append(_violation(child_path, "null not allowed"))
            out[name] = None
        elif kind == "object" and "properties" in child:
            if isinstance(value, dict):
                out[name] = _object(child, value, child_path, errors)
            else:
                errors.append(_violation(child_path, "mistyped, expected object"))
                out[name] = None
        elif kind == "object":
            out[name] = _map(child, value, child_path, errors)
        elif kind == "array":
            out[name] = _array(child, value, child_path, errors)
        else:
            out[name] = _checked_scalar(child, kind, value, child_path, errors)
    return out


def _raw_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def detailed(value: bytes, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """(the partial typed event or None, every violation) of one record's bytes.

    Reasons: invalid_json (not a JSON object), unknown_schema_version, schema_violation.
    Only the version check applies when the version is unknown (the rest of the contract is
    that version's). A record that is not valid UTF-8 is invalid_json.
    """
    try:
        doc = msgspec.json.decode(value)
    except (msgspec.DecodeError, RecursionError, ValueError):  # also invalid UTF-8
        return None, [f"{INVALID_JSON}|$: not a JSON object"]
    if not isinstance(doc, dict):
        return None, [f"{INVALID_JSON}|$: not a JSON object"]
    version = doc.get("schema_version")
    known = list(SUPPORTED_EVENT_VERSIONS)
    if version is not None and _raw_text(version) not in known:
        message = f"not supported (supported: {', '.join(known)})"
        return None, [f"{UNKNOWN_SCHEMA_VERSION}|$.schema_version: {message}"]
    errors: list[str] = []
    return _object(schema, doc, "$", errors), errors


def unstorable(event: dict[str, Any] | None) -> list[str]:
    """Violations of the one rule the schema leaves out: a segment value (stored in the
    warehouse) holds no NUL character, which PostgreSQL text cannot hold. A pattern would
    say it, but would also take the segment out of the privacy screen's free text.
    """
    segment = event.get("segment") if event is not None else None
    if not isinstance(segment, dict):
        return []
    return [
        _violation(f"$.segment.{name}", "holds a NUL character (U+0000)")
        for name, text in segment.items()
        if isinstance(text, str) and "\x00" in text
    ]
