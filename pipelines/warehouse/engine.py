"""Create the SQLAlchemy engine for the configured warehouse URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from pipelines.errors import ConfigError


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite the parent folder is created and WAL mode enabled.

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
            cursor.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True)


def describe(engine: Engine) -> str:
    """The URL without its password, for logs."""
    return engine.url.render_as_string(hide_password=True)
