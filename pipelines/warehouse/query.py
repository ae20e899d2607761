"""Ad-hoc read-only SQL against the warehouse, printed as a table, CSV or JSON.

`safewatch query` runs exactly one SELECT-like statement and cannot change the warehouse,
whatever the SQL says:

- its first keyword must be SELECT, WITH, VALUES or TABLE (PRAGMA too on SQLite), so a
  transaction-control or write statement (COMMIT, BEGIN, SET, DELETE, ATTACH...) is refused
  before anything is sent;
- PostgreSQL: a dedicated connection opened with `default_transaction_read_only=on` and a
  `statement_timeout`, closed afterwards; the statement runs as a server-side cursor
  (`DECLARE ... CURSOR FOR <sql>`, extended protocol), so the server itself refuses a second
  statement and anything that is not a query, and only the rows printed are fetched. A login
  that can write or signal other sessions is refused (`_login_rights`), and calls of the
  functions in `PG_DENIED_FUNCTIONS` are refused for every login;
- SQLite: the file is opened read-only (`mode=ro`; a missing file is an error, never
  created), no database can be attached, an authorizer allows reading only (and the
  PRAGMAs in `SQLITE_PRAGMAS`), and a progress handler cancels it after the time limit.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import URL, Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from pipelines.errors import SafewatchError
from pipelines.warehouse.engine import make_engine, sqlite_file

Format = Literal["table", "csv", "json"]

QUERY_KEYWORDS = ("SELECT", "WITH", "VALUES", "TABLE")
SQLITE_KEYWORDS = (*QUERY_KEYWORDS, "PRAGMA")

# Read-only schema introspection; every other PRAGMA (query_only, writable_schema, ...) is denied.
SQLITE_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
     "foreign_key_list"}
)  # fmt: skip
SQLITE_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})

# Functions a read-only transaction still runs that reach beyond the query: end or cancel
# other sessions, take locks the job may wait on, sleep, change settings, run another query
# from a string (which would hide any name here), touch server files or notify listeners.
PG_DENIED_FUNCTIONS = re.compile(
    r"\b(pg_terminate_backend|pg_cancel_backend|pg_(try_)?advisory\w*|pg_sleep\w*|set_config"
    r"|query_to_xml\w*|cursor_to_xml\w*|ts_stat|dblink\w*|lo_\w+|pg_read_\w*file|pg_ls_\w+"
    r"|pg_file_\w+|pg_reload_conf|pg_rotate_logfile\w*|pg_notify|pg_stat_reset\w*"
    r"|pg_switch_wal|pg_promote|pg_log_backend_memory_contexts|pg_create_\w+)\b",
    re.IGNORECASE,
)
# A Unicode-escaped identifier (U&"...") could spell any of those names unseen.
_PG_UNICODE_IDENTIFIER = re.compile(r'\bu&"', re.IGNORECASE)

# Predefined roles that reach beyond reading: signal any session, server files and programs.
_PG_POWER_ROLES = (
    "pg_signal_backend", "pg_read_server_files", "pg_write_server_files",
    "pg_execute_server_program", "pg_write_all_data", "pg_checkpoint", "pg_maintain",
)  # fmt: skip

_CURSOR = "safewatch_query"


class QueryError(SafewatchError):
    """The statement was refused (by Safewatch or by the warehouse) or failed; says why."""


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    truncated: bool  # more rows than max_rows existed


def first_keyword(sql: str) -> str:
    """The first keyword of `sql`, upper-cased, after whitespace, comments and `(`.

    Block comments nest as in PostgreSQL, so `/* /* */ SELECT */ COMMIT` yields COMMIT.
    An unterminated comment or a statement without a leading word yields "".
    """
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace() or sql[i] == "(":
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            if depth:
                return ""
        else:
            break
    match = re.match(r"[A-Za-z_]+", sql[i:])
    return match.group(0).upper() if match else ""


def check_statement(sql: str, dialect: str) -> str:
    """The statement to run (trailing `;` removed), or QueryError saying why it is refused.

    Pure: the first keyword must start a query; on PostgreSQL no function of
    PG_DENIED_FUNCTIONS may be named and no Unicode-escaped identifier used.
    """
    statement = sql.strip().rstrip(";").strip()
    if not statement:
        msg = "the query is empty"
        raise QueryError(msg)
    allowed = SQLITE_KEYWORDS if dialect == "sqlite" else QUERY_KEYWORDS
    keyword = first_keyword(statement)
    if keyword not in allowed:
        msg = (
            f"safewatch query runs one read-only query starting with {', '.join(allowed)}; "
            f"{keyword or 'this statement'} is refused (write, transaction and session "
            "statements are not allowed)"
        )
        raise QueryError(msg)
    if dialect == "postgresql":
        denied = PG_DENIED_FUNCTIONS.search(statement)
        if denied:
            msg = (
                f"safewatch query refuses {denied.group(0)}(): it acts beyond reading the "
                "warehouse (other sessions, locks, settings, server files or a query inside "
                "a string)"
            )
            raise QueryError(msg)
        if _PG_UNICODE_IDENTIFIER.search(statement):
            msg = 'safewatch query refuses Unicode-escaped identifiers (U&"..."): write the name'
            raise QueryError(msg)
    return statement


def sqlite_database(url: URL) -> Path:
    """The SQLite file of `url`; QueryError when it does not exist (nothing is created)."""
    path = sqlite_file(url)
    if path is None:
        msg = (
            "safewatch query needs an SQLite warehouse file: set SAFEWATCH_WAREHOUSE__URL "
            "to sqlite:///path/to/warehouse.db"
        )
        raise QueryError(msg)
    if not path.is_file():
        msg = (
            f"no warehouse database at {path}: check SAFEWATCH_WAREHOUSE__URL, or create it "
            "with `safewatch warehouse migrate` (the job also creates it when it starts)"
        )
        raise QueryError(msg)
    return path


def query_engine(url: str) -> Engine:
    """The engine `safewatch query` reads through; never creates an SQLite file or folder."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - make_engine raises the ConfigError that explains it
        return make_engine(url)
    if parsed.get_backend_name() == "sqlite":
        sqlite_database(parsed)
    return make_engine(url)


def run_query(
    engine: Engine,
    sql: str,
    *,
    max_rows: int | None = None,
    timeout_s: float = 30.0,
    allow_writer_login: bool = False,
    warn: Callable[[str], None] | None = None,
) -> QueryResult:
    """Run one read-only query; rows beyond `max_rows` are not fetched (see the module doc).

    QueryError when the statement is refused or fails, the login may write (PostgreSQL,
    unless `allow_writer_login`: then `warn` is told), or it runs longer than `timeout_s`.
    """
    dialect = engine.dialect.name
    statement = check_statement(sql, dialect)
    if dialect == "sqlite":
        columns, fetched = _run_sqlite(
            sqlite_database(engine.url), statement, max_rows=max_rows, timeout_s=timeout_s
        )
    elif dialect == "postgresql":
        columns, fetched = _run_postgres(
            engine.url,
            statement,
            max_rows=max_rows,
            timeout_s=timeout_s,
            allow_writer_login=allow_writer_login,
            warn=warn,
        )
    else:
        msg = f"safewatch query supports SQLite and PostgreSQL warehouses, not {dialect}"
        raise QueryError(msg)
    rows = tuple(tuple(r) for r in fetched)
    truncated = bool(max_rows) and len(rows) > (max_rows or 0)
    return QueryResult(columns, rows[:max_rows] if max_rows else rows, truncated)


def _timeout_message(timeout_s: float) -> str:
    return (
        f"the query ran longer than {timeout_s:g} s and was cancelled: narrow it (WHERE, "
        "LIMIT) or raise the limit (setting warehouse.query_timeout_s, "
        "SAFEWATCH_WAREHOUSE__QUERY_TIMEOUT_S)"
    )


# ---------------------------------------------------------------- SQLite
_SQLITE_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name
    for name in (
        "INSERT", "UPDATE", "DELETE", "ATTACH", "DETACH", "TRANSACTION", "SAVEPOINT",
        "CREATE_TABLE", "CREATE_INDEX", "CREATE_VIEW", "CREATE_TRIGGER", "CREATE_VTABLE",
        "CREATE_TEMP_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_VIEW", "CREATE_TEMP_TRIGGER",
        "DROP_TABLE", "DROP_INDEX", "DROP_VIEW", "DROP_TRIGGER", "DROP_VTABLE",
        "DROP_TEMP_TABLE", "DROP_TEMP_INDEX", "DROP_TEMP_VIEW", "DROP_TEMP_TRIGGER",
        "ALTER_TABLE", "REINDEX", "ANALYZE",
    )
}  # fmt: skip


def open_sqlite_read_only(path: Path, *, timeout_s: float) -> tuple[sqlite3.Connection, list[str]]:
    """`path` opened read-only, unable to attach, write or run a non-allow-listed PRAGMA.

    Statements run on it stop with sqlite3.OperationalError("interrupted") once `timeout_s`
    has passed since the connection was opened. The list receives what the authorizer
    denied (e.g. "ATTACH", "PRAGMA query_only"), for the error message.
    """
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    denied: list[str] = []

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: Any, _src: Any) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() not in SQLITE_DENIED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            denied.append(f"{arg2}()")
        elif action == sqlite3.SQLITE_PRAGMA:
            if (arg1 or "").lower() in SQLITE_PRAGMAS:
                return sqlite3.SQLITE_OK
            denied.append(f"PRAGMA {arg1}")
        else:
            name = _SQLITE_ACTIONS.get(action, f"action {action}")
            denied.append(f"{name} {arg1}" if arg1 else name)
        return sqlite3.SQLITE_DENY

    conn.set_authorizer(authorize)
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    return conn, denied


def _run_sqlite(
    path: Path, statement: str, *, max_rows: int | None, timeout_s: float
) -> tuple[tuple[str, ...], list[Any]]:
    try:
        conn, denied = open_sqlite_read_only(path, timeout_s=timeout_s)
    except sqlite3.Error as exc:
        msg = f"cannot open the warehouse {path} read-only: {exc}"
        raise QueryError(msg) from exc
    try:
        cur = conn.execute(statement)
        columns = tuple(d[0] for d in cur.description or ())
        fetched = cur.fetchmany(max_rows + 1) if max_rows else cur.fetchall()
    except (sqlite3.Error, sqlite3.Warning) as exc:
        if denied:
            msg = (
                f"safewatch query only reads the warehouse: {denied[0]} is not allowed "
                "(read-only: no writes, ATTACH, transactions or PRAGMAs beyond "
                f"{', '.join(sorted(SQLITE_PRAGMAS))})"
            )
        elif str(exc) == "interrupted":
            msg = _timeout_message(timeout_s)
        elif "one statement at a time" in str(exc):
            msg = "safewatch query runs one statement at a time; remove the others"
        else:
            msg = f"the warehouse refused the query: {str(exc).strip().splitlines()[0]}"
        raise QueryError(msg) from exc
    finally:
        conn.close()
    return columns, fetched


# ---------------------------------------------------------------- PostgreSQL
def _pg_options(url: URL, timeout_s: float) -> str:
    timeout_ms = max(1, round(timeout_s * 1000))
    own = f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}"
    given = url.query.get("options")
    given_text = given if isinstance(given, str) else " ".join(given or ())
    return f"{given_text} {own}".strip()


def _login_rights(cursor: Any) -> tuple[str, list[str]]:
    """The login's name and what it can do beyond reading (empty: an analyst login)."""
    cursor.execute(
        "SELECT current_user::text, "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
        "ARRAY(SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%s) "
        "      AND pg_has_role(current_user, oid, 'MEMBER') ORDER BY 1), "
        "ARRAY(SELECT c.relname::text FROM pg_class c "
        "      JOIN pg_namespace n ON n.oid = c.relnamespace "
        "      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "        AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "        AND n.nspname NOT LIKE 'pg\\_%%' "
        "        AND (pg_has_role(current_user, c.relowner, 'MEMBER') "
        "             OR has_table_privilege(current_user, c.oid, "
        "                                    'INSERT, UPDATE, DELETE, TRUNCATE')) "
        "      ORDER BY 1 LIMIT 4)",
        (list(_PG_POWER_ROLES),),
    )
    user, superuser, roles, tables = cursor.fetchone()
    rights = ["is a superuser"] if superuser else []
    rights += [f"is a member of {r}" for r in roles]
    if tables:
        more = ", ..." if len(tables) > 3 else ""
        rights.append(f"can write or owns {', '.join(tables[:3])}{more}")
    return user, rights


def _run_postgres(
    url: URL,
    statement: str,
    *,
    max_rows: int | None,
    timeout_s: float,
    allow_writer_login: bool,
    warn: Callable[[str], None] | None,
) -> tuple[tuple[str, ...], list[Any]]:
    import psycopg

    engine = create_engine(
        url, poolclass=NullPool, connect_args={"options": _pg_options(url, timeout_s)}
    )
    try:
        raw = engine.raw_connection()
    except DBAPIError as exc:
        detail = str(exc.orig or exc).strip().splitlines()[0]
        msg = f"cannot connect to the warehouse: {detail}"
        raise QueryError(msg) from exc
    try:
        conn = raw.driver_connection
        assert isinstance(conn, psycopg.Connection)
        with conn.cursor() as cur:
            user, rights = _login_rights(cur)
        if rights:
            why = "; ".join(rights)
            if not allow_writer_login:
                msg = (
                    f"safewatch query refuses to run as login {user}: it {why}, and a "
                    "read-only transaction still lets such a login end the job's sessions "
                    "(pg_terminate_backend). Connect with the analyst login "
                    "(docs/warehouse.md#roles), or set "
                    "SAFEWATCH_WAREHOUSE__QUERY_ALLOW_WRITER_LOGIN=true on a development "
                    "warehouse"
                )
                raise QueryError(msg)
            if warn is not None:
                warn(
                    f"WARNING: login {user} {why}; running the query read-only anyway "
                    "(warehouse.query_allow_writer_login). Use the analyst login."
                )
        with conn.cursor(name=_CURSOR) as server_cursor:
            server_cursor.execute(statement)
            columns = tuple(d.name for d in server_cursor.description or ())
            fetched = (
                server_cursor.fetchmany(max_rows + 1) if max_rows else server_cursor.fetchall()
            )
        conn.rollback()
    except psycopg.errors.QueryCanceled as exc:
        raise QueryError(_timeout_message(timeout_s)) from exc
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "multiple commands" in detail:
            msg = f"safewatch query runs one statement at a time; remove the others ({detail})"
        else:
            msg = f"the warehouse refused the query: {detail}"
        raise QueryError(msg) from exc
    finally:
        raw.close()
        engine.dispose()
    return columns, fetched
