"""A throw-away local PostgreSQL server from Debian's packages, for tests and local trials.

PostgreSQL refuses to run as root, so when the caller is root the server runs as the
`postgres` system user that Debian's package creates; its data directory is chowned to it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from pipelines.errors import InfraError
from pipelines.infra.scram import scram_sha256_verifier


def find_pg_bin() -> Path:
    """The newest PostgreSQL bin directory installed by Debian's packages."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not candidates:
        msg = "PostgreSQL server binaries not found: run `infra/setup.sh --test` (apt postgresql)"
        raise InfraError(msg)
    return Path(candidates[-1]).parent


class LocalPostgres:
    """initdb + pg_ctl start/stop on 127.0.0.1:`port` with data in `data_dir` (trust auth)."""

    def __init__(self, data_dir: Path, port: int, *, log: Callable[[str], None] = print) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.log = log
        self.bin = find_pg_bin()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            msg = f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}"
            raise InfraError(msg)
        return result

    def _allow_traversal(self) -> None:
        """Let the postgres user reach the data directory through its parents.

        Checked before every pg_ctl call, not once: another tool may tighten a parent in
        the meantime (pytest resets its temporary root to 0700 when a second session starts).
        """
        if not self._as_postgres:
            return
        for parent in self.data_dir.parents:
            if parent == Path("/"):
                break
            mode = os.stat(parent).st_mode
            if mode & 0o111 != 0o111:
                os.chmod(parent, mode | 0o111)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._allow_traversal()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self._as_postgres:
                shutil.chown(self.data_dir, "postgres", "postgres")
            self.log(f"postgres: initdb {self.data_dir}")
            self._run(
                str(self.bin / "initdb"), "-D", str(self.data_dir), "-A", "trust",
                "-U", "postgres", "--no-sync", "-E", "UTF8",
            )  # fmt: skip
        self.log(f"postgres: starting on 127.0.0.1:{self.port}")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
            "-l", str(self.data_dir / "server.log"),
            "-o", f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: `fast` (roll back open transactions, disconnect) or `immediate` (as
        a crash: the server recovers from its log when started again).
        """
        if mode not in ("smart", "fast", "immediate"):
            msg = f"unknown pg_ctl stop mode {mode!r}"
            raise ValueError(msg)
        if (self.data_dir / "postmaster.pid").exists():
            self._allow_traversal()
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "stop")

    def create_database(self, name: str) -> str:
        """Create database `name` (if absent); return its SQLAlchemy URL (psycopg 3)."""
        exists = self._run(
            str(self.bin / "psql"),
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
        ).stdout.strip()  # fmt: skip
        if exists != "1":
            self._run(
                str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "postgres", name,
            )  # fmt: skip
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@dataclass(frozen=True)
class RolePlan:
    """The two roles of a PostgreSQL warehouse (docs/warehouse.md#roles)."""

    writer: str = "safewatch_writer"
    analyst: str = "safewatch_analyst"
    writer_password: str | None = None
    analyst_password: str | None = None


def create_roles(engine: Engine, plan: RolePlan, *, log: Callable[[str], None] = print) -> None:
    """Create (or bring up to date) the writer and analyst roles on the warehouse database.

    Run with an administrative login (superuser, or CREATEROLE and owner of the database).
    Idempotent. The writer owns every warehouse table and view, so the job can apply future
    migrations with it; the analyst can connect and SELECT the objects in ANALYST_OBJECTS
    and nothing else (no base table, no rejected_events, no writes, no temporary objects or
    functions of its own). Passwords are sent as SCRAM-SHA-256 verifiers computed here, never
    in clear. A database error raises InfraError with one line that names what to change
    (the server's message and SQLSTATE, never a statement or a password).
    """
    if engine.dialect.name != "postgresql":
        msg = f"roles need a PostgreSQL warehouse, not {engine.dialect.name}"
        raise InfraError(msg)
    try:
        _create_roles(engine, plan, log)
    except DBAPIError as exc:
        raise InfraError(_role_error(exc, engine)) from None


def _role_error(exc: DBAPIError, engine: Engine) -> str:
    """One line from the server's own message: no SQL text, no parameters, no password."""
    diag = getattr(exc.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    sqlstate = getattr(diag, "sqlstate", None) or getattr(exc.orig, "sqlstate", None)
    if primary is None:  # no server answer (connection refused, unknown host)
        lines = str(exc.orig).strip().splitlines()
        primary = lines[0] if lines else type(exc.orig).__name__
    where = engine.url.render_as_string(hide_password=True)
    state = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    admin = "a superuser, or a role with CREATEROLE that owns the database"
    if sqlstate == "42501":  # insufficient privilege
        fix = f"run `safewatch warehouse roles` with warehouse.url naming {admin}"
    else:
        fix = (
            "check warehouse.url (host, port, database, user, password) and that the server "
            f"is up; the command needs {admin}"
        )
    return f"could not set up the warehouse roles on {where}: {primary}{state}; {fix}"


def _create_roles(engine: Engine, plan: RolePlan, log: Callable[[str], None]) -> None:
    from pipelines.warehouse.migrate import grant_analyst, migrate

    quote = engine.dialect.identifier_preparer.quote
    writer, analyst = quote(plan.writer), quote(plan.analyst)
    with engine.begin() as conn:
        for name, password in (
            (plan.writer, plan.writer_password),
            (plan.analyst, plan.analyst_password),
        ):
            exists = conn.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}
            ).scalar()
            verb = "ALTER" if exists else "CREATE"
            sql = f"{verb} ROLE {quote(name)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
            if password is not None:
                # A verifier's alphabet (base64, '$', ':', digits) needs no quoting; sent as
                # is (text() would read its ':' as bind parameters).
                sql += f" PASSWORD '{scram_sha256_verifier(password)}'"
            conn.exec_driver_sql(sql)
            log(f"postgres: role {name} {'updated' if exists else 'created'}")
        database = quote(conn.execute(text("SELECT current_database()")).scalar_one())
        conn.execute(text(f"GRANT CONNECT ON DATABASE {database} TO {writer}, {analyst}"))
        # Without TEMP an analyst cannot create a function of its own (pg_temp) to make a
        # view leak; CREATE on the database would let it make a schema for one.
        conn.execute(text(f"REVOKE CREATE, TEMPORARY ON DATABASE {database} FROM PUBLIC"))
        conn.execute(text(f"REVOKE CREATE, TEMPORARY ON DATABASE {database} FROM {analyst}"))
        conn.execute(text(f"GRANT TEMPORARY ON DATABASE {database} TO {writer}"))
        conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        conn.execute(text(f"REVOKE CREATE ON SCHEMA public FROM {analyst}"))
        conn.execute(text(f"GRANT USAGE, CREATE ON SCHEMA public TO {writer}"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {analyst}"))
    migrate(engine, log=log)
    with engine.begin() as conn:
        owned = conn.execute(
            text(
                "SELECT c.relname, c.relkind FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') "
                "AND pg_get_userbyid(c.relowner) <> :w"
            ),
            {"w": plan.writer},
        ).all()
        kinds = {"r": "TABLE", "v": "VIEW"}  # a table's sequences follow it
        for relname, relkind in owned:
            conn.execute(text(f"ALTER {kinds[relkind]} {quote(relname)} OWNER TO {writer}"))
        # Analysts read the views only, never a base table (also if granted before).
        conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {analyst}"))
        grant_analyst(conn, [plan.analyst])
    log(
        f"postgres: {plan.writer} owns {len(owned)} more object(s); "
        f"{plan.analyst} can read the analyst views"
    )
