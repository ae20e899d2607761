"""Create the SQLAlchemy engine for the configured warehouse URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from pipelines.errors import ConfigError

# SQLite's page cache per connection, in KiB (SQLite's default is 2 MiB): a backlog batch
# upserts ~40,000 histogram rows into the indexes of a file that grows past 100 MB, and
# with 2 MiB most of those index pages are read again from the file for every batch (the
# upsert of a 50,000-event batch took about twice as long). Pages are taken as they are used.
SQLITE_CACHE_KIB = 64 * 1024


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite the parent folder is created, WAL mode enabled and
    the page cache set to SQLITE_CACHE_KIB.

    Raises ConfigError for a URL SQLAlchemy cannot parse (the URL itself is not echoed,
    since it may hold a password).
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        msg = "warehouse URL is not a valid SQLAlchemy URL (setting SAFEWATCH_WAREHOUSE__URL)"
        raise ConfigError(msg) from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cursor.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True)


def sqlite_file(url: URL) -> Path | None:
    """The file an SQLite URL names; None for another database, an in-memory one or a
    `file:` URI (whose options SQLite reads itself).
    """
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if database.startswith("file:") else Path(database)


def describe(engine: Engine) -> str:
    """The URL without its password, for logs."""
    return engine.url.render_as_string(hide_password=True)
