"""Contract checks of raw JSON events as Spark SQL expressions, derived from the JSON Schema.

`with_contract_errors(df, value)` adds `event` (the typed struct) and `errors`: an array of
`"<reason>|<json path>: <message>"` strings, empty for a valid event. It runs on the JVM (no
Python per row). The JSON text is parsed once into the typed struct and once per object level
into a map of key -> raw JSON text; the maps are read for their sizes only on the fast path.

Two paths decide an event, in one projection:
- the fast path proves most events valid cheaply: at every object level, the number of keys
  equals the number of declared fields that converted to their type (so there is no extra
  key, no explicit null where none is allowed, no mistyped value), every required field
  converted, and every value check (enum, range, pattern, length, uniqueness) holds on the
  typed values;
- every other event takes the detailed path, which names each violation with its JSON path
  (presence, extra keys, JSON null and mistyped values read from the raw maps). CASE is lazy
  on the JVM, so valid events never pay for it.
The fast path only ever accepts events the detailed path accepts
(tests/integration/test_contract_checks_spark.py checks both against jsonschema).

Known limit: Spark reads any JSON value (number, boolean, array, object) given where a
string is expected as its JSON text, so such a value is only rejected when the string has an
enum or a pattern; free-text fields accept it (and the privacy screen still reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.contract.spark_schema import spark_schema_from_json_schema
from pipelines.expressions import per_spark_context
from schemas import SUPPORTED_EVENT_VERSIONS, event_schema

# A map of key -> raw JSON text of one object level (as a DDL string: pyspark's stubs do not
# accept a MapType here, although Spark does).
RAW_MAP = "map<string,string>"

INVALID_JSON = "invalid_json"
SCHEMA_VIOLATION = "schema_violation"
UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"


# One JSON token per match, outside strings: a whole string (escapes included), a number, a
# literal or an opening bracket; `}`, `]`, `,` and `:` are not counted. Strings are consumed
# whole, so nothing inside a string is ever counted. Possessive quantifiers: linear time and
# no backtracking stack on long strings.
TOKEN = (
    r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
    r"|-?[0-9]++(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+"
    r"|true|false|null|[{\[]"
)


# Each token becomes this character, then the characters are counted: cheaper than
# collecting every match. It cannot occur outside a token in JSON the typed parse accepts
# (a raw control character is invalid JSON, and inside a string it is part of its token).
_MARK = "\u0001"


def _token_count(json_text: Column) -> Column:
    marked = F.regexp_replace(json_text, TOKEN, _MARK)
    return F.length(marked) - F.length(F.replace(marked, F.lit(_MARK), F.lit("")))


def _error(condition: Column, reason: str, path: str, message: str) -> Column:
    return F.when(condition, F.lit(f"{reason}|{path}: {message}"))


def _kind(node: dict[str, Any]) -> tuple[str, bool]:
    kind = node.get("type")
    if isinstance(kind, list):
        return next(k for k in kind if k != "null"), "null" in kind
    if kind is None and "const" in node:
        return "string", False
    return str(kind), False


def _sum(terms: list[Column]) -> Column:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _all(conditions: list[Column]) -> Column:
    result = conditions[0]
    for condition in conditions[1:]:
        result = result & condition
    return result


@dataclass
class _Walker:
    """Builds both paths from the schema in one walk.

    `raw` columns are the detailed path's maps of key -> raw JSON text, computed only for the
    events the fast path did not accept. `typed` is the event struct; `text` the same parse
    with date-times kept as text.
    """

    value: Column  # the record's JSON text
    checks: list[Column] = field(default_factory=list)  # detailed path: a message or null each
    # (column name, expression, nesting depth) of each object's raw map
    raw_maps: list[tuple[str, Column, int]] = field(default_factory=list)
    fast: list[Column] = field(default_factory=list)  # fast path: all must be true
    tokens: list[Column] = field(default_factory=list)  # fast path: JSON tokens accounted for

    def raw_map(self, expression: Column, depth: int) -> Column:
        """An object's raw map as its own column, parsed once (for the detailed path only)."""
        name = f"_raw{len(self.raw_maps)}"
        self.raw_maps.append((name, expression, depth))
        return F.col(name)

    def value_check(self, check: Column) -> None:
        """A check that reads typed values only: the fast path needs it to pass too."""
        self.checks.append(check)
        self.fast.append(check.isNull())

    def object(
        self,
        node: dict[str, Any],
        raw: Column,
        typed: Column,
        text: Column,
        path: str,
        depth: int = 0,
    ) -> None:
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
            self.property(child, raw, typed, text, name, f"{path}.{name}", name in required, depth)

    def property(
        self,
        node: dict[str, Any],
        raw: Column,
        typed: Column,
        text: Column,
        name: str,
        path: str,
        required: bool,
        depth: int,
    ) -> None:
        kind, nullable = _kind(node)
        present = F.map_contains_key(raw, name)
        raw_value = raw[name]
        value = typed[name]
        converted = value.isNotNull()
        if nullable:
            # Missing and JSON null both parse to null: only the object's keys tell them
            # apart, read lazily (most events never need it).
            parent = path.rsplit(".", 1)[0]
            keys = F.json_object_keys(F.get_json_object(self.value, parent))
            given_null = ~converted & typed.isNotNull() & F.array_contains(keys, name)
        inner = self._inner_tokens(node, kind, value)
        tokens = F.when(converted, 1 + inner)
        # A JSON null given where allowed: its key and the null.
        self.tokens.append((tokens.when(given_null, 2) if nullable else tokens).otherwise(0))
        if required:
            self.checks.append(_error(~present, SCHEMA_VIOLATION, path, "missing"))
            self.fast.append(converted | given_null if nullable else converted)
        if not nullable:
            self.checks.append(
                _error(present & raw_value.isNull(), SCHEMA_VIOLATION, path, "null not allowed")
            )
        given = present & raw_value.isNotNull()
        expected = "string (date-time)" if node.get("format") == "date-time" else kind
        self.checks.append(
            _error(given & value.isNull(), SCHEMA_VIOLATION, path, f"mistyped, expected {expected}")
        )
        # A value that converted was given: value checks need no lookup in the raw map.
        ok = converted
        if node.get("format") == "date-time" and "pattern" in node:
            # The text must be an RFC 3339 string (Spark would read other forms too).
            self.value_check(
                _error(ok & ~text[name].rlike(node["pattern"]), SCHEMA_VIOLATION, path,
                       f"mistyped, expected {expected}")
            )  # fmt: skip
        if kind == "object" and "properties" in node:
            nested = self.raw_map(F.from_json(raw_value, RAW_MAP), depth + 1)
            self.object(node, nested, value, text[name], path, depth + 1)
        elif kind == "object":
            self.map_values(node, value, path, ok)
        elif kind == "array":
            self.array(node, value, path, ok)
        else:
            self.scalar(node, value, path, ok)

    @staticmethod
    def _inner_tokens(node: dict[str, Any], kind: str, value: Column) -> Column | int:
        """Tokens of a converted value after its key: its first token, plus one per item of
        an array (items are scalars) or two per entry of a map (key and scalar value).
        """
        if kind == "array":
            return 1 + F.size(value)
        if kind == "object" and "properties" not in node:
            return 1 + 2 * F.size(value)
        return 1

    def scalar(self, node: dict[str, Any], value: Column, path: str, ok: Column) -> None:
        if "enum" in node:
            allowed = [v for v in node["enum"] if v is not None]
            self.value_check(
                _error(ok & ~value.isin(allowed), SCHEMA_VIOLATION, path, f"not one of {allowed}")
            )
        if "const" in node:
            self.value_check(
                _error(ok & (value != F.lit(node["const"])), SCHEMA_VIOLATION, path,
                       f"must be {node['const']!r}")
            )  # fmt: skip
        if "minimum" in node:
            self.value_check(
                _error(ok & (value < node["minimum"]), SCHEMA_VIOLATION, path,
                       f"below minimum {node['minimum']}")
            )  # fmt: skip
        if "maximum" in node:
            self.value_check(
                _error(ok & (value > node["maximum"]), SCHEMA_VIOLATION, path,
                       f"above maximum {node['maximum']}")
            )  # fmt: skip
        if "maxLength" in node:
            self.value_check(
                _error(ok & (F.length(value) > node["maxLength"]), SCHEMA_VIOLATION, path,
                       f"longer than {node['maxLength']} characters")
            )  # fmt: skip
        if "pattern" in node and node.get("format") != "date-time":
            self.value_check(
                _error(ok & ~value.rlike(node["pattern"]), SCHEMA_VIOLATION, path,
                       "does not match the required format")
            )  # fmt: skip

    def array(self, node: dict[str, Any], value: Column, path: str, ok: Column) -> None:
        items = node.get("items", {})
        if "enum" in items:
            bad = F.exists(value, lambda x: ~x.isin(items["enum"]))
            self.value_check(
                _error(ok & bad, SCHEMA_VIOLATION, path, f"items must be in {items['enum']}")
            )
        if node.get("uniqueItems"):
            self.value_check(
                _error(ok & (F.size(F.array_distinct(value)) != F.size(value)), SCHEMA_VIOLATION,
                       path, "items are not unique")
            )  # fmt: skip

    def map_values(self, node: dict[str, Any], value: Column, path: str, ok: Column) -> None:
        names = node.get("propertyNames", {})
        if "pattern" in names:
            pattern = names["pattern"]
            self.value_check(
                _error(ok & F.exists(F.map_keys(value), lambda k: ~k.rlike(pattern)),
                       SCHEMA_VIOLATION, path, "key does not match the required format")
            )  # fmt: skip
        minimum = node.get("additionalProperties", {}).get("minimum")
        if minimum is not None:
            self.value_check(
                _error(ok & F.exists(F.map_values(value), lambda v: v < minimum),
                       SCHEMA_VIOLATION, path, f"value below minimum {minimum}")
            )  # fmt: skip


def _date_time_paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, child in node.get("properties", {}).items():
        if child.get("format") == "date-time":
            out.append(prefix + name)
        elif "properties" in child:
            out += _date_time_paths(child, f"{prefix}{name}.")
    return out


def _typed_from_text(text: Column) -> Column:
    """The event struct from its parse with date-times as text (one parse serves both)."""
    typed = text
    for path in _date_time_paths(event_schema("1")):
        value = text
        for part in path.split("."):
            value = value.getField(part)
        typed = typed.withField(path, value.try_cast("timestamp"))
    return typed


def parsed_event(value: Column) -> Column:
    """The typed event struct (fields that did not convert are null)."""
    return _typed_from_text(_parsed_text(value))


def _parsed_text(value: Column) -> Column:
    return F.from_json(value, spark_schema_from_json_schema(timestamps_as_text=True))


@dataclass(frozen=True)
class _Plan:
    """The contract's expressions over `_json` (the record's text) and `_text` (its parse)."""

    event: Column
    fast: Column
    raw_maps: tuple[tuple[str, Column, int], ...]
    errors: Column


@per_spark_context
def _plan() -> _Plan:
    """The expressions, built once per Spark context (Python work per check)."""
    schema = event_schema("1")
    json_text, text = F.col("_json"), F.col("_text")
    event = _typed_from_text(text)
    walker = _Walker(value=json_text)
    raw = walker.raw_map(F.from_json(json_text, RAW_MAP), 0)
    walker.object(schema, raw, F.col("event"), text, "$")
    # Every token of the text is accounted for by a declared field that converted: no
    # extra key, no forbidden null, no mistyped value anywhere (the root's `{` is one).
    accounted = _token_count(json_text) == 1 + _sum(walker.tokens)
    fast = F.coalesce(text.isNotNull() & _all(walker.fast) & accounted, F.lit(False))
    version = raw["schema_version"]
    known = list(SUPPORTED_EVENT_VERSIONS)
    errors = (
        F.when(F.col("_fast"), F.array().cast("array<string>"))
        .when(raw.isNull(), F.array(F.lit(f"{INVALID_JSON}|$: not a JSON object")))
        .when(
            version.isNotNull() & ~version.isin(known),
            F.array(
                F.lit(
                    f"{UNKNOWN_SCHEMA_VERSION}|$.schema_version: not supported "
                    f"(supported: {', '.join(known)})"
                )
            ),
        )
        .otherwise(F.filter(F.array(*walker.checks), lambda e: e.isNotNull()))
    )
    return _Plan(event=event, fast=fast, raw_maps=tuple(walker.raw_maps), errors=errors)


def with_contract_errors(df: DataFrame, value: Column, *, fast_path: bool = True) -> DataFrame:
    """`df` plus `event` (the typed struct) and `errors`: an array of
    '<reason>|<path>: <message>' for the JSON text `value`, [] when valid.

    Reasons: invalid_json (not a JSON object), unknown_schema_version, schema_violation.
    Only the version check applies when the version is unknown (the rest of the contract
    is that version's). The text is parsed once; the detailed path's maps are parsed only
    for the events the fast path did not accept, one projection per nesting depth.
    `fast_path=False` sends every event through the detailed path (for tests: both paths
    must give the same errors).
    """
    plan = _plan()
    columns = df.columns
    staged = df.select(
        "*",
        value.alias("_json"),
        _parsed_text(value).alias("_text"),
    )
    staged = staged.select("*", plan.event.alias("event"))
    staged = staged.select("*", (plan.fast if fast_path else F.lit(False)).alias("_fast"))
    for depth in range(max(d for _, _, d in plan.raw_maps) + 1):
        staged = staged.select(
            "*", *[F.when(~F.col("_fast"), e).alias(n) for n, e, d in plan.raw_maps if d == depth]
        )
    return staged.select(*columns, "event", plan.errors.alias("errors"))


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
