"""The world a fault scenario runs in: a real Kafka broker, a real warehouse (an SQLite file
or a real PostgreSQL), optionally a real Alertmanager and a webhook receiver, and the job
itself, `safewatch run`, as a separate process in a process group of its own so that a
fault can `kill -9` the Python driver, its JVM and Spark's Python workers together.

Everything listens on free loopback ports and keeps its data under the scenario's folder.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from pipelines.infra.alertmanager import LocalAlertmanager
from pipelines.infra.kafka_broker import LocalKafkaBroker
from pipelines.infra.kafka_cluster import LocalKafkaCluster
from pipelines.infra.postgres import LocalPostgres
from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_raw
from pipelines.settings import (
    AlertingSettings,
    BrokerSettings,
    KafkaSettings,
)
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.tables import Tables
from tests.integration.conftest import (
    CLUSTER_CLIENT_OPTIONS,
    _free_ports,
    local_kafka_cluster,
    postgres_folder,
)
from tests.integration.mixed_input import KINDS, Record, build_mixed_input
from tests.integration.streaming_support import describe_partitions

REPO = Path(__file__).resolve().parents[2]
MAX_MESSAGE_BYTES = 8192
JOB_TIMEOUT_S = 900.0  # one run of the job; a run that takes longer has stalled


def say(message: str) -> None:
    print(f"[faults] {message}", file=sys.stderr, flush=True)


# -- the input ---------------------------------------------------------------------------------


def build_input(seed: int, valid: int, broken_per_kind: int) -> list[Record]:
    """`valid` generated events and `broken_per_kind` records of each broken and poison kind
    of the hardening corpus (tests/integration/mixed_input.py), shuffled, each with its
    known fate.
    """
    rng = random.Random(seed)
    kinds = [k for k in KINDS for _ in range(broken_per_kind)]
    return build_mixed_input(
        rng, seed=seed, valid=valid, kinds=kinds, max_message_bytes=MAX_MESSAGE_BYTES
    )


# -- the services ------------------------------------------------------------------------------


class Webhook:
    """A webhook receiver on a fixed port that can be down (not listening) and up again;
    it records every notice it accepts.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[dict[str, Any]] = []
        self._server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.extend(json.loads(body)["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class World:
    """The services of one suite run; `warehouse` is "sqlite" or "postgresql"."""

    root: Path
    broker: LocalKafkaBroker
    kafka: KafkaSettings
    postgres: LocalPostgres | None = None
    alertmanager: LocalAlertmanager | None = None
    webhook: Webhook | None = None
    _databases: int = 0

    def warehouse_url(self, kind: str, name: str) -> str:
        """A new, empty warehouse of `kind` for scenario `name`."""
        if kind == "sqlite":
            return f"sqlite:///{self.root / name / 'warehouse.db'}"
        if self.postgres is None:
            msg = "this world has no PostgreSQL"
            raise RuntimeError(msg)
        self._databases += 1
        return self.postgres.create_database(f"{name.replace('-', '_')}_{self._databases}")


@contextmanager
def world(root: Path, *, postgres: bool = True, alertmanager: bool = True) -> Iterator[World]:
    """Start a broker (and PostgreSQL, Alertmanager) under `root`; stop them at the end."""
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        port, controller, pg_port, am_port, hook_port = _free_ports(5)
        broker = LocalKafkaBroker(
            BrokerSettings(
                host="127.0.0.1", port=port, controller_port=controller,
                data_dir=root / "kafka", jars_dir=REPO / "var" / "jars" / "kafka",
                start_timeout_s=180,
            ),
            log=lambda _m: None,
        )  # fmt: skip
        say("starting a Kafka broker")
        broker.start()
        stack.callback(broker.stop)
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=2)
        w = World(root, broker, kafka, webhook=Webhook(hook_port))
        stack.callback(w.webhook.stop)  # type: ignore[union-attr]
        if postgres:
            say("starting PostgreSQL")
            pg_folder = stack.enter_context(postgres_folder())
            w.postgres = LocalPostgres(pg_folder / "data", pg_port, log=lambda _m: None)
            w.postgres.start()
            stack.callback(w.postgres.stop, "immediate")
        if alertmanager:
            settings = AlertingSettings(
                alertmanager_url=f"http://127.0.0.1:{am_port}", alertmanager_port=am_port
            )
            w.alertmanager = LocalAlertmanager(settings, root / "alerting", log=lambda _m: None)
            stack.callback(w.alertmanager.stop)
        yield w


@contextmanager
def kafka_cluster(w: World, name: str) -> Iterator[tuple[World, LocalKafkaCluster]]:
    """Three KRaft brokers (replication 3, min.insync.replicas 2) with their storage in
    `w.root`/`name`, and `w` with its Kafka settings pointing at them; stopped at the end.
    """
    say("starting a Kafka cluster of three brokers")
    with local_kafka_cluster(w.root / name / "kafka") as (kafka, cluster):
        kafka = kafka.model_copy(update={"client_options": CLUSTER_CLIENT_OPTIONS})
        yield replace(w, kafka=kafka), cluster


def partition_leader(kafka: KafkaSettings, topic: str, partition: int) -> int:
    """The node id that leads `partition` of `topic`."""
    (leader,) = [
        p["leader"] for p in describe_partitions(kafka, topic) if p["partition"] == partition
    ]
    return int(leader)


# -- the job -----------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One scenario's topics, folders, warehouse and job settings (as environment)."""

    name: str
    world: World
    warehouse: str  # sqlite | postgresql
    records: list[Record]
    max_offsets: int
    channels: tuple[str, ...] = ("kafka",)
    extra_env: dict[str, str] = field(default_factory=dict)
    url: str = ""  # the warehouse; default: a new one of `warehouse` (World.warehouse_url)

    def __post_init__(self) -> None:
        self.dir = self.world.root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        suffix = f"{self.name}-{os.urandom(3).hex()}"
        self.topic = f"faults.in.{suffix}"
        self.dlq = f"faults.dlq.{suffix}"
        self.alerts = f"faults.alerts.{suffix}"
        self.url = self.url or self.world.warehouse_url(self.warehouse, self.name)
        self.checkpoint = self.dir / "checkpoint"
        self.dedup = self.dir / "dedup"
        self.runs = 0
        self.engine: Engine = make_engine(self.url)
        migrate(self.engine, log=lambda _m: None)
        self.tables = Tables(self.engine)

    def produce(self) -> None:
        ensure_topics(self.world.kafka, [self.topic, self.dlq, self.alerts], log=lambda _m: None)
        produce_raw(self.world.kafka, self.topic, [r.payload for r in self.records])

    def env(self) -> dict[str, str]:
        a = self.world.alertmanager
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEWATCH_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS": self.world.kafka.bootstrap_servers,
                "SAFEWATCH_KAFKA__REPLICATION_FACTOR": str(self.world.kafka.replication_factor),
                "SAFEWATCH_KAFKA__CLIENT_OPTIONS": json.dumps(self.world.kafka.client_options),
                "SAFEWATCH_KAFKA__TOPIC_INTERACTIONS": self.topic,
                "SAFEWATCH_KAFKA__TOPIC_DLQ": self.dlq,
                "SAFEWATCH_KAFKA__TOPIC_ALERTS": self.alerts,
                "SAFEWATCH_STREAM__CHECKPOINT_DIR": str(self.checkpoint),
                "SAFEWATCH_STREAM__MAX_OFFSETS_PER_TRIGGER": str(self.max_offsets),
                "SAFEWATCH_STREAM__WATERMARK": "1 day",
                "SAFEWATCH_CONTRACT__DEDUP_STATE_DIR": str(self.dedup),
                "SAFEWATCH_CONTRACT__MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
                "SAFEWATCH_WAREHOUSE__URL": self.url,
                "SAFEWATCH_WAREHOUSE__RETRY_MAX_S": "4",
                "SAFEWATCH_ALERTING__CHANNELS": ",".join(self.channels),
                "SAFEWATCH_ALERTING__ALERTMANAGER_URL": a.url if a else "http://127.0.0.1:9",
                "SAFEWATCH_ALERTING__DELIVER_INTERVAL_S": "2",
                "SAFEWATCH_ALERTING__RETRY_INITIAL_S": "1",
                "SAFEWATCH_ALERTING__RETRY_MAX_S": "2",
            }
        )
        if self.world.webhook is not None and "webhook" in self.channels:
            env["SAFEWATCH_ALERTING__NOTIFY_WEBHOOK_URL"] = self.world.webhook.url
        env.update(self.extra_env)
        return env

    def job(
        self,
        *,
        crash_at: str | None = None,
        continuous: bool = False,
        max_file_bytes: int | None = None,
    ) -> Job:
        self.runs += 1
        env = self.env()
        if crash_at:
            env["SAFEWATCH_CRASH_AT"] = crash_at
        if continuous:  # a batch every 2 s, not every 30 s: the scenario waits for them
            env["SAFEWATCH_STREAM__TRIGGER_INTERVAL"] = "2 seconds"
        return Job(
            env, self.dir / f"run-{self.runs}.log", continuous=continuous,
            max_file_bytes=max_file_bytes,
        ).start()  # fmt: skip

    def committed_batches(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(self.tables.ledger)).scalar_one()
            )

    def committed_rows(self) -> int:
        with self.engine.connect() as conn:
            total = conn.execute(select(func.sum(self.tables.ledger.c.input_rows))).scalar()
        return int(total or 0)


class Job:
    """`safewatch run` in a session (process group) of its own, its output in `log_path`."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        continuous: bool,
        max_file_bytes: int | None = None,
    ) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.continuous = continuous
        # RLIMIT_FSIZE of the job's processes: no file it writes may grow past this, as on
        # a full disk (a write past it fails with EFBIG; Python and the JVM ignore SIGXFSZ).
        self.max_file_bytes = max_file_bytes
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Job:
        args = [sys.executable, "-m", "jobs.cli", "run", "--no-metrics"]
        if not self.continuous:
            args.append("--until-caught-up")
        log = self.log_path.open("wb")
        limit = self.max_file_bytes

        def limit_files() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        self.proc = subprocess.Popen(
            args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=limit_files if limit is not None else None,
        )  # fmt: skip
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout_s: float = JOB_TIMEOUT_S) -> int | None:
        """The exit code, or None if it still runs after `timeout_s` (stalled)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the job's whole process group: driver, JVM and workers at once."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait(60)

    def interrupt(self, timeout_s: float = 120) -> int | None:
        """Ctrl-C, as a person stops a continuous job; the exit code (None: it hung)."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGINT)
        code = self.wait(timeout_s)
        if code is None:
            self.kill()
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def last_line(self) -> str:
        lines = [line for line in self.output().splitlines() if line.strip()]
        return lines[-1] if lines else ""


def wait_for(
    condition: Callable[[], bool], timeout_s: float, *, every_s: float = 0.2, what: str = ""
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with suppress(Exception):  # a warehouse that is down or being created
            if condition():
                return True
        time.sleep(every_s)
    if what:
        say(f"gave up waiting for {what} after {timeout_s:g} s")
    return False
