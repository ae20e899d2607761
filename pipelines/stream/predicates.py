"""The catalog's counter predicates, evaluated on Arrow columns.

The catalog's predicates are Spark SQL (one definition, shown in the docs); `SqlPredicate`
evaluates the subset they use on a batch of parsed events (`Columns`), one boolean per
event, and a test checks it against Spark itself. `predicate` compiles each predicate text
once per process. Nothing here does I/O or needs Spark.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'[^']*')|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op>>=|<=|!=|<>|=|>|<|\(|\)|,))"
)
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": np.equal, "!=": np.not_equal, "<>": np.not_equal,
    ">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal,
}  # fmt: skip


class Columns:
    """Leaf columns of a batch of typed events, as numpy arrays (nulls as False, 0 or '')."""

    def __init__(self, events: pa.StructArray) -> None:
        self.events = events
        self.size = len(events)
        self._cache: dict[str, Any] = {}

    def array(self, path: str) -> pa.Array:
        value: pa.Array = self.events
        for part in path.split("."):
            value = pc.struct_field(value, part)
        return value

    def values(self, path: str) -> np.ndarray:
        if path not in self._cache:
            arr = self.array(path)
            if pa.types.is_boolean(arr.type):
                out = pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
            elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
                out = pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
            elif pa.types.is_string(arr.type):
                out = np.asarray(pc.fill_null(arr, "").to_numpy(zero_copy_only=False), dtype=object)
            else:
                out = arr  # lists stay Arrow arrays
            self._cache[path] = out
        return self._cache[path]


class SqlPredicate:
    """A boolean Spark SQL expression of the catalog's subset, evaluated per event on numpy:
    field paths, string and number literals, true/false, AND, OR, NOT, parentheses,
    comparisons, `size(list)` and `array_contains(list, literal)`. A null counts as false,
    as `coalesce(predicate, false)` does in Spark.
    """

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self._tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(sql.rstrip()):
            m = _TOKEN.match(sql, pos)
            if m is None or m.end() == pos:
                msg = f"cannot read predicate {sql!r} at position {pos}"
                raise ValueError(msg)
            kind = m.lastgroup or ""
            self._tokens.append((kind, m.group(kind)))
            pos = m.end()

    def __call__(self, columns: Columns) -> np.ndarray:
        self._pos = 0
        result = self._or(columns)
        if self._pos != len(self._tokens):
            msg = f"unexpected {self._tokens[self._pos][1]!r} in predicate {self.sql!r}"
            raise ValueError(msg)
        return np.broadcast_to(np.asarray(result, dtype=bool), (columns.size,)).copy()

    def _peek(self) -> str:
        if self._pos < len(self._tokens):
            return self._tokens[self._pos][1]
        return ""

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self._pos >= len(self._tokens):
            msg = f"predicate {self.sql!r} ends too early"
            raise ValueError(msg)
        token = self._tokens[self._pos]
        if expected is not None and token[1].upper() != expected:
            msg = f"expected {expected!r}, got {token[1]!r} in predicate {self.sql!r}"
            raise ValueError(msg)
        self._pos += 1
        return token

    def _or(self, c: Columns) -> Any:
        value = self._and(c)
        while self._peek().upper() == "OR":
            self._take()
            value = np.logical_or(value, self._and(c))
        return value

    def _and(self, c: Columns) -> Any:
        value = self._not(c)
        while self._peek().upper() == "AND":
            self._take()
            value = np.logical_and(value, self._not(c))
        return value

    def _not(self, c: Columns) -> Any:
        if self._peek().upper() == "NOT":
            self._take()
            return np.logical_not(self._not(c))
        left = self._atom(c)
        if self._peek() in _COMPARE:
            op = self._take()[1]
            return _COMPARE[op](left, self._atom(c))
        return left

    def _atom(self, c: Columns) -> Any:
        kind, text = self._take()
        if text == "(":
            value = self._or(c)
            self._take(")")
            return value
        if kind == "num":
            return float(text)
        if kind == "str":
            return text[1:-1]
        if kind != "name":
            msg = f"unexpected {text!r} in predicate {self.sql!r}"
            raise ValueError(msg)
        if text.upper() in ("TRUE", "FALSE"):
            return text.upper() == "TRUE"
        if self._peek() == "(":
            return self._function(text.lower(), c)
        return c.values(text)

    def _function(self, name: str, c: Columns) -> Any:
        self._take("(")
        _, path = self._take()
        lists = c.values(path)
        if name == "size":
            self._take(")")
            return pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        if name == "array_contains":
            self._take(",")
            _, literal = self._take()
            self._take(")")
            held = np.zeros(c.size, dtype=bool)
            flat = pc.list_flatten(lists)
            parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
            hits = pc.fill_null(pc.equal(flat, literal.strip("'")), False)
            held[parents[hits.to_numpy(zero_copy_only=False)]] = True
            return held
        msg = f"function {name}() is not supported in predicate {self.sql!r}"
        raise ValueError(msg)


_PREDICATES: dict[str, SqlPredicate] = {}


def predicate(sql: str) -> SqlPredicate:
    """The compiled `sql`, compiled on its first use only."""
    if sql not in _PREDICATES:
        _PREDICATES[sql] = SqlPredicate(sql)
    return _PREDICATES[sql]
