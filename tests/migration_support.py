"""Warehouses as `safewatch` migrated them before Alembic, and a description of a warehouse's
schema to compare two of them (SQLite and PostgreSQL).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, event, text

from pipelines.warehouse.migrate import (
    VERSION_TABLE,
    analyst_roles,
    applied_versions,
    available_migrations,
    grant_analyst,
    schema_migrations,
)


def legacy_migrate(engine: Engine, *, up_to: int | None = None) -> list[int]:
    """The runner of the release before Alembic, as it was: every migration that
    schema_migrations does not list (up to `up_to`), in order, each in one transaction with
    its row; then, on PostgreSQL, the analyst roles granted the analyst objects again.
    """
    done = applied_versions(engine)
    applied = []
    for m in available_migrations():
        if m.version in done or (up_to is not None and m.version > up_to):
            continue
        with engine.begin() as conn:
            m.module.upgrade(conn)
            conn.execute(
                schema_migrations.insert().values(
                    version=m.version, description=m.description, applied_at=datetime.now(UTC)
                )
            )
        applied.append(m.version)
    if applied and engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            grant_analyst(conn, analyst_roles(conn))
    return applied


def schema_of(engine: Engine) -> dict[str, Any]:
    """Every table, column, constraint, index and view of the warehouse as its database
    describes them (SQLite: the statements in sqlite_master; PostgreSQL: the catalog, view
    definitions and options), without Alembic's version table.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(
                text(
                    "SELECT type, name, sql FROM sqlite_master WHERE tbl_name <> :v "
                    "ORDER BY type, name"
                ),
                {"v": VERSION_TABLE},
            ).all()
            return {"sqlite_master": [tuple(r) for r in rows]}
        queries = {
            "columns": (
                "SELECT table_name, ordinal_position, column_name, data_type, "
                "character_maximum_length, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name <> :v ORDER BY table_name, ordinal_position"
            ),
            "constraints": (
                "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
                "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE n.nspname = 'public' AND c.conrelid::regclass::text <> :v ORDER BY 1, 2"
            ),
            "indexes": (
                "SELECT tablename, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = 'public' AND tablename <> :v ORDER BY 1, 2"
            ),
            "views": (
                "SELECT c.relname, pg_get_viewdef(c.oid), c.reloptions FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'v' ORDER BY 1"
            ),
        }
        return {
            name: [tuple(r) for r in conn.execute(text(sql), {"v": VERSION_TABLE}).all()]
            for name, sql in queries.items()
        }


_CHANGES = re.compile(r"^\s*(CREATE|ALTER|DROP|INSERT|UPDATE|DELETE|GRANT|REVOKE)\b", re.I)


@contextmanager
def statements_that_change(engine: Engine) -> Iterator[list[str]]:
    """The statements run on `engine` meanwhile that create, change or fill anything."""
    seen: list[str] = []

    def before(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if _CHANGES.match(statement):
            seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
