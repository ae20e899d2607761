"""Apply the versioned migrations in schemas/warehouse/migrations, each exactly once."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, select, text
from sqlalchemy.engine import Connection

import schemas.warehouse.migrations as migrations_pkg
from pipelines.warehouse.tables import ANALYST_OBJECTS

_md = MetaData()
schema_migrations = Table(
    "schema_migrations",
    _md,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(300), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    module: ModuleType


def available_migrations() -> list[Migration]:
    """All migrations in the package, ordered by version; versions must be unique."""
    found = []
    for info in pkgutil.iter_modules(migrations_pkg.__path__):
        if not info.name.startswith("m"):
            continue
        module = importlib.import_module(f"{migrations_pkg.__name__}.{info.name}")
        found.append(Migration(module.VERSION, module.DESCRIPTION, module))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        msg = f"duplicate migration versions in {migrations_pkg.__name__}: {versions}"
        raise RuntimeError(msg)
    return found


def applied_versions(engine: Engine) -> set[int]:
    _md.create_all(engine, tables=[schema_migrations])
    with engine.connect() as conn:
        return set(conn.scalars(select(schema_migrations.c.version)))


def migrate(engine: Engine, *, log: Callable[[str], None] | None = None) -> list[int]:
    """Apply pending migrations in order, each in its own transaction; return their versions."""
    done = applied_versions(engine)
    applied = []
    for m in available_migrations():
        if m.version in done:
            continue
        with engine.begin() as conn:
            m.module.upgrade(conn)
            conn.execute(
                schema_migrations.insert().values(
                    version=m.version, description=m.description, applied_at=datetime.now(UTC)
                )
            )
        if log:
            log(f"warehouse: applied migration {m.version:04d} ({m.description})")
        applied.append(m.version)
    if applied and engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            grant_analyst(conn, analyst_roles(conn))
    return applied


def analyst_roles(conn: Connection) -> list[str]:
    """The roles that may read v_segment_window (PostgreSQL): the analyst roles."""
    return list(
        conn.scalars(
            text(
                "SELECT DISTINCT r.rolname FROM pg_class c "
                "CROSS JOIN LATERAL aclexplode(c.relacl) a "
                "JOIN pg_roles r ON r.oid = a.grantee "
                "WHERE c.relname = 'v_segment_window' AND a.privilege_type = 'SELECT' "
                "AND a.grantee <> c.relowner"
            )
        )
    )


def grant_analyst(conn: Connection, roles: Iterable[str]) -> None:
    """Let `roles` SELECT every object of ANALYST_OBJECTS (also the ones a migration added)."""
    quote = conn.dialect.identifier_preparer.quote
    for role in roles:
        for name in ANALYST_OBJECTS:
            conn.execute(text(f"GRANT SELECT ON {quote(name)} TO {quote(role)}"))
