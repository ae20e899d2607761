"""Apply the versioned migrations in schemas/warehouse/migrations, each exactly once, with Alembic.

Each migration is an Alembic revision named by its number ("0001", "0002", ...), in one
line. `safewatch` applies the pending ones at start (`migrate`, `open_warehouse`); platform
teams can run `alembic -c pipelines/warehouse/alembic/alembic.ini upgrade head` instead.
Both go through the same Alembic environment (`run_env`), so both record a migration the
same way: Alembic's `alembic_version` holds the revision the warehouse is at, and
`schema_migrations` keeps a row per migration applied (version, description, time), written
in the migration's transaction as before Alembic was used.

A warehouse migrated before then has `schema_migrations` only (versions 1 to N): on first
contact it is stamped at revision N, and no migration runs again.
"""

from __future__ import annotations

import importlib
import logging
import logging.config
import pkgutil
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError

import schemas.warehouse.migrations as migrations_pkg
from pipelines.errors import ConfigError, SafewatchError
from pipelines.settings import Settings, WarehouseSettings
from pipelines.warehouse.engine import describe, make_engine, sqlite_file
from pipelines.warehouse.tables import ANALYST_OBJECTS

if TYPE_CHECKING:
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationContext, MigrationInfo

# The Alembic configuration of the warehouse (`alembic -c <this file> upgrade head`).
ALEMBIC_INI = Path(__file__).resolve().with_name("alembic") / "alembic.ini"
# Alembic's table of the revision a warehouse is at (one row, `version_num`).
VERSION_TABLE = "alembic_version"

_md = MetaData()
schema_migrations = Table(
    "schema_migrations",
    _md,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(300), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)


class MigrationError(SafewatchError):
    """The migrations, or the warehouse's record of them, are not in a state to migrate from."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    module: ModuleType

    @property
    def revision(self) -> str:
        """The Alembic revision id: the version in four digits ("0001")."""
        return revision_id(self.version)


def revision_id(version: int) -> str:
    return f"{version:04d}"


def available_migrations() -> list[Migration]:
    """All migrations in the package, ordered by version.

    Raises MigrationError unless their revisions are "0001", "0002", ... with no gap, each
    naming the one before it as `down_revision` (None for the first): one line, no branch.
    """
    modules = []
    for info in pkgutil.iter_modules(migrations_pkg.__path__):
        module = importlib.import_module(f"{migrations_pkg.__name__}.{info.name}")
        revision = getattr(module, "revision", None)
        if not isinstance(revision, str):
            msg = f"{module.__name__} has no `revision` (a string such as '0001')"
            raise MigrationError(msg)
        modules.append((revision, module))
    modules.sort(key=lambda found: found[0])
    found = []
    previous = None
    for version, (revision, module) in enumerate(modules, start=1):
        down = getattr(module, "down_revision", None)
        if revision != revision_id(version) or down != previous:
            msg = (
                f"{module.__name__}: revision {revision!r}, down_revision {down!r}; expected "
                f"{revision_id(version)!r} after {previous!r}: migrations are revisions "
                f"'0001', '0002', ... each naming the one before it as down_revision"
            )
            raise MigrationError(msg)
        found.append(Migration(version, module.DESCRIPTION, module))
        previous = revision
    return found


def applied_versions(engine: Engine) -> set[int]:
    """The versions schema_migrations lists (the table is created when missing)."""
    _md.create_all(engine, tables=[schema_migrations])
    with engine.connect() as conn:
        return set(conn.scalars(select(schema_migrations.c.version)))


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """The revisions Alembic's version table holds: none when there is no such table."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return ()
    return tuple(conn.scalars(text(f"SELECT version_num FROM {VERSION_TABLE}")))


def migrate(engine: Engine, *, log: Callable[[str], None] | None = None) -> list[int]:
    """Apply pending migrations in order, each in its own transaction; return their versions.

    Each one is logged once committed ("warehouse: applied migration 0001 (...)"). On
    PostgreSQL the analyst roles are granted the analyst objects again after any was applied.
    A warehouse at the latest revision is recognised without loading Alembic, so a command
    that only reads starts as fast as before. Raises MigrationError for a warehouse whose
    record this release cannot migrate from (see `run_env`).
    """
    known = [m.revision for m in available_migrations()]
    head = known[-1]
    with engine.connect() as conn:
        current = current_revisions(conn)
    if current == (head,):
        return []
    newer = sorted(r for r in current if r not in known)
    if newer:
        msg = (
            f"the warehouse {describe(engine)} is at schema revision {', '.join(newer)}, "
            f"newer than this release knows (up to {head}): a newer Safewatch migrated it. "
            "Run that release (or a newer one) against it, or point warehouse.url elsewhere"
        )
        raise MigrationError(msg)
    applied: list[int] = []
    with _alembic_logs_quiet():
        from alembic import command
        from alembic.config import Config

        config = Config(ALEMBIC_INI)
        config.attributes.update(engine=engine, log=log, applied=applied)
        command.upgrade(config, "head")
    return applied


@contextmanager
def _alembic_logs_quiet() -> Iterator[None]:
    """Alembic logs at INFO when imported ("setup plugin ...") and at every step ("Context
    impl SQLiteImpl.", "Running upgrade ..."): wherever logging is set up, they would add
    noise to `log`'s lines.
    """
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_env(context: EnvironmentContext) -> None:
    """The Alembic environment (pipelines/warehouse/alembic/env.py) of both ways to migrate.

    From `migrate`, `context.config.attributes` holds the engine, the log callable and the
    list to append each applied version to. From the `alembic` command it holds nothing: the
    URL comes from the Safewatch settings (warehouse.url), Alembic's own log lines from the
    logging sections of alembic.ini, and a Safewatch error ends the command with one line.
    Migrations read the database (migration 6 reads the views it recreates): there is no
    offline (`--sql`) mode.
    """
    from alembic.util import CommandError

    if context.is_offline_mode():
        msg = "the warehouse migrations run against the database only: no --sql mode"
        raise CommandError(msg)
    config = context.config
    engine = config.attributes.get("engine")
    if engine is not None:
        _run(context, engine, config.attributes.get("log"), config.attributes.get("applied", []))
        return
    if config.config_file_name is not None:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    try:
        engine = make_engine(Settings.load().warehouse.url.get_secret_value())
    except SafewatchError as exc:
        raise CommandError(str(exc)) from None
    try:
        try:
            engine.connect().close()
        except OperationalError as exc:
            reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            msg = (
                f"cannot connect to the warehouse {describe(engine)} (setting warehouse.url, "
                f"SAFEWATCH_WAREHOUSE__URL): {reason}"
            )
            raise CommandError(msg) from None
        try:
            _run(context, engine, logging.getLogger("alembic.env").info, [])
        except SafewatchError as exc:
            raise CommandError(str(exc)) from None
    finally:
        engine.dispose()


def _run(
    context: EnvironmentContext,
    engine: Engine,
    log: Callable[[str], None] | None,
    applied: list[int],
) -> None:
    """Stamp a warehouse migrated before Alembic, run Alembic's command, record what it
    applied in schema_migrations and `applied`, then grant the analyst roles (PostgreSQL).
    """
    migrations = {m.revision: m for m in available_migrations()}
    committed: list[Migration] = []  # applied, waiting for their transaction's end

    def record(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        if step.is_stamp or not step.is_upgrade or step.up_revision_id is None:
            return
        m = migrations[step.up_revision_id]
        assert ctx.connection is not None
        ctx.connection.execute(
            schema_migrations.insert().values(
                version=m.version, description=m.description, applied_at=datetime.now(UTC)
            )
        )
        committed.append(m)

    def announce(*_args: Any) -> None:
        # Called when a transaction begins, and at the end: the migrations recorded before
        # it are committed (a failed one raised instead).
        for m in committed:
            applied.append(m.version)
            if log:
                log(f"warehouse: applied migration {m.revision} ({m.description})")
        committed.clear()

    with engine.connect() as conn:
        context.configure(connection=conn, transaction_per_migration=True, on_version_apply=record)
        if _names_a_revision(context):
            with conn.begin():
                stamped = _stamp_if_migrated_before_alembic(conn, context, len(migrations))
            if stamped and log:
                log(
                    f"warehouse: migrated before Alembic (schema_migrations lists 0001 to "
                    f"{stamped}): stamped Alembic revision {stamped}"
                )
        event.listen(conn, "begin", announce)
        context.run_migrations(connection=conn)
        announce()
        if applied and conn.dialect.name == "postgresql":
            with conn.begin():
                grant_analyst(conn, analyst_roles(conn))


def _names_a_revision(context: EnvironmentContext) -> bool:
    """Whether the command moves the warehouse (upgrade, stamp, downgrade), not only reads
    it (`alembic current`).
    """
    try:
        return context.get_revision_argument() is not None
    except KeyError:  # Alembic's commands that read set no destination at all
        return False


def _stamp_if_migrated_before_alembic(
    conn: Connection, context: EnvironmentContext, known: int
) -> str | None:
    """When the warehouse has no Alembic version but schema_migrations lists versions 1 to N
    (as `safewatch` left it before Alembic), record revision N for Alembic and return it.

    Raises MigrationError when the versions listed are not 1 to N with N at most `known`:
    no revision stands for such a state.
    """
    _md.create_all(conn, tables=[schema_migrations])
    if inspect(conn).has_table(VERSION_TABLE):
        return None
    versions = sorted(conn.scalars(select(schema_migrations.c.version)))
    if not versions:
        return None
    if versions != list(range(1, len(versions) + 1)) or versions[-1] > known:
        msg = (
            f"the warehouse's schema_migrations lists versions {_spans(versions)}, but a "
            f"warehouse migrated before Alembic lists 1 to N in a row, N at most {known} for "
            f"this release of Safewatch: apply or remove what differs by hand (docs/"
            f'warehouse.md, "Migrations"), or restore the warehouse from a backup'
        )
        raise MigrationError(msg)
    revision = revision_id(versions[-1])
    context.get_context().stamp(context.script, revision)
    return revision


def _spans(versions: list[int]) -> str:
    """1, 2, 3, 5, 6 -> "1-3, 5-6"."""
    spans: list[list[int]] = []
    for v in versions:
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


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

    A `reader` (a command that shows or acts on what the job stored: show, report, alerts
    status, ack and deliver) never creates one: when the URL names an SQLite file that does
    not exist, it raises ConfigError naming the file and the setting, instead of working on
    an empty warehouse it just made.
    """
    url = settings.url.get_secret_value()
    if reader:
        path = sqlite_file(make_url(url))
        if path is not None and not path.is_file():
            default = url == WarehouseSettings().url.get_secret_value()
            which = "the default of warehouse.url" if default else "warehouse.url"
            msg = (
                f"no warehouse at {path} ({which}): fill one with `safewatch run` (or see "
                f"one with `safewatch demo`), or point SAFEWATCH_WAREHOUSE__URL at yours"
            )
            raise ConfigError(msg)
    engine = make_engine(url)
    migrate(engine, log=log)
    return engine
