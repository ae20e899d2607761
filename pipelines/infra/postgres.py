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
from pathlib import Path

from pipelines.errors import InfraError


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

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._allow_traversal()
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop")

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
