"""A single-node Apache Kafka broker (KRaft, broker+controller) run as a detached JVM process.

Everything the broker owns lives in `BrokerSettings.data_dir`: `server.properties`,
`log4j2.properties`, the KRaft log directory `logs/`, `broker.pid`, `broker.out` (the JVM's
stdout/stderr) and `broker.log` (the broker's own log, size-capped). The pid file lets another
process (e.g. a later `safewatch infra down`) find and stop the broker.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from pipelines.errors import InfraError
from pipelines.kafka.admin import connect_timeout_option
from pipelines.settings import BrokerSettings

_MAIN_CLASS = "kafka.Kafka"
_TAIL_LINES = 20
# Loggers that flood broker.log at INFO on every topic/partition change.
_QUIET_LOGGERS = (
    "kafka.request.logger",
    "kafka.network.RequestChannel$",
    "state.change.logger",
    "org.apache.kafka.raft",
    "org.apache.kafka.clients",
    "org.apache.kafka.controller",
    "org.apache.kafka.image",
    "org.apache.kafka.metadata",
    "org.apache.kafka.storage.internals.log",
    "kafka.log",
    "org.apache.kafka.common.utils.AppInfoParser",
)


@dataclass(frozen=True)
class BrokerStatus:
    """Snapshot of the local broker: `pid` is set only while the process is alive."""

    running: bool
    pid: int | None
    bootstrap_servers: str
    data_dir: Path
    formatted: bool
    log_file: Path

    def describe(self) -> str:
        """One line for people, e.g. `Kafka broker running (pid 42) on 127.0.0.1:9092; …`."""
        state = f"running (pid {self.pid}) on" if self.running else "not running; configured for"
        storage = "formatted" if self.formatted else "not formatted"
        return (
            f"Kafka broker {state} {self.bootstrap_servers}; data in {self.data_dir} "
            f"({storage}); log {self.log_file}"
        )


class LocalKafkaBroker:
    """Formats, starts, stops and reports on the broker described by `settings`.

    Relative paths in `settings` are resolved against the working directory at construction.
    `log` receives progress messages; `java` is the java executable (default: `java` on PATH).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        log: Callable[[str], None] = print,
        java: str | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.expanduser().absolute()
        self.jars_dir = settings.jars_dir.expanduser().absolute()
        self._log = log
        self._java = java if java is not None else shutil.which("java")
        self.log_file = self.data_dir / "broker.log"
        self._out_file = self.data_dir / "broker.out"
        self._pid_file = self.data_dir / "broker.pid"
        self._server_properties = self.data_dir / "server.properties"
        self._log4j_file = self.data_dir / "log4j2.properties"
        self._meta_file = self.data_dir / "logs" / "meta.properties"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # size of broker.log when this run started

    @property
    def bootstrap_servers(self) -> str:
        """`host:port` that clients connect to."""
        return f"{self.settings.host}:{self.settings.port}"

    # -- public API ---------------------------------------------------------------------------

    def format(self) -> None:
        """Write the broker's config files, then format KRaft storage unless already formatted.

        Raises InfraError when java or the jars are missing or the storage tool fails.
        """
        java = self._require_runtime()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_configs()
        if self._meta_file.exists():
            return
        self._log(f"formatting KRaft storage in {self._meta_file.parent} …")
        cmd = [
            java,
            "-cp",
            f"{self.jars_dir}/*",
            f"-Dlog4j2.configurationFile={self._log4j_file}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            str(self._server_properties),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-_TAIL_LINES:])
            msg = (
                f"formatting Kafka storage in {self.data_dir} failed (exit {result.returncode}):"
                f"\n{output}\ncheck SAFEWATCH_BROKER__DATA_DIR and that the jars are complete"
                " (re-run infra/setup.sh)"
            )
            raise InfraError(msg)

    def start(self) -> BrokerStatus:
        """Start the broker unless it already runs, and return once clients can list topics.

        Raises InfraError (with the tail of the broker's output and what to check) when the
        process exits or is not ready within `start_timeout_s`; a broker that timed out is
        stopped first.
        """
        pid = self._read_pid()
        if pid is not None and self._alive(pid):
            self._log(f"Kafka broker already running (pid {pid}) on {self.bootstrap_servers}")
            return self.status()
        self._pid_file.unlink(missing_ok=True)
        self.format()
        java = self._require_runtime()
        self._check_ports_free()
        heap = self.settings.heap
        cmd = [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j_file}",
            "-cp",
            f"{self.jars_dir}/*",
            _MAIN_CLASS,
            str(self._server_properties),
        ]
        self._log(f"starting Kafka broker on {self.bootstrap_servers} …")
        # broker.log outlives runs: failure reports quote only what this run appended.
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        began = time.monotonic()
        with self._out_file.open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self._pid_file.write_text(f"{self._proc.pid}\n", encoding="utf-8")
        self._wait_ready(self._proc, began)
        self._log(f"broker ready in {time.monotonic() - began:.1f} s")
        return self.status()

    def stop(self, timeout_s: float = 30) -> bool:
        """Stop the broker (SIGTERM, SIGKILL after `timeout_s`); True if one was running."""
        pid = self._read_pid()
        if pid is None or not self._alive(pid):
            self._pid_file.unlink(missing_ok=True)
            self._log("Kafka broker not running")
            return False
        self._log(f"stopping Kafka broker (pid {pid}) …")
        _signal_group(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout_s):
            self._log(f"broker did not stop within {timeout_s:g} s; killing it")
            _signal_group(pid, signal.SIGKILL)
            self._wait_exit(pid, 10)
        self._pid_file.unlink(missing_ok=True)
        self._proc = None
        self._log("Kafka broker stopped")
        return True

    def status(self) -> BrokerStatus:
        """Current state, from the pid file and the process table; changes nothing."""
        pid = self._read_pid()
        running = pid is not None and self._alive(pid)
        return BrokerStatus(
            running=running,
            pid=pid if running else None,
            bootstrap_servers=self.bootstrap_servers,
            data_dir=self.data_dir,
            formatted=self._meta_file.exists(),
            log_file=self.log_file,
        )

    # -- internals ----------------------------------------------------------------------------

    def _require_runtime(self) -> str:
        if not self._java:
            msg = "java not found on PATH: install Java 17+ (infra/setup.sh does) or pass java="
            raise InfraError(msg)
        if not any(self.jars_dir.glob("kafka_*.jar")):
            msg = f"Kafka broker jars not found in {self.jars_dir}: run infra/setup.sh"
            raise InfraError(msg)
        return self._java

    def _write_configs(self) -> None:
        s = self.settings
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self._meta_file.parent),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        self._server_properties.write_text(text, encoding="utf-8")
        quiet = "".join(
            f"logger.q{i}.name = {name}\nlogger.q{i}.level = WARN\n"
            for i, name in enumerate(_QUIET_LOGGERS)
        )
        self._log4j_file.write_text(
            "status = warn\n"
            "appender.file.type = RollingFile\n"
            "appender.file.name = file\n"
            f"appender.file.fileName = {self.log_file}\n"
            f"appender.file.filePattern = {self.log_file}.%i\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d{ISO8601}] %p %m (%c)%n\n"
            "appender.file.policies.type = Policies\n"
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
            "appender.file.policies.size.size = 10MB\n"
            "appender.file.strategy.type = DefaultRolloverStrategy\n"
            "appender.file.strategy.max = 3\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = file\n" + quiet,
            encoding="utf-8",
        )

    def _check_ports_free(self) -> None:
        for port, setting in (
            (self.settings.port, "SAFEWATCH_BROKER__PORT"),
            (self.settings.controller_port, "SAFEWATCH_BROKER__CONTROLLER_PORT"),
        ):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # Java binds with SO_REUSEADDR too, so TIME_WAIT leftovers are no conflict.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.settings.host, port))
                except OSError as exc:
                    msg = (
                        f"cannot start the Kafka broker: {self.settings.host}:{port} is not "
                        f"available ({exc.strerror}); stop what uses it or set {setting}"
                    )
                    raise InfraError(msg) from exc

    def _wait_ready(self, proc: subprocess.Popen[bytes], began: float) -> None:
        deadline = began + self.settings.start_timeout_s
        while True:
            if proc.poll() is not None:
                self._pid_file.unlink(missing_ok=True)
                msg = f"Kafka broker exited with code {proc.returncode} during startup"
                raise InfraError(self._failure_message(msg))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if _port_open(self.settings.host, self.settings.port) and _lists_topics(
                self.bootstrap_servers, min(remaining, 5.0)
            ):
                return
            time.sleep(0.25)
        self.stop(timeout_s=10)
        msg = (
            f"Kafka broker was not ready within {self.settings.start_timeout_s:g} s (stopped it);"
            " raise SAFEWATCH_BROKER__START_TIMEOUT_S on a slow machine"
        )
        raise InfraError(self._failure_message(msg))

    def _failure_message(self, headline: str) -> str:
        parts = [headline]
        for path, start in ((self._out_file, 0), (self.log_file, self._log_start)):
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(start if start <= path.stat().st_size else 0)
                lines = f.read().decode("utf-8", errors="replace").splitlines()
            if lines:
                tail = "\n".join(lines[-_TAIL_LINES:])
                parts.append(f"--- last lines of {path} ---\n{tail}")
        parts.append(self._hint("\n".join(parts)))
        return "\n".join(parts)

    def _hint(self, output: str) -> str:
        s = self.settings
        if "Address already in use" in output:
            return (
                f"check: a port is in use; change SAFEWATCH_BROKER__PORT ({s.port}) or "
                f"SAFEWATCH_BROKER__CONTROLLER_PORT ({s.controller_port})"
            )
        if "UnsupportedClassVersionError" in output:
            return f"check: Kafka 4 needs Java 17 or newer ({self._java} is older)"
        if "ClassNotFoundException" in output or "NoClassDefFoundError" in output:
            return f"check: the jars in {self.jars_dir} are incomplete; re-run infra/setup.sh"
        if "OutOfMemoryError" in output or "heap size" in output:
            return f"check: the heap is too small; raise SAFEWATCH_BROKER__HEAP ({s.heap})"
        if "InconsistentClusterIdException" in output or "Invalid cluster.id" in output:
            return (
                f"check: {self.data_dir} holds another cluster's data; delete it or choose "
                "another SAFEWATCH_BROKER__DATA_DIR"
            )
        return f"check: {self.log_file} and {self._out_file}"

    def _read_pid(self) -> int | None:
        try:
            return int(self._pid_file.read_text(encoding="utf-8").strip())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        cmdline = Path(f"/proc/{pid}/cmdline")
        if not cmdline.exists():
            return True
        # A recycled pid, or a zombie (empty cmdline), is not our broker.
        args = cmdline.read_bytes().split(b"\0")
        return _MAIN_CLASS.encode() in args and str(self._server_properties).encode() in args

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return True
            time.sleep(0.1)
        return not self._alive(pid)


def _cluster_id() -> str:
    """A Kafka cluster id: URL-safe base64 of a random UUID, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _lists_topics(bootstrap_servers: str, timeout_s: float) -> bool:
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=[bootstrap_servers],
            request_timeout_ms=max(1000, int(timeout_s * 1000)),
            **connect_timeout_option(KafkaAdminClient, timeout_s),
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
    except KafkaError:
        return False
    finally:
        admin.close()
    return True
