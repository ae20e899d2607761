"""Session fixtures of the integration tests: real services, started once per test session.

Each service runs on free loopback ports with its data in a pytest temporary directory, so a
test session never touches `var/` or a developer's running broker. Tests mark themselves
`pytest.mark.integration`; nothing here is marked.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from pipelines.infra.kafka_broker import LocalKafkaBroker
from pipelines.infra.kafka_cluster import LocalKafkaCluster
from pipelines.settings import BrokerSettings, ClusterSettings, KafkaSettings
from pipelines.stream.session import close_kafka_producers

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_JARS = REPO_ROOT / "var" / "jars" / "kafka"


def _free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        # Bind all before closing any, so the kernel cannot hand out the same port twice.
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


# -- Kafka ------------------------------------------------------------------------------------


class KafkaHarness(NamedTuple):
    kafka: KafkaSettings  # points at `broker`; topics get 2 partitions
    broker: LocalKafkaBroker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHarness]:
    """One real Kafka broker for the whole session, stopped at the end."""
    port, controller_port = _free_ports(2)
    settings = BrokerSettings(
        host="127.0.0.1",
        port=port,
        controller_port=controller_port,
        data_dir=tmp_path_factory.mktemp("kafka"),
        jars_dir=KAFKA_JARS,
        start_timeout_s=120,  # generous: CI machines start the JVM slowly
    )
    broker = LocalKafkaBroker(settings)
    try:
        broker.start()
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=2)
        yield KafkaHarness(kafka=kafka, broker=broker)
    finally:
        close_kafka_producers()  # Spark's, which would call for the stopped broker
        broker.stop()


@pytest.fixture
def unique_topic() -> Callable[[str], str]:
    """Makes topic names no other test (or earlier run) uses: `unique_topic("events")`."""
    return lambda prefix: f"{prefix}.{uuid.uuid4().hex[:12]}"


class KafkaClusterHarness(NamedTuple):
    kafka: KafkaSettings  # lists every node; topics get 3 partitions, each on all 3 brokers
    cluster: LocalKafkaCluster


# A Kafka client call already sent to a broker that dies waits for it until its timeout (60 s
# by default) before it is tried against the new leader: keep the wait short on a cluster
# whose brokers the tests kill.
CLUSTER_CLIENT_OPTIONS = {"request.timeout.ms": "10000", "default.api.timeout.ms": "20000"}


@contextmanager
def local_kafka_cluster(data_dir: Path) -> Iterator[KafkaClusterHarness]:
    """Three real KRaft brokers (each also a controller) on free loopback ports, their
    storage in `data_dir`; stopped at the end. Topics get 3 partitions on all 3 brokers.
    """
    ports = _free_ports(6)
    settings = ClusterSettings(
        kafka_ports=tuple(ports[:3]),
        kafka_controller_ports=tuple(ports[3:]),
        kafka_data_dir=data_dir,
        start_timeout_s=180,  # three JVMs at once on a small machine
    )
    cluster = LocalKafkaCluster(settings, jars_dir=KAFKA_JARS, log=lambda _m: None)
    try:
        cluster.start()
        yield KafkaClusterHarness(
            kafka=cluster.kafka_settings(KafkaSettings(partitions=3)), cluster=cluster
        )
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaClusterHarness]:
    """The cluster of `local_kafka_cluster` for the session.

    Replication factor 3 and min.insync.replicas 2: writes and reads go on with one broker
    down. `.cluster.kill(node_id)` crashes a node, `.cluster.restart(node_id)` brings it back.
    """
    with local_kafka_cluster(tmp_path_factory.mktemp("kafka-cluster")) as harness:
        yield harness


# -- Spark ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (local[2], 2 shuffle partitions) for the whole test session."""
    from pipelines.settings import SparkSettings
    from pipelines.stream.session import build_session

    session = build_session(
        SparkSettings(
            app_name="safewatch-tests",
            jars_dir=REPO_ROOT / "var" / "jars" / "spark",
            conf={"spark.sql.streaming.minBatchesToRetain": "10"},
        )
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real Spark standalone master with two workers (1 core, 1 GiB each) on free loopback
    ports, from the pyspark package; `.master_url` is the job's spark.master.

    A job on it must run in another process: this process's `spark` session is local.
    """
    from pipelines.infra.spark_cluster import LocalSparkCluster

    ports = _free_ports(6)
    settings = ClusterSettings(
        spark_master_port=ports[0],
        spark_master_webui_port=ports[1],
        spark_worker_ports=tuple(ports[2:4]),
        spark_worker_webui_ports=tuple(ports[4:6]),
        spark_data_dir=tmp_path_factory.mktemp("spark-cluster"),
        start_timeout_s=180,
    )
    cluster = LocalSparkCluster(settings, log=lambda _m: None)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# -- PostgreSQL -------------------------------------------------------------------------------


@contextmanager
def postgres_folder() -> Iterator[Path]:
    """A folder for a PostgreSQL server's data, removed at the end: directly under the
    system's temporary folder, not pytest's. Pytest resets its own root to 0700 whenever
    another pytest session starts on the machine, and a server running as the postgres user
    would lose its data directory mid-run.
    """
    folder = Path(tempfile.mkdtemp(prefix="safewatch-pg-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's package) on a free port; `.create_database(name)`."""
    from pipelines.infra.postgres import LocalPostgres

    (port,) = _free_ports(1)
    with postgres_folder() as folder:
        server = LocalPostgres(folder / "data", port, log=lambda _m: None)
        server.start()
        try:
            yield server
        finally:
            server.stop()


# -- Alertmanager -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory):
    """A real Alertmanager (Debian's package) on a free port, no webhook; `.url` is its API."""
    from pipelines.infra.alertmanager import LocalAlertmanager
    from pipelines.settings import AlertingSettings

    (port,) = _free_ports(1)
    settings = AlertingSettings(alertmanager_url=f"http://127.0.0.1:{port}", alertmanager_port=port)
    server = LocalAlertmanager(settings, tmp_path_factory.mktemp("alerting"), log=lambda _m: None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- Prometheus -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory):
    """A real Prometheus (Debian's package) on a free port, evaluating alerts/prometheus/.

    It scrapes 127.0.0.1:`.settings.metrics_port` (a free port: serve the metrics under test
    there) every 5 s; its alerts go to a port nothing listens on. `.url` is its API.
    """
    from pipelines.infra.prometheus import LocalPrometheus
    from pipelines.settings import AlertingSettings

    port, metrics_port, alertmanager_port = _free_ports(3)
    settings = AlertingSettings(
        alertmanager_url=f"http://127.0.0.1:{alertmanager_port}",
        prometheus_port=port,
        metrics_port=metrics_port,
        prometheus_rules=str(REPO_ROOT / "alerts" / "prometheus" / "*.rules.yml"),
        start_timeout_s=60,
    )
    server = LocalPrometheus(settings, tmp_path_factory.mktemp("prometheus"), log=lambda _m: None)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- Scenario warehouse -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def scenario_warehouse(spark, tmp_path_factory: pytest.TempPathFactory):
    """An SQLite warehouse filled by the job's batch processor from an hour of synthetic
    traffic with all four demo incidents, alert rules of alerts/rules evaluated as the job
    does (tests/integration/scenario_warehouse.py). Read it; do not write to it.
    """
    from tests.integration.scenario_warehouse import build_scenario_warehouse

    warehouse = build_scenario_warehouse(spark, tmp_path_factory.mktemp("scenario"))
    try:
        yield warehouse
    finally:
        warehouse.engine.dispose()
