"""Contract checks of raw JSON events as Spark SQL expressions, derived from the JSON Schema.

`with_contract_errors(df, value)` adds `errors`: an array of
`"<reason>|<json path>: <message>"` strings, empty for a valid event. It runs on the JVM (no
Python per row). Each object level is read twice: as a map of key -> raw JSON text
(presence, extra keys, JSON null) and as the typed struct derived from the same schema (a
present value that did not convert is mistyped). Value checks (enum, range, pattern,
length, uniqueness) apply to typed values.

Known limit: Spark reads any JSON value (number, boolean, array, object) given where a
string is expected as its JSON text, so such a value is only rejected when the string has an
enum or a pattern; free-text fields accept it (and the privacy screen still reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.contract.spark_schema import spark_schema_from_json_schema
from schemas import SUPPORTED_EVENT_VERSIONS, event_schema

# A map of key -> raw JSON text of one object level (as a DDL string: pyspark's stubs do not
# accept a MapType here, although Spark does).
RAW_MAP = "map<string,string>"

INVALID_JSON = "invalid_json"
SCHEMA_VIOLATION = "schema_violation"
UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"


def _error(condition: Column, reason: str, path: str, message: str) -> Column:
    return F.when(condition, F.lit(f"{reason}|{path}: {message}"))


def _kind(node: dict[str, Any]) -> tuple[str, bool]:
    kind = node.get("type")
    if isinstance(kind, list):
        return next(k for k in kind if k != "null"), "null" in kind
    if kind is None and "const" in node:
        return "string", False
    return str(kind), False


@dataclass
class _Walker:
    checks: list[Column]
    raw_maps: list[tuple[str, Column]]  # (column name, expression) of each object's raw map

    def raw_map(self, expression: Column) -> Column:
        """Materialise an object's raw map as its own column: parsed once, read many times."""
        name = f"_raw{len(self.raw_maps)}"
        self.raw_maps.append((name, expression))
        return F.col(name)

    def object(self, node: dict[str, Any], raw: Column, typed: Column, path: str) -> None:
        props: dict[str, Any] = node.get("properties", {})
        if node.get("additionalProperties") is False:
            extra = F.array_except(F.map_keys(raw), F.array(*[F.lit(p) for p in props]))
            self.checks.append(
                F.when(
                    F.size(extra) > 0,
                    F.concat(
                        F.lit(f"{SCHEMA_VIOLATION}|{path}: unexpected field(s) "),
                        F.array_join(F.array_sort(extra), ", "),
                    ),
                )
            )
        required = set(node.get("required", []))
        for name, child in props.items():
            self.property(child, raw, typed, name, f"{path}.{name}", name in required)

    def property(
        self, node: dict[str, Any], raw: Column, typed: Column, name: str, path: str, required: bool
    ) -> None:
        kind, nullable = _kind(node)
        present = F.map_contains_key(raw, name)
        raw_value = raw[name]
        value = typed[name]
        if required:
            self.checks.append(_error(~present, SCHEMA_VIOLATION, path, "missing"))
        if not nullable:
            self.checks.append(
                _error(present & raw_value.isNull(), SCHEMA_VIOLATION, path, "null not allowed")
            )
        given = present & raw_value.isNotNull()
        expected = "string (date-time)" if node.get("format") == "date-time" else kind
        self.checks.append(
            _error(given & value.isNull(), SCHEMA_VIOLATION, path, f"mistyped, expected {expected}")
        )
        if node.get("format") == "date-time" and "pattern" in node:
            # Spark reads a JSON number as epoch seconds: the text must be an RFC 3339 string.
            self.checks.append(
                _error(given & value.isNotNull() & ~raw_value.rlike(node["pattern"]),
                       SCHEMA_VIOLATION, path, f"mistyped, expected {expected}")
            )  # fmt: skip
        ok = given & value.isNotNull()
        if kind == "object" and "properties" in node:
            self.object(node, self.raw_map(F.from_json(raw_value, RAW_MAP)), value, path)
        elif kind == "object":
            self.map_values(node, value, path, ok)
        elif kind == "array":
            self.array(node, value, path, ok)
        else:
            self.scalar(node, value, path, ok)

    def scalar(self, node: dict[str, Any], value: Column, path: str, ok: Column) -> None:
        if "enum" in node:
            allowed = [v for v in node["enum"] if v is not None]
            self.checks.append(
                _error(ok & ~value.isin(allowed), SCHEMA_VIOLATION, path, f"not one of {allowed}")
            )
        if "const" in node:
            self.checks.append(
                _error(ok & (value != F.lit(node["const"])), SCHEMA_VIOLATION, path,
                       f"must be {node['const']!r}")
            )  # fmt: skip
        if "minimum" in node:
            self.checks.append(
                _error(ok & (value < node["minimum"]), SCHEMA_VIOLATION, path,
                       f"below minimum {node['minimum']}")
            )  # fmt: skip
        if "maximum" in node:
            self.checks.append(
                _error(ok & (value > node["maximum"]), SCHEMA_VIOLATION, path,
                       f"above maximum {node['maximum']}")
            )  # fmt: skip
        if "maxLength" in node:
            self.checks.append(
                _error(ok & (F.length(value) > node["maxLength"]), SCHEMA_VIOLATION, path,
                       f"longer than {node['maxLength']} characters")
            )  # fmt: skip
        if "pattern" in node and node.get("format") != "date-time":
            self.checks.append(
                _error(ok & ~value.rlike(node["pattern"]), SCHEMA_VIOLATION, path,
                       "does not match the required format")
            )  # fmt: skip

    def array(self, node: dict[str, Any], value: Column, path: str, ok: Column) -> None:
        items = node.get("items", {})
        if "enum" in items:
            bad = F.exists(value, lambda x: ~x.isin(items["enum"]))
            self.checks.append(
                _error(ok & bad, SCHEMA_VIOLATION, path, f"items must be in {items['enum']}")
            )
        if node.get("uniqueItems"):
            self.checks.append(
                _error(ok & (F.size(F.array_distinct(value)) != F.size(value)), SCHEMA_VIOLATION,
                       path, "items are not unique")
            )  # fmt: skip

    def map_values(self, node: dict[str, Any], value: Column, path: str, ok: Column) -> None:
        names = node.get("propertyNames", {})
        if "pattern" in names:
            pattern = names["pattern"]
            self.checks.append(
                _error(ok & F.exists(F.map_keys(value), lambda k: ~k.rlike(pattern)),
                       SCHEMA_VIOLATION, path, "key does not match the required format")
            )  # fmt: skip
        minimum = node.get("additionalProperties", {}).get("minimum")
        if minimum is not None:
            self.checks.append(
                _error(ok & F.exists(F.map_values(value), lambda v: v < minimum),
                       SCHEMA_VIOLATION, path, f"value below minimum {minimum}")
            )  # fmt: skip


def parsed_event(value: Column) -> Column:
    """The typed event struct (fields that did not convert are null)."""
    return F.from_json(value, spark_schema_from_json_schema())


def with_contract_errors(df: DataFrame, value: Column) -> DataFrame:
    """`df` plus `event` (the typed struct) and `errors`: an array of
    '<reason>|<path>: <message>' for the JSON text `value`, [] when valid.

    Reasons: invalid_json (not a JSON object), unknown_schema_version, schema_violation.
    Only the version check applies when the version is unknown (the rest of the contract
    is that version's). Each JSON level is parsed once into a column, then every check reads
    the columns: one expression per check would make Spark plan for tens of seconds.
    """
    schema = event_schema("1")
    walker = _Walker(checks=[], raw_maps=[])
    raw = walker.raw_map(F.from_json(value, RAW_MAP))
    walker.object(schema, raw, F.col("event"), "$")
    staged = df.withColumn("event", parsed_event(value))
    for name, expression in walker.raw_maps:
        staged = staged.withColumn(name, expression)
    version = raw["schema_version"]
    known = list(SUPPORTED_EVENT_VERSIONS)
    # Most events are valid: a chain of null tests decides that cheaply, and the array of
    # messages is only built for the rare invalid event (CASE evaluates lazily on the JVM).
    any_error = walker.checks[0].isNotNull()
    for check in walker.checks[1:]:
        any_error = any_error | check.isNotNull()
    schema_errors = F.when(
        any_error, F.filter(F.array(*walker.checks), lambda e: e.isNotNull())
    ).otherwise(F.array().cast("array<string>"))
    errors = (
        F.when(raw.isNull(), F.array(F.lit(f"{INVALID_JSON}|$: not a JSON object")))
        .when(
            version.isNotNull() & ~version.isin(known),
            F.array(
                F.lit(
                    f"{UNKNOWN_SCHEMA_VERSION}|$.schema_version: not supported "
                    f"(supported: {', '.join(known)})"
                )
            ),
        )
        .otherwise(schema_errors)
    )
    return staged.withColumn("errors", errors).drop(*[name for name, _ in walker.raw_maps])


def free_text_paths(node: dict[str, Any] | None = None, prefix: str = "") -> list[str]:
    """Dotted paths of the string fields a person could type into: no enum, pattern, format
    or const. These are where upstream redaction can fail, so the privacy screen reads them.
    """
    node = node if node is not None else event_schema("1")
    out: list[str] = []
    for name, child in node.get("properties", {}).items():
        kind, _ = _kind(child)
        path = f"{prefix}{name}"
        if kind == "object" and "properties" in child:
            out += free_text_paths(child, path + ".")
        elif kind == "string" and not ({"enum", "pattern", "format", "const"} & child.keys()):
            out.append(path)
    return out
