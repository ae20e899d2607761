"""Apply the versioned migrations in schemas/warehouse/migrations, each exactly once."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, select, text
from sqlalchemy.engine import Connection, make_url

import schemas.warehouse.migrations as migrations_pkg
from pipelines.errors import ConfigError
from pipelines.settings import WarehouseSettings
from pipelines.warehouse.engine import make_engine
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


def open_warehouse(
    settings: WarehouseSettings,
    *,
    reader: bool = False,
    log: Callable[[str], None] | None = None,
) -> Engine:
    """The configured warehouse (setting warehouse.url), migrated to the latest schema.

    A `reader` (a command that only shows what the job stored) never creates one: when the
    URL names an SQLite file that does not exist, it raises ConfigError naming the file and
    the setting, instead of showing an empty warehouse it just made.
    """
    url = settings.url.get_secret_value()
    if reader:
        parsed = make_url(url)
        database = parsed.database or ""
        if (
            parsed.get_backend_name() == "sqlite"
            and database not in ("", ":memory:")
            and not database.startswith("file:")
            and not Path(database).is_file()
        ):
            default = url == WarehouseSettings().url.get_secret_value()
            which = "the default of warehouse.url" if default else "warehouse.url"
            msg = (
                f"no warehouse at {database} ({which}): fill one with `safewatch run` (or see "
                f"one with `safewatch demo`), or point SAFEWATCH_WAREHOUSE__URL at yours"
            )
            raise ConfigError(msg)
    engine = make_engine(url)
    migrate(engine, log=log)
    return engine
