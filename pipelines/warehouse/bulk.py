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
    # Column by column: zip and list comprehensions run in C, a loop per row would not.
    values: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for i, name in enumerate(columns):
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            values[i] = _processed(values[i], process)
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    params: list[Any]
    if compiled.positional:
        order = [columns.index(name) for name in compiled.positiontup or ()]
        params = list(zip(*(values[i] for i in order), strict=True))
    else:
        params = [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
    conn.exec_driver_sql(compiled.string, params)


def _processed(values: Sequence[Any], process: Any) -> list[Any]:
    """`process` applied to each value, once per distinct value (windows and times repeat)."""
    done: dict[Any, Any] = {}
    out = []
    for v in values:
        if v not in done:
            done[v] = process(v)
        out.append(done[v])
    return out
