"""A local server of the Prometheus family (Alertmanager, Prometheus) run as a detached
process: found on PATH, started with a pid file and a log file, ready when `/-/ready`
answers, stopped by its process group, reported on; the process helpers it uses are
`pipelines.infra.process`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import InfraError
from pipelines.infra.process import (
    check_port_free,
    http_ok,
    kill_if_lingering,
    process_alive,
    read_pid,
    signal_group,
    spawn,
    tail,
)

# What such a server writes to its log when it cannot read its configuration file.
_CONFIG_FAILURES = ("loading configuration file failed", "error loading config")


def find_binary(names: Sequence[str], package: str, override: str = "binary=") -> str:
    """The first of `names` on PATH.

    Raises InfraError naming them, the Debian package and the `override` argument otherwise.
    """
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    msg = (
        f"{' or '.join(names)} not found on PATH: run `infra/setup.sh` "
        f"(Debian package {package}) or pass {override}"
    )
    raise InfraError(msg)


@dataclass(frozen=True)
class ServiceStatus:
    """Snapshot of a local service: `pid` is set only while the process is alive."""

    name: str
    running: bool
    pid: int | None
    url: str
    data_dir: Path
    log_file: Path

    def describe(self) -> str:
        """One line for people, e.g. `Alertmanager running (pid 42) at http://…; …`."""
        state = f"running (pid {self.pid}) at" if self.running else "not running; configured for"
        return f"{self.name} {state} {self.url}; data in {self.data_dir}; log {self.log_file}"


class LocalService:
    """One server process detached from the caller, with a pid file and a log file.

    The pid file lets another process (a later CLI call) find and stop the server; a pid counts
    as the server only while its command line still holds `--config.file=<config_file>`.
    """

    def __init__(
        self,
        name: str,
        data_dir: Path,
        url: str,
        config_file: Path,
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.url = url
        self.config_file = config_file
        stem = name.lower()
        self.log_file = data_dir / f"{stem}.log"
        self._pid_file = data_dir / f"{stem}.pid"
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def running_pid(self) -> int | None:
        pid = read_pid(self._pid_file)
        return pid if pid is not None and self._alive(pid) else None

    def start(
        self, cmd: list[str], *, port: int, port_setting: str, timeout_s: float, hint: str
    ) -> None:
        """Run `cmd` and return once GET `url`/-/ready answers 200.

        Raises InfraError when `port` is taken (naming `port_setting`), when the process exits
        during startup, or when it is not ready within `timeout_s` (it is stopped first); the
        message quotes the end of its log and, as the last resort, `hint`.
        """
        self._pid_file.unlink(missing_ok=True)
        check_port_free("127.0.0.1", port, what=self.name, setting=port_setting)
        self._log(f"starting {self.name} at {self.url} …")
        began = time.monotonic()
        self.log_file.write_bytes(b"")
        self._proc = spawn(cmd, self.log_file, cwd=self.data_dir)
        self._pid_file.write_text(f"{self._proc.pid}\n", encoding="utf-8")
        deadline = began + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._pid_file.unlink(missing_ok=True)
                headline = f"{self.name} exited with code {self._proc.returncode} during startup"
                raise InfraError(self._failure(headline, port_setting, hint))
            if http_ok(f"{self.url}/-/ready"):
                self._log(f"{self.name} ready in {time.monotonic() - began:.1f} s")
                return
            time.sleep(0.1)
        self.stop(timeout_s=10)
        headline = (
            f"{self.name} was not ready within {timeout_s:g} s (stopped it); raise "
            "SAFEWATCH_ALERTING__START_TIMEOUT_S on a slow machine"
        )
        raise InfraError(self._failure(headline, port_setting, hint))

    def stop(self, timeout_s: float = 20) -> bool:
        """Stop the server (SIGTERM, SIGKILL after `timeout_s`); True if one was running."""
        pid = self.running_pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            self._log(f"{self.name} not running")
            return False
        self._log(f"stopping {self.name} (pid {pid}) …")
        signal_group(pid, signal.SIGTERM)
        kill_if_lingering(pid, lambda: self._alive(pid), timeout_s, self.name, self._log)
        self._pid_file.unlink(missing_ok=True)
        self._proc = None
        self._log(f"{self.name} stopped")
        return True

    def status(self) -> ServiceStatus:
        """Current state, from the pid file and the process table; changes nothing."""
        pid = self.running_pid()
        return ServiceStatus(
            name=self.name,
            running=pid is not None,
            pid=pid,
            url=self.url,
            data_dir=self.data_dir,
            log_file=self.log_file,
        )

    def _failure(self, headline: str, port_setting: str, hint: str) -> str:
        lines = tail(self.log_file)
        output = "\n".join(lines)
        parts = [headline]
        if lines:
            parts.append(f"--- last lines of {self.log_file} ---\n{output}")
        if "address already in use" in output.lower():
            parts.append(f"check: the port is in use; change {port_setting}")
        elif any(m in output.lower() for m in _CONFIG_FAILURES):
            parts.append(
                f"check: {self.config_file}, written from the SAFEWATCH_ALERTING__* settings"
            )
        else:
            parts.append(f"check: {hint}")
        return "\n".join(parts)

    def _alive(self, pid: int) -> bool:
        return process_alive(pid, (f"--config.file={self.config_file}",), self._proc)


class LocalServer:
    """A Prometheus-family server made from the settings (`LocalAlertmanager`,
    `LocalPrometheus`): its configuration written on every start, started unless it
    already runs, stopped, reported on. A subclass names it (`name`, `binaries`,
    `package`, `port_setting`) and gives its configuration, command line and last hint.
    """

    name = ""
    binaries: tuple[str, ...] = ()
    package = ""
    port_setting = ""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        config_file: Path,
        *,
        timeout_s: float,
        log: Callable[[str], None] = print,
        binary: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.config_file = config_file
        self._timeout_s = timeout_s
        self._binary = binary
        self._log = log
        self._service = LocalService(self.name, data_dir, self.url, config_file, log=log)
        self.log_file = self._service.log_file

    @property
    def url(self) -> str:
        """Base URL of its web UI and API, e.g. `http://127.0.0.1:9193`."""
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        """Write its configuration file from the settings and return its path."""
        raise NotImplementedError

    def command(self, binary: str) -> list[str]:
        """Its command line, with `binary` as the program."""
        raise NotImplementedError

    def hint(self, binary: str) -> str:
        """What to check when it does not start and its log says nothing known."""
        raise NotImplementedError

    def start(self) -> ServiceStatus:
        """Start it unless it already runs; return once `/-/ready` answers.

        Raises InfraError when the binary is missing, the port is taken, or it does not start
        within `start_timeout_s` (the message quotes its log and names the setting to change).
        """
        pid = self._service.running_pid()
        if pid is not None:
            self._log(f"{self.name} already running (pid {pid}) at {self.url}")
            return self.status()
        binary = self._binary or find_binary(self.binaries, self.package)
        self.write_config()
        self._service.start(
            self.command(binary),
            port=self.port,
            port_setting=self.port_setting,
            timeout_s=self._timeout_s,
            hint=self.hint(binary),
        )
        return self.status()

    def stop(self, timeout_s: float = 20) -> bool:
        """Stop it (SIGTERM, SIGKILL after `timeout_s`); True if one was running."""
        return self._service.stop(timeout_s)

    def status(self) -> ServiceStatus:
        """Current state; changes nothing."""
        return self._service.status()
