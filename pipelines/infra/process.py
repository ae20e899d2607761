"""Small helpers shared by the local servers of pipelines/infra: pid files, signals, probes.

Every local server runs detached in its own session (`start_new_session=True`), so its pid is
also its process group id: signalling the group reaches the children it forked (a Spark
worker's executors) too. A pid read from a pid file counts as the server only while the
process's command line still holds the markers the server was started with, so a recycled pid
is never taken for (or signalled as) the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.errors import InfraError

TAIL_LINES = 20


def spawn(
    cmd: Sequence[str], out_file: Path, *, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` detached in its own session, stdout and stderr appended to `out_file`."""
    with out_file.open("ab") as out:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group `pid` leads; a group that is gone is no error."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file`, or None when the file is missing or holds no number."""
    try:
        return int(pid_file.read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        return None


def process_alive(
    pid: int, markers: Sequence[str], proc: subprocess.Popen[bytes] | None = None
) -> bool:
    """Whether `pid` runs and is the server whose command line holds every one of `markers`.

    `proc`, the handle of a process this one started, answers directly (and reaps a zombie).
    """
    if proc is not None and proc.pid == pid:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    # A recycled pid, or a zombie (empty cmdline), is not our server.
    args = cmdline.read_bytes().split(b"\0")
    return all(m.encode() in args for m in markers)


def wait_until_gone(alive: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `alive` until it is False or `timeout_s` passed; True if it is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return True
        time.sleep(0.1)
    return not alive()


def kill_if_lingering(
    pid: int, alive: Callable[[], bool], timeout_s: float, name: str, log: Callable[[str], None]
) -> None:
    """After a SIGTERM to `pid`'s group: wait `timeout_s` for it to go (`alive` False),
    else SIGKILL the group, saying so, and wait up to 10 s more.
    """
    if not wait_until_gone(alive, timeout_s):
        log(f"{name} did not stop within {timeout_s:g} s; killing it")
        signal_group(pid, signal.SIGKILL)
        wait_until_gone(alive, 10)


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def check_port_free(host: str, port: int, *, what: str, setting: str) -> None:
    """Raise InfraError naming `setting` when host:port cannot be bound for `what`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Java and Go servers bind with SO_REUSEADDR too, so TIME_WAIT leftovers are no conflict.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            msg = (
                f"cannot start {what}: {host}:{port} is not available ({exc.strerror}); "
                f"stop what uses it or set {setting}"
            )
            raise InfraError(msg) from exc


def tail(path: Path, lines: int = TAIL_LINES, start: int = 0) -> list[str]:
    """The last `lines` lines of `path` after byte `start` (from 0 if the file shrank)."""
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(start if start <= path.stat().st_size else 0)
        return f.read().decode("utf-8", errors="replace").splitlines()[-lines:]


# Loopback probes must not go through an HTTP proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str) -> bool:
    """Whether GET `url` answers 200 within a second."""
    try:
        with _NO_PROXY.open(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def http_json(url: str, timeout_s: float = 2.0) -> Any:
    """GET `url` and decode its JSON body; None when it does not answer 200 with JSON."""
    try:
        with _NO_PROXY.open(url, timeout=timeout_s) as response:
            if response.status != 200:
                return None
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def rolling_log4j2(log_file: Path, quiet_loggers: Sequence[str] = ()) -> str:
    """A log4j2 configuration: INFO to `log_file`, rolled at 10 MB (3 kept), and the
    `quiet_loggers` at WARN only.
    """
    quiet = "".join(
        f"logger.q{i}.name = {name}\nlogger.q{i}.level = WARN\n"
        for i, name in enumerate(quiet_loggers)
    )
    return (
        "status = warn\n"
        "appender.file.type = RollingFile\n"
        "appender.file.name = file\n"
        f"appender.file.fileName = {log_file}\n"
        f"appender.file.filePattern = {log_file}.%i\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d{ISO8601}] %p %m (%c)%n\n"
        "appender.file.policies.type = Policies\n"
        "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
        "appender.file.policies.size.size = 10MB\n"
        "appender.file.strategy.type = DefaultRolloverStrategy\n"
        "appender.file.strategy.max = 3\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.file.ref = file\n" + quiet
    )
