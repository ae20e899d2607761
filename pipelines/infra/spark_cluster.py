"""A Spark standalone cluster on loopback: one master and its workers, from the pyspark package.

The pyspark wheel ships Spark's jars and `bin/spark-class`, but not the sbin/start-*.sh
scripts, so each daemon is `spark-class <Master|Worker class> …` run detached in its own
session (its pid is its process group, which a worker's executors join), with SPARK_HOME =
the pyspark package. Everything lives in `ClusterSettings.spark_data_dir`:

    conf/spark-defaults.conf          the daemons' Spark settings (SPARK_CONF_DIR)
    conf/log4j2-<daemon>.properties   each daemon's log configuration
    master.pid, master.out, master.log
    worker-<i>.pid, worker-<i>.out, worker-<i>.log
    worker-<i>/                       the worker's work dir: one folder per application with
                                      each executor's stdout and stderr

`.out` holds what the JVM prints outside its log (launcher errors, crashes); `.log` is the
daemon's own log, size-capped. The pid files let a later `safewatch infra down --cluster`
find and stop the daemons.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import InfraError
from pipelines.infra.process import (
    check_port_free,
    http_json,
    kill_if_lingering,
    process_alive,
    read_pid,
    rolling_log4j2,
    signal_group,
    spawn,
    tail,
)
from pipelines.settings import ClusterSettings

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
_TIMEOUT_SETTING = "SAFEWATCH_CLUSTER__START_TIMEOUT_S"


def spark_home() -> Path:
    """The pyspark package directory, which is a complete SPARK_HOME (bin/, jars/)."""
    import pyspark

    home = Path(pyspark.__file__).resolve().parent
    if not (home / "bin" / "spark-class").is_file() or not (home / "jars").is_dir():
        msg = (
            f"{home} has no bin/spark-class or jars/: the pyspark package is incomplete; "
            "re-run infra/setup.sh"
        )
        raise InfraError(msg)
    return home


@dataclass(frozen=True)
class DaemonStatus:
    """One daemon: `pid` is set only while the process is alive."""

    name: str
    running: bool
    pid: int | None
    address: str
    log_file: Path

    def describe(self) -> str:
        state = f"running (pid {self.pid}) on" if self.running else "not running; configured for"
        return f"{self.name} {state} {self.address}; log {self.log_file}"


@dataclass(frozen=True)
class SparkClusterStatus:
    """Snapshot of the cluster; `alive_workers` is what the master reports (None: no answer)."""

    master_url: str
    webui_url: str
    master: DaemonStatus
    workers: tuple[DaemonStatus, ...]
    alive_workers: int | None
    data_dir: Path

    @property
    def running(self) -> bool:
        """The master and every worker run, and the master reports every worker ALIVE."""
        return (
            self.master.running
            and all(w.running for w in self.workers)
            and self.alive_workers == len(self.workers)
        )

    def describe(self) -> str:
        """A few lines for people: the master, what it reports, then one line per worker."""
        if self.master.running:
            reported = (
                f"{self.alive_workers} of {len(self.workers)} workers ALIVE"
                if self.alive_workers is not None
                else "its UI does not answer"
            )
            head = (
                f"Spark master running (pid {self.master.pid}) at {self.master_url}, "
                f"UI {self.webui_url}; {reported}"
            )
        else:
            head = f"Spark master not running; configured for {self.master_url}"
        lines = [f"{head}; data in {self.data_dir}; log {self.master.log_file}"]
        lines += [f"  {w.describe()}" for w in self.workers]
        return "\n".join(lines)


class _Daemon:
    """One master or worker process, found again through its pid file."""

    def __init__(
        self, name: str, stem: str, main_class: str, args: list[str], data_dir: Path, marker: Path
    ) -> None:
        self.name = name
        self.main_class = main_class
        self.args = args
        self.marker = str(marker)
        self.pid_file = data_dir / f"{stem}.pid"
        self.out_file = data_dir / f"{stem}.out"
        self.log_file = data_dir / f"{stem}.log"
        self.log4j_file = data_dir / "conf" / f"log4j2-{stem}.properties"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def running_pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid is not None and self.alive(pid) else None

    def alive(self, pid: int) -> bool:
        # The class and its arguments are on the command line of spark-class and of the java
        # process it becomes; `marker` is an argument naming a path in this cluster's data dir.
        return process_alive(pid, (self.main_class, self.marker), self._proc)

    def launch(self, spark_class: Path, env: Mapping[str, str], cwd: Path) -> None:
        self.pid_file.unlink(missing_ok=True)
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.out_file.write_bytes(b"")
        daemon_env = {
            **env,
            "SPARK_DAEMON_JAVA_OPTS": f"-Dlog4j2.configurationFile={self.log4j_file}",
        }
        self._proc = spawn(
            [str(spark_class), self.main_class, *self.args], self.out_file, cwd=cwd, env=daemon_env
        )
        self.pid_file.write_text(f"{self._proc.pid}\n", encoding="utf-8")

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def request_stop(self, log: Callable[[str], None]) -> int | None:
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        log(f"stopping {self.name} (pid {pid}) …")
        signal_group(pid, signal.SIGTERM)
        return pid

    def wait_stopped(self, pid: int, timeout_s: float, log: Callable[[str], None]) -> None:
        kill_if_lingering(pid, lambda: self.alive(pid), timeout_s, self.name, log)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None

    def output(self) -> str:
        parts = []
        for path, start in ((self.out_file, 0), (self.log_file, self._log_start)):
            lines = tail(path, start=start)
            if lines:
                text = "\n".join(lines)
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts)


class LocalSparkCluster:
    """Starts, stops and reports on the master and workers described by `settings`.

    Relative paths in `settings` are resolved against the working directory at construction.
    `log` receives progress messages; `java` is the java executable (default: `java` on
    PATH, or $JAVA_HOME/bin/java as spark-class picks it).
    """

    def __init__(
        self,
        settings: ClusterSettings,
        *,
        log: Callable[[str], None] = print,
        java: str | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.spark_data_dir.expanduser().absolute()
        self._conf_dir = self.data_dir / "conf"
        self._defaults_file = self._conf_dir / "spark-defaults.conf"
        self._log = log
        self._java = java
        s = settings
        self._master = _Daemon(
            "Spark master",
            "master",
            MASTER_CLASS,
            [
                "--host", s.host,
                "--port", str(s.spark_master_port),
                "--webui-port", str(s.spark_master_webui_port),
                "--properties-file", str(self._defaults_file),
            ],
            self.data_dir,
            marker=self._defaults_file,
        )  # fmt: skip
        self._workers = [
            _Daemon(
                f"Spark worker {i}",
                f"worker-{i}",
                WORKER_CLASS,
                [
                    "--host", s.host,
                    "--port", str(port),
                    "--webui-port", str(webui_port),
                    "--cores", str(s.spark_worker_cores),
                    "--memory", s.spark_worker_memory,
                    "--properties-file", str(self._defaults_file),
                    "--work-dir", str(self.data_dir / f"worker-{i}"),
                    self.master_url,
                ],
                self.data_dir,
                marker=self.data_dir / f"worker-{i}",
            )
            for i, (port, webui_port) in enumerate(
                zip(s.spark_worker_ports, s.spark_worker_webui_ports, strict=True), start=1
            )
        ]  # fmt: skip

    @property
    def master_url(self) -> str:
        """spark://host:port, the value of spark.master for jobs on this cluster."""
        return self.settings.spark_master_url

    @property
    def webui_url(self) -> str:
        """The master's web UI; `<webui_url>/json/` is its state as JSON."""
        return f"http://{self.settings.host}:{self.settings.spark_master_webui_port}"

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> SparkClusterStatus:
        """Start the master and the workers that are not running; return once the master
        reports every worker ALIVE.

        Raises InfraError, quoting the failing daemon's log and naming the setting to change,
        when a port is taken, a daemon exits, or the workers are not ALIVE within
        start_timeout_s; the daemons this call started are stopped first.
        """
        current = self.status()
        if current.running:
            self._log(
                f"Spark cluster already running at {self.master_url} "
                f"({len(self._workers)} workers ALIVE)"
            )
            return current
        spark_class = spark_home() / "bin" / "spark-class"
        env = self._environment()
        self._write_configs()
        began = time.monotonic()
        started: list[_Daemon] = []
        try:
            if self._master.running_pid() is None:
                s = self.settings
                self._check_ports(
                    [
                        (s.spark_master_port, "SAFEWATCH_CLUSTER__SPARK_MASTER_PORT"),
                        (s.spark_master_webui_port, "SAFEWATCH_CLUSTER__SPARK_MASTER_WEBUI_PORT"),
                    ],
                    "the Spark master",
                )
                self._log(f"starting the Spark master at {self.master_url} …")
                self._master.launch(spark_class, env, self.data_dir)
                started.append(self._master)
            self._wait(began, started, lambda state: state.get("status") == "ALIVE", "master")
            for i, worker in enumerate(self._workers):
                if worker.running_pid() is not None:
                    continue
                self._check_ports(
                    [
                        (
                            self.settings.spark_worker_ports[i],
                            "SAFEWATCH_CLUSTER__SPARK_WORKER_PORTS",
                        ),
                        (
                            self.settings.spark_worker_webui_ports[i],
                            "SAFEWATCH_CLUSTER__SPARK_WORKER_WEBUI_PORTS",
                        ),
                    ],
                    f"the {worker.name}",
                )
                self._log(f"starting the {worker.name} …")
                worker.launch(spark_class, env, self.data_dir)
                started.append(worker)
            self._wait(
                began,
                started,
                lambda state: self._alive_workers(state) == len(self._workers),
                "workers",
            )
        except InfraError:
            self._stop(reversed(started), timeout_s=10)
            raise
        self._log(
            f"Spark cluster ready in {time.monotonic() - began:.1f} s: {self.master_url}, "
            f"{len(self._workers)} workers ALIVE (UI {self.webui_url})"
        )
        return self.status()

    def stop(self, timeout_s: float = 30) -> bool:
        """Stop the workers (with their executors), then the master; True if any was running.

        SIGTERM first, SIGKILL after `timeout_s`.
        """
        stopped = self._stop(self._workers, timeout_s)
        stopped = self._stop([self._master], timeout_s) or stopped
        self._log("Spark cluster stopped" if stopped else "Spark cluster not running")
        return stopped

    def status(self) -> SparkClusterStatus:
        """Current state, from the pid files, the process table and the master's /json/."""
        master_pid = self._master.running_pid()
        state = http_json(f"{self.webui_url}/json/") if master_pid is not None else None
        s = self.settings
        workers = tuple(
            DaemonStatus(
                name=w.name,
                running=(pid := w.running_pid()) is not None,
                pid=pid,
                address=f"{s.host}:{port}, {s.spark_worker_cores} core(s), {s.spark_worker_memory}",
                log_file=w.log_file,
            )
            for w, port in zip(self._workers, s.spark_worker_ports, strict=True)
        )
        return SparkClusterStatus(
            master_url=self.master_url,
            webui_url=self.webui_url,
            master=DaemonStatus(
                name=self._master.name,
                running=master_pid is not None,
                pid=master_pid,
                address=self.master_url,
                log_file=self._master.log_file,
            ),
            workers=workers,
            alive_workers=self._alive_workers(state) if isinstance(state, dict) else None,
            data_dir=self.data_dir,
        )

    # -- internals ----------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        java = self._java or shutil.which("java")
        if not java:
            msg = "java not found on PATH: install Java 17+ (infra/setup.sh does) or pass java="
            raise InfraError(msg)
        home = spark_home()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
        env.update(
            {
                "SPARK_HOME": str(home),
                "SPARK_CONF_DIR": str(self._conf_dir),
                # Bind RPC and UIs to the cluster's address, not to the first interface.
                "SPARK_LOCAL_IP": self.settings.host,
                "SPARK_DAEMON_MEMORY": self.settings.spark_daemon_memory,
                "JAVA_HOME": str(Path(java).resolve().parents[1]),
            }
        )
        return env

    def _write_configs(self) -> None:
        self._conf_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, len(self._workers) + 1):
            (self.data_dir / f"worker-{i}").mkdir(exist_ok=True)
        self._defaults_file.write_text(
            "# Written by `safewatch infra up --cluster` from the [cluster] settings.\n"
            # No REST submission server: jobs connect as clients, and it would take port 6066.
            "spark.master.rest.enabled false\n"
            # Fail on a taken port instead of silently binding the next one.
            "spark.port.maxRetries 0\n",
            encoding="utf-8",
        )
        for daemon in (self._master, *self._workers):
            daemon.log4j_file.write_text(rolling_log4j2(daemon.log_file), encoding="utf-8")

    def _check_ports(self, ports: Sequence[tuple[int, str]], what: str) -> None:
        for port, setting in ports:
            check_port_free(self.settings.host, port, what=what, setting=setting)

    def _alive_workers(self, state: dict[str, Any]) -> int:
        """Workers of this cluster (by port) that the master's state lists as ALIVE."""
        ours = set(self.settings.spark_worker_ports)
        return sum(
            1
            for w in state.get("workers", [])
            if w.get("state") == "ALIVE" and w.get("port") in ours
        )

    def _wait(
        self,
        began: float,
        started: Sequence[_Daemon],
        done: Callable[[dict[str, Any]], bool],
        what: str,
    ) -> None:
        """Poll the master's /json/ until `done(state)`; InfraError if a daemon exits first."""
        deadline = began + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            for daemon in started:
                code = daemon.exit_code()
                if code is not None:
                    daemon.pid_file.unlink(missing_ok=True)
                    headline = f"the {daemon.name} exited with code {code} during startup"
                    raise InfraError(self._failure(headline, [daemon]))
            state = http_json(f"{self.webui_url}/json/")
            if isinstance(state, dict) and done(state):
                return
            time.sleep(0.5)
        state = http_json(f"{self.webui_url}/json/")
        if what == "master" or not isinstance(state, dict):
            headline = (
                f"the Spark master did not answer at {self.webui_url}/json/ within "
                f"{self.settings.start_timeout_s:g} s"
            )
        else:
            headline = (
                f"the Spark master reports {self._alive_workers(state)} of "
                f"{len(self._workers)} workers ALIVE after {self.settings.start_timeout_s:g} s"
            )
        headline += f" (stopped what this call started); raise {_TIMEOUT_SETTING} on a slow machine"
        raise InfraError(self._failure(headline, [self._master, *self._workers]))

    def _failure(self, headline: str, daemons: Sequence[_Daemon]) -> str:
        parts = [headline, *[d.output() for d in daemons if d.output()]]
        output = "\n".join(parts)
        s = self.settings
        if "Address already in use" in output or "BindException" in output:
            hint = (
                "a port is in use; change SAFEWATCH_CLUSTER__SPARK_MASTER_PORT "
                f"({s.spark_master_port}), SAFEWATCH_CLUSTER__SPARK_MASTER_WEBUI_PORT "
                f"({s.spark_master_webui_port}), SAFEWATCH_CLUSTER__SPARK_WORKER_PORTS or "
                "SAFEWATCH_CLUSTER__SPARK_WORKER_WEBUI_PORTS"
            )
        elif "UnsupportedClassVersionError" in output:
            hint = "Spark 4 needs Java 17 or newer"
        elif "OutOfMemoryError" in output or "heap size" in output:
            hint = (
                "the heap is too small; raise SAFEWATCH_CLUSTER__SPARK_DAEMON_MEMORY "
                f"({s.spark_daemon_memory})"
            )
        else:
            hint = f"the logs in {self.data_dir}"
        return f"{output}\ncheck: {hint}"

    def _stop(self, daemons: Iterable[_Daemon], timeout_s: float) -> bool:
        pids = [(d, pid) for d in daemons if (pid := d.request_stop(self._log)) is not None]
        deadline = time.monotonic() + timeout_s
        for daemon, pid in pids:
            daemon.wait_stopped(pid, max(0.0, deadline - time.monotonic()), self._log)
        return bool(pids)
