"""Plain-text tables for the terminal (pure: rows in, string out)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pipelines.metrics.stats import wilson_interval
from pipelines.warehouse.query import Format, QueryResult


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns, right-aligned numbers, a rule under the header."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) if rows else False
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def bar(value: float, scale: float, width: int = 30) -> str:
    """A bar of '#' proportional to value/scale, at most `width` long."""
    if scale <= 0:
        return ""
    return "#" * max(0, min(width, round(width * value / scale)))


def rate_text(numerator: int, denominator: int, digits: int = 2) -> str:
    """'11.00% [7.40%, 16.10%]': a rate with its Wilson 95 % interval; '-' without trials."""
    if denominator == 0:
        return "-"
    lo, hi = wilson_interval(numerator, denominator)
    value = numerator / denominator
    return f"{percent(value, digits)} [{percent(lo, digits)}, {percent(hi, digits)}]"


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly value: ISO 8601 times, floats for decimals, no raw bytes."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    return value


def format_result(result: QueryResult, fmt: Format) -> str:
    """The rows as an aligned text table, CSV (with header) or a JSON array of objects."""
    rows: Sequence[Sequence[Any]] = [[_plain(v) for v in row] for row in result.rows]
    if fmt == "json":
        return json.dumps([dict(zip(result.columns, r, strict=True)) for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    return format_table(result.columns, rows)
