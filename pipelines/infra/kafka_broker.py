"""An Apache Kafka broker (KRaft, broker+controller) run as a detached JVM process.

Alone it is the single-node broker of `safewatch infra up`; with a node id and the quorum's
voters in its settings it is one node of a cluster (pipelines/infra/kafka_cluster.py).
Everything the broker owns lives in `BrokerSettings.data_dir`: `server.properties`,
`log4j2.properties`, the KRaft log directory `logs/`, `broker.pid`, `broker.out` (the JVM's
stdout/stderr) and `broker.log` (the broker's own log, size-capped). The pid file lets another
process (e.g. a later `safewatch infra down`) find and stop the broker.
"""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from pipelines.errors import InfraError
from pipelines.infra.process import (
    TAIL_LINES,
    check_port_free,
    kill_if_lingering,
    port_open,
    process_alive,
    read_pid,
    rolling_log4j2,
    signal_group,
    spawn,
    tail,
    wait_until_gone,
)
from pipelines.kafka.admin import connect_timeout_option
from pipelines.settings import BrokerSettings

_MAIN_CLASS = "kafka.Kafka"
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
    name: str = "Kafka broker"

    def describe(self) -> str:
        """One line for people, e.g. `Kafka broker running (pid 42) on 127.0.0.1:9092; …`."""
        state = f"running (pid {self.pid}) on" if self.running else "not running; configured for"
        storage = "formatted" if self.formatted else "not formatted"
        return (
            f"{self.name} {state} {self.bootstrap_servers}; data in {self.data_dir} "
            f"({storage}); log {self.log_file}"
        )


@dataclass(frozen=True)
class SettingNames:
    """The environment variables that error messages tell people to change.

    The defaults name the single broker's settings ([broker]); a cluster node names the
    [cluster] settings it was built from.
    """

    port: str = "SAFEWATCH_BROKER__PORT"
    controller_port: str = "SAFEWATCH_BROKER__CONTROLLER_PORT"
    data_dir: str = "SAFEWATCH_BROKER__DATA_DIR"
    heap: str = "SAFEWATCH_BROKER__HEAP"
    start_timeout_s: str = "SAFEWATCH_BROKER__START_TIMEOUT_S"


class LocalKafkaBroker:
    """Formats, starts, stops and reports on the broker described by `settings`.

    Relative paths in `settings` are resolved against the working directory at construction.
    `log` receives progress messages; `java` is the java executable (default: `java` on PATH).
    `cluster_id` formats the storage for that KRaft cluster (every node of a cluster needs the
    same one; default: a new random id). `name` and `setting_names` are what messages call
    the broker and the settings to change.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        log: Callable[[str], None] = print,
        java: str | None = None,
        cluster_id: str | None = None,
        name: str = "Kafka broker",
        setting_names: SettingNames | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.data_dir = settings.data_dir.expanduser().absolute()
        self.jars_dir = settings.jars_dir.expanduser().absolute()
        self._log = log
        self._java = java if java is not None else shutil.which("java")
        self.cluster_id = cluster_id
        self._names = setting_names or SettingNames()
        self.log_file = self.data_dir / "broker.log"
        self._out_file = self.data_dir / "broker.out"
        self._pid_file = self.data_dir / "broker.pid"
        self._server_properties = self.data_dir / "server.properties"
        self._log4j_file = self.data_dir / "log4j2.properties"
        self._meta_file = self.data_dir / "logs" / "meta.properties"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # size of broker.log when this run started
        self._began = 0.0  # time.monotonic() of the last launch

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
            self.cluster_id or new_cluster_id(),
            "-c",
            str(self._server_properties),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-TAIL_LINES:])
            msg = (
                f"formatting Kafka storage in {self.data_dir} failed (exit {result.returncode}):"
                f"\n{output}\ncheck {self._names.data_dir} and that the jars are complete"
                " (re-run infra/setup.sh)"
            )
            raise InfraError(msg)

    def start(self, *, wait: bool = True) -> BrokerStatus:
        """Start the broker unless it already runs, and return once clients can list topics.

        With `wait=False` it returns as soon as the process is launched: a node of a cluster
        cannot serve before a majority of the controllers runs, so a cluster launches every
        node first and then calls `wait_ready` on each.

        Raises InfraError (with the tail of the broker's output and what to check) when the
        process exits or is not ready within `start_timeout_s`; a broker that timed out is
        stopped first.
        """
        pid = read_pid(self._pid_file)
        if pid is not None and self._alive(pid):
            self._log(f"{self.name} already running (pid {pid}) on {self.bootstrap_servers}")
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
        self._log(f"starting {self.name} on {self.bootstrap_servers} …")
        # broker.log outlives runs: failure reports quote only what this run appended.
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        self._began = time.monotonic()
        self._out_file.write_bytes(b"")
        self._proc = spawn(cmd, self._out_file, cwd=self.data_dir)
        self._pid_file.write_text(f"{self._proc.pid}\n", encoding="utf-8")
        if wait:
            self.wait_ready()
        return self.status()

    def wait_ready(self) -> BrokerStatus:
        """Return once clients can list topics on this broker (see `start` for failures)."""
        pid = read_pid(self._pid_file)
        if pid is None:
            msg = f"{self.name} on {self.bootstrap_servers} is not running: start it first"
            raise InfraError(msg)
        self._wait_ready(pid, self._began or time.monotonic())
        if self._began:
            self._log(f"{self.name} ready in {time.monotonic() - self._began:.1f} s")
        return self.status()

    def stop(self, timeout_s: float = 30) -> bool:
        """Stop the broker (SIGTERM, SIGKILL after `timeout_s`); True if one was running."""
        if not self.request_stop():
            return False
        self.wait_stopped(timeout_s)
        return True

    def request_stop(self) -> bool:
        """Send SIGTERM (a controlled shutdown) without waiting; True if the broker ran.

        Nodes of a cluster are all asked at once: one stopped after the others would wait
        for a controller quorum that is gone. `wait_stopped` completes the stop.
        """
        pid = read_pid(self._pid_file)
        if pid is None or not self._alive(pid):
            self._pid_file.unlink(missing_ok=True)
            self._log(f"{self.name} not running")
            return False
        self._log(f"stopping {self.name} (pid {pid}) …")
        signal_group(pid, signal.SIGTERM)
        return True

    def wait_stopped(self, timeout_s: float = 30) -> None:
        """Wait for the broker to exit after `request_stop`; SIGKILL it after `timeout_s`."""
        pid = read_pid(self._pid_file)
        if pid is not None:
            kill_if_lingering(pid, lambda: self._alive(pid), timeout_s, self.name, self._log)
        self._pid_file.unlink(missing_ok=True)
        self._proc = None
        self._log(f"{self.name} stopped")

    def kill(self) -> int | None:
        """SIGKILL the broker at once, as a crash would (no controlled shutdown).

        Returns the pid it killed, None if none ran. The pid file stays, as after a crash;
        `start` runs the broker again on the same storage.
        """
        pid = read_pid(self._pid_file)
        if pid is None or not self._alive(pid):
            return None
        self._log(f"killing {self.name} (pid {pid}) with SIGKILL")
        signal_group(pid, signal.SIGKILL)
        wait_until_gone(lambda: self._alive(pid), 10)
        return pid

    def status(self) -> BrokerStatus:
        """Current state, from the pid file and the process table; changes nothing."""
        pid = read_pid(self._pid_file)
        running = pid is not None and self._alive(pid)
        return BrokerStatus(
            running=running,
            pid=pid if running else None,
            bootstrap_servers=self.bootstrap_servers,
            data_dir=self.data_dir,
            formatted=self._meta_file.exists(),
            log_file=self.log_file,
            name=self.name,
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
        voters = s.quorum_voters or f"{s.node_id}@{s.host}:{s.controller_port}"
        replicas, min_isr = str(s.replication_factor), str(s.min_insync_replicas)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(s.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self._meta_file.parent),
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        self._server_properties.write_text(text, encoding="utf-8")
        self._log4j_file.write_text(rolling_log4j2(self.log_file, _QUIET_LOGGERS), encoding="utf-8")

    def _check_ports_free(self) -> None:
        for port, setting in (
            (self.settings.port, self._names.port),
            (self.settings.controller_port, self._names.controller_port),
        ):
            check_port_free(self.settings.host, port, what=f"the {self.name}", setting=setting)

    def _wait_ready(self, pid: int, began: float) -> None:
        deadline = began + self.settings.start_timeout_s
        while True:
            if not self._alive(pid):
                self._pid_file.unlink(missing_ok=True)
                code = self._proc.returncode if self._proc is not None else None
                msg = f"{self.name} exited with code {code} during startup"
                raise InfraError(self._failure_message(msg))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if port_open(self.settings.host, self.settings.port) and _lists_topics(
                self.bootstrap_servers, min(remaining, 5.0)
            ):
                return
            time.sleep(0.25)
        self.stop(timeout_s=10)
        msg = (
            f"{self.name} was not ready within {self.settings.start_timeout_s:g} s (stopped it);"
            f" raise {self._names.start_timeout_s} on a slow machine"
        )
        raise InfraError(self._failure_message(msg))

    def _failure_message(self, headline: str) -> str:
        parts = [headline]
        for path, start in ((self._out_file, 0), (self.log_file, self._log_start)):
            lines = tail(path, start=start)
            if lines:
                text = "\n".join(lines)
                parts.append(f"--- last lines of {path} ---\n{text}")
        parts.append(self._hint("\n".join(parts)))
        return "\n".join(parts)

    def _hint(self, output: str) -> str:
        s, names = self.settings, self._names
        if "Address already in use" in output:
            return (
                f"check: a port is in use; change {names.port} ({s.port}) or "
                f"{names.controller_port} ({s.controller_port})"
            )
        if "UnsupportedClassVersionError" in output:
            return f"check: Kafka 4 needs Java 17 or newer ({self._java} is older)"
        if "ClassNotFoundException" in output or "NoClassDefFoundError" in output:
            return f"check: the jars in {self.jars_dir} are incomplete; re-run infra/setup.sh"
        if "OutOfMemoryError" in output or "heap size" in output:
            return f"check: the heap is too small; raise {names.heap} ({s.heap})"
        if "InconsistentClusterIdException" in output or "Invalid cluster.id" in output:
            return (
                f"check: {self.data_dir} holds another cluster's data; delete it or choose "
                f"another {names.data_dir}"
            )
        return f"check: {self.log_file} and {self._out_file}"

    def _alive(self, pid: int) -> bool:
        return process_alive(pid, (_MAIN_CLASS, str(self._server_properties)), self._proc)


def new_cluster_id() -> str:
    """A Kafka cluster id: URL-safe base64 of a random UUID, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


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
