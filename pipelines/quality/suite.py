"""The data-quality suite of `interaction_event`, derived from its JSON Schema, and the flat frame.

The suite is kept in the repo as data (`schemas/quality/interaction_event_v1.suite.json`) so
that it can be reviewed and diffed; `suite_from_json_schema` is the one function that produces
it, and a unit test checks that the committed file equals its output for the current schema.
Regenerate the file after a schema change with `python -m pipelines.quality.suite`.

Both the suite and `flatten_events` see an event as one row of leaf columns, named by the
leaf's path joined with "__" (`request.latency_ms` -> `request__latency_ms`). Arrays stay one
column of lists; maps (objects with only `additionalProperties`, i.e. `privacy.entity_counts`)
are left out, since their keys are data, not columns.

Mapping from the schema, per leaf, in schema order:

- required at every level and not nullable -> `expect_column_values_to_not_be_null`;
- `enum` or `const` (scalar) -> `expect_column_values_to_be_in_set` (null excluded: GX skips
  nulls in this check, and a null is governed by the not-null expectation);
- `pattern` -> `expect_column_values_to_match_regex`, except on `format: date-time` strings;
- `minimum` / `maximum` -> `expect_column_values_to_be_between`;
- `minLength` / `maxLength` -> `expect_column_value_lengths_to_be_between`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.files import write_atomically
from schemas import ROOT as SCHEMAS_ROOT
from schemas import event_schema

__all__ = [
    "SUITE_PATH",
    "Leaf",
    "flatten_events",
    "leaf_columns",
    "load_suite",
    "render_suite",
    "suite_from_json_schema",
    "write_suite",
]

SUITE_PATH = SCHEMAS_ROOT / "quality" / "interaction_event_v1.suite.json"
SEPARATOR = "__"
_GENERATOR = "pipelines.quality.suite.suite_from_json_schema"


@dataclass(frozen=True)
class Leaf:
    """One leaf of the event: its path, its JSON Schema node, and whether it must be non-null."""

    path: tuple[str, ...]
    node: dict[str, Any]
    required: bool

    @property
    def column(self) -> str:
        return SEPARATOR.join(self.path)

    @property
    def json_path(self) -> str:
        return ".".join(self.path)


def _kinds(node: dict[str, Any]) -> set[str]:
    kind = node.get("type")
    if kind is None:
        return set()
    return {kind} if isinstance(kind, str) else set(kind)


def _leaves(node: dict[str, Any], prefix: tuple[str, ...], required: bool) -> Iterator[Leaf]:
    names = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        path = (*prefix, name)
        child_required = required and name in names and "null" not in _kinds(child)
        if "object" in _kinds(child):
            # Nested records become columns; maps (only additionalProperties) have data as
            # keys, so they have no fixed columns and are left out.
            if "properties" in child:
                yield from _leaves(child, path, child_required)
            continue
        yield Leaf(path, child, child_required)


def leaf_columns(schema: dict[str, Any]) -> list[Leaf]:
    """The leaves of `schema` (an object schema with `properties`), in schema order."""
    if "properties" not in schema:
        msg = "the event schema must be an object with properties"
        raise ValueError(msg)
    return list(_leaves(schema, (), True))


def _expectation(kind: str, leaf: Leaf, keywords: list[str], **kwargs: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "kwargs": {"column": leaf.column, **kwargs},
        "meta": {"json_path": leaf.json_path, "schema_keywords": keywords},
    }


def _leaf_expectations(leaf: Leaf) -> Iterator[dict[str, Any]]:
    node = leaf.node
    if leaf.required:
        yield _expectation("expect_column_values_to_not_be_null", leaf, ["required"])
    if "const" in node:
        yield _expectation(
            "expect_column_values_to_be_in_set", leaf, ["const"], value_set=[node["const"]]
        )
    if "enum" in node:
        values = [value for value in node["enum"] if value is not None]
        yield _expectation("expect_column_values_to_be_in_set", leaf, ["enum"], value_set=values)
    # A date-time leaf is a timestamp once Spark has parsed it with the derived schema, and GX
    # would match the regex against its str(); a string that failed to parse is null, which
    # the not-null expectation catches.
    if "pattern" in node and node.get("format") != "date-time":
        yield _expectation(
            "expect_column_values_to_match_regex", leaf, ["pattern"], regex=node["pattern"]
        )
    bounds = {k: node[k] for k in ("minimum", "maximum") if k in node}
    if bounds:
        yield _expectation(
            "expect_column_values_to_be_between",
            leaf,
            list(bounds),
            **{("min_value" if k == "minimum" else "max_value"): v for k, v in bounds.items()},
        )
    lengths = {k: node[k] for k in ("minLength", "maxLength") if k in node}
    if lengths:
        yield _expectation(
            "expect_column_value_lengths_to_be_between",
            leaf,
            list(lengths),
            **{("min_value" if k == "minLength" else "max_value"): v for k, v in lengths.items()},
        )


def suite_from_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The GX expectation suite (as a JSON-ready dict) for flat frames of events of `schema`.

    Pure and deterministic: the same schema gives an equal dict, in schema order, with no ids,
    timestamps or GX version in it, so the committed file changes only when the schema does.
    The suite name is `<title with non-alphanumerics as "_">`, e.g. `interaction_event_v1`.
    Raises ValueError when `schema` is not an object schema with properties.
    """
    leaves = leaf_columns(schema)
    title = str(schema.get("title", "events"))
    name = "".join(ch if ch.isalnum() else "_" for ch in title)
    return {
        "name": name,
        "meta": {
            "generated_by": _GENERATOR,
            "schema_id": schema.get("$id"),
            "columns": "leaf paths joined with '__'; maps left out; arrays as lists",
        },
        "expectations": [e for leaf in leaves for e in _leaf_expectations(leaf)],
    }


def render_suite(suite: dict[str, Any]) -> str:
    """The suite as the text kept in the repo: 2-space indented JSON, key order kept, newline."""
    return json.dumps(suite, indent=2, ensure_ascii=False) + "\n"


def write_suite(suite: dict[str, Any], path: Path = SUITE_PATH) -> None:
    """Write `render_suite(suite)` to `path` atomically (temp file in the same folder, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, render_suite(suite))


def load_suite(path: Path = SUITE_PATH) -> dict[str, Any]:
    """The committed suite (by default that of interaction_event v1), as a dict."""
    with open(path, encoding="utf-8") as fh:
        suite: dict[str, Any] = json.load(fh)
    return suite


def _value(event: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def flatten_events(
    events: Iterable[dict[str, Any]], schema: dict[str, Any] | None = None
) -> pd.DataFrame:
    """One row per event, one column per leaf of `schema` (default: interaction_event v1).

    Every leaf column is present, in schema order, even when no event has it; a value that is
    missing at any level of its path is None. Values are not converted (arrays stay lists,
    `event_time` stays a string) and keys outside the schema are dropped. Pure: the events
    are not modified.
    """
    leaves = leaf_columns(schema if schema is not None else event_schema("1"))
    columns: dict[str, list[Any]] = {leaf.column: [] for leaf in leaves}
    paths = [(leaf.column, leaf.path) for leaf in leaves]
    for event in events:
        for column, path in paths:
            columns[column].append(_value(event, path))
    return pd.DataFrame(columns)


if __name__ == "__main__":
    write_suite(suite_from_json_schema(event_schema("1")))
    print(f"wrote {SUITE_PATH}")
