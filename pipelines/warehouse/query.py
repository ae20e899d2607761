"""Ad-hoc read-only SQL against the warehouse, printed as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, StatementError

from pipelines.errors import SafewatchError
from pipelines.report.text import format_table

Format = Literal["table", "csv", "json"]


class QueryError(SafewatchError):
    """The warehouse refused the statement; the message is the database's own."""


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    truncated: bool  # more rows than max_rows existed


def run_query(engine: Engine, sql: str, *, max_rows: int | None = None) -> QueryResult:
    """Run one SQL statement in a read-only transaction that is always rolled back.

    PostgreSQL: `SET TRANSACTION READ ONLY`; SQLite: `PRAGMA query_only`. A statement that
    tries to write fails with the database's error, as does invalid SQL (QueryError).
    """
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        msg = "the query is empty"
        raise QueryError(msg)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        try:
            if sqlite:
                conn.exec_driver_sql("PRAGMA query_only = ON")
            else:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                result = conn.execute(text(statement).execution_options(no_parameters=True))
                if not result.returns_rows:
                    return QueryResult((), (), False)
                columns = tuple(result.keys())
                fetched = result.fetchmany(max_rows + 1) if max_rows else result.fetchall()
            finally:
                conn.rollback()
                if sqlite:
                    conn.exec_driver_sql("PRAGMA query_only = OFF")
        except (DBAPIError, StatementError) as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            msg = f"the warehouse refused the query: {detail}"
            raise QueryError(msg) from exc
    rows = tuple(tuple(r) for r in fetched)
    truncated = bool(max_rows) and len(rows) > (max_rows or 0)
    return QueryResult(columns, rows[:max_rows] if max_rows else rows, truncated)


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
