"""Many rows in one DBAPI executemany: the warehouse's bulk writes (histograms, drift)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert


def execute_many(
    conn: Connection,
    stmt: Insert,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Run `stmt` (an INSERT into `table`, with or without ON CONFLICT) once per tuple of
    `columns` values, in one DBAPI executemany.

    SQLAlchemy's own executemany makes a dict of every row and processes each of its values,
    which costs more than the database's work for tens of thousands of rows. Here only the
    columns whose type the dialect processes (DateTime on SQLite) are, exactly as SQLAlchemy
    would; such columns hold windows and times, so each distinct value is processed once.
    """
    if not rows:
        return
    dialect = conn.dialect
    processors = [
        (i, p)
        for i, c in enumerate(columns)
        if (p := table.c[c].type.dialect_impl(dialect).bind_processor(dialect)) is not None
    ]
    processed: dict[tuple[int, Any], Any] = {}

    def bind(row: tuple[Any, ...]) -> list[Any]:
        values = list(row)
        for i, p in processors:
            key = (i, values[i])
            if key not in processed:
                processed[key] = p(values[i])
            values[i] = processed[key]
        return values

    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    params: list[Any]
    if compiled.positional:
        order = [columns.index(name) for name in compiled.positiontup or ()]
        if order == list(range(len(columns))):
            params = [tuple(bind(row)) for row in rows] if processors else list(rows)
        else:
            params = [tuple(v[i] for i in order) for v in map(bind, rows)]
    else:
        params = [dict(zip(columns, bind(row), strict=True)) for row in rows]
    conn.exec_driver_sql(compiled.string, params)
