"""A KRaft Kafka cluster on one machine: one LocalKafkaBroker per node, all of one cluster id.

Node i (1, 2, 3, …) listens on `ClusterSettings.kafka_ports[i-1]` and is broker and
controller; `controller.quorum.voters` lists every node, so the cluster keeps serving while a
majority of the nodes runs. Its files are in `<kafka_data_dir>/node-<i>/`; the cluster id all
nodes are formatted with is kept in `<kafka_data_dir>/cluster.id`, so a node wiped and
restarted joins the same cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipelines.errors import InfraError
from pipelines.infra.kafka_broker import (
    BrokerStatus,
    LocalKafkaBroker,
    SettingNames,
    new_cluster_id,
)
from pipelines.settings import BrokerSettings, ClusterSettings, KafkaSettings

_NAMES = SettingNames(
    port="SAFEWATCH_CLUSTER__KAFKA_PORTS",
    controller_port="SAFEWATCH_CLUSTER__KAFKA_CONTROLLER_PORTS",
    data_dir="SAFEWATCH_CLUSTER__KAFKA_DATA_DIR",
    heap="SAFEWATCH_CLUSTER__KAFKA_HEAP",
    start_timeout_s="SAFEWATCH_CLUSTER__START_TIMEOUT_S",
)


class LocalKafkaCluster:
    """Starts, stops, kills and restarts the nodes of the cluster described by `settings`.

    `jars_dir` holds the broker's jars (setting broker.jars_dir); `log` receives progress
    messages. Relative paths are resolved against the working directory at construction.
    """

    def __init__(
        self,
        settings: ClusterSettings,
        *,
        jars_dir: Path,
        log: Callable[[str], None] = print,
        java: str | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.kafka_data_dir.expanduser().absolute()
        self._cluster_id_file = self.data_dir / "cluster.id"
        self._log = log
        s = settings
        voters = ",".join(
            f"{i}@{s.host}:{port}" for i, port in enumerate(s.kafka_controller_ports, start=1)
        )
        self._node_settings = [
            BrokerSettings(
                host=s.host,
                port=port,
                controller_port=controller_port,
                data_dir=self.data_dir / f"node-{i}",
                jars_dir=jars_dir.expanduser().absolute(),
                heap=s.kafka_heap,
                start_timeout_s=s.start_timeout_s,
                node_id=i,
                quorum_voters=voters,
                replication_factor=s.kafka_replication_factor,
                min_insync_replicas=s.kafka_min_insync_replicas,
            )
            for i, (port, controller_port) in enumerate(
                zip(s.kafka_ports, s.kafka_controller_ports, strict=True), start=1
            )
        ]
        self._java = java
        self._nodes: dict[int, LocalKafkaBroker] = {}

    @property
    def node_ids(self) -> list[int]:
        return [n.node_id for n in self._node_settings]

    @property
    def bootstrap_servers(self) -> str:
        """host:port of every node, comma-separated."""
        return self.settings.bootstrap_servers

    def kafka_settings(self, base: KafkaSettings | None = None) -> KafkaSettings:
        """`base` (default: the defaults) pointed at this cluster, topics fully replicated."""
        return (base or KafkaSettings()).model_copy(
            update={
                "bootstrap_servers": self.bootstrap_servers,
                "replication_factor": self.settings.kafka_replication_factor,
            }
        )

    def node(self, node_id: int) -> LocalKafkaBroker:
        """The broker of node `node_id` (1-based, in the order of kafka_ports)."""
        if node_id not in self.node_ids:
            msg = f"the Kafka cluster has nodes {self.node_ids}, not {node_id}"
            raise InfraError(msg)
        cluster_id = self._read_cluster_id()
        node = self._nodes.get(node_id)
        if node is None or node.cluster_id != cluster_id:
            node = self._nodes[node_id] = LocalKafkaBroker(
                self._node_settings[node_id - 1],
                log=self._log,
                java=self._java,
                cluster_id=cluster_id,
                name=f"Kafka node {node_id}",
                setting_names=_NAMES,
            )
        return node

    def start(self) -> list[BrokerStatus]:
        """Start every node that is not running; return once each serves clients.

        All nodes are launched before waiting on any: a node serves only once a majority of
        the controllers runs. Raises InfraError (quoting the failing node's log) when a node
        exits or is not ready within start_timeout_s; the nodes started are then stopped.
        """
        self._ensure_cluster_id()
        started = []
        for node_id in self.node_ids:
            node = self.node(node_id)
            if not node.status().running:
                node.start(wait=False)
                started.append(node)
        try:
            for node in started:
                node.wait_ready()
        except InfraError:
            for node in started:
                node.stop(timeout_s=10)
            raise
        self._log(
            f"Kafka cluster of {len(self.node_ids)} nodes serving on {self.bootstrap_servers}"
        )
        return self.status()

    def stop(self, timeout_s: float = 30) -> bool:
        """Stop every node (SIGTERM, SIGKILL after `timeout_s`); True if any was running.

        All nodes are signalled before waiting on any, so each can still reach a quorum of
        controllers for its controlled shutdown. Nodes still running once fewer than a majority
        remain can never get one (no controller is left to grant it): they are killed.
        """
        nodes = [self.node(i) for i in self.node_ids]
        running = [n for n in nodes if n.request_stop()]
        majority = len(nodes) // 2 + 1
        deadline = time.monotonic() + timeout_s
        while running and time.monotonic() < deadline:
            alive = [n for n in running if n.status().running]
            if not alive:
                break
            if len(alive) < majority:
                for node in alive:
                    node.kill()
                break
            time.sleep(0.2)
        for node in running:
            node.wait_stopped(max(0.0, deadline - time.monotonic()))
        return bool(running)

    def kill(self, node_id: int) -> int | None:
        """SIGKILL node `node_id` as a crash would; the pid killed, None if it did not run."""
        return self.node(node_id).kill()

    def restart(self, node_id: int) -> BrokerStatus:
        """Start node `node_id` again (after `kill` or a stop) on its storage; wait until ready."""
        self._ensure_cluster_id()
        return self.node(node_id).start()

    def status(self) -> list[BrokerStatus]:
        """The state of every node; changes nothing."""
        return [self.node(i).status() for i in self.node_ids]

    def _read_cluster_id(self) -> str | None:
        try:
            return self._cluster_id_file.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def _ensure_cluster_id(self) -> None:
        """Create the cluster id once, before any node formats its storage with it."""
        if self._read_cluster_id() is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._cluster_id_file.write_text(f"{new_cluster_id()}\n", encoding="utf-8")
