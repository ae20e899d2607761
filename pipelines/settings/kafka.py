"""The settings of Kafka: the cluster the job reads and writes (`[kafka]`), the local broker
of `safewatch infra up` (`[broker]`) and the loopback cluster of `infra up --cluster`
(`[cluster]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from pipelines.settings.types import JvmMemory, Section


class KafkaSettings(Section):
    """The Kafka cluster the job reads and the producer writes: the local broker or any other."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of the Kafka cluster."
    )
    topic_interactions: str = Field(
        "safety.interactions.v1", description="Topic of interaction events (the job's input)."
    )
    topic_dlq: str = Field(
        "safety.interactions.dlq", description="Dead-letter topic for rejected events."
    )
    dlq_max_record_bytes: int = Field(
        1_000_000,
        ge=8_192,
        description="Largest dead-letter record value in bytes (larger payloads are cut); "
        "keep it under the broker's max.message.bytes (1048588 by default).",
    )
    topic_alerts: str = Field("safety.alerts.v1", description="Topic that alerts are published to.")
    partitions: int = Field(3, ge=1, description="Partitions of each topic Safewatch creates.")
    replication_factor: int = Field(
        1, ge=1, description="Replication factor of topics Safewatch creates."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol for every client."
    )
    sasl_mechanism: str | None = Field(
        None, description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) when SASL is used."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never printed).")
    ssl_cafile: str | None = Field(None, description="CA bundle (PEM) to verify the brokers.")
    client_options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Kafka client properties (Java names, e.g. request.timeout.ms), "
        "passed to Spark's Kafka source as kafka.<name>; values of secret-looking names "
        "(sasl.jaas.config, ssl.key.password, ...) are never printed.",
    )

    def spark_options(self) -> dict[str, str]:
        """Options for Spark's Kafka source/sink (`kafka.`-prefixed client properties)."""
        opts = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "kafka.security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["kafka.sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_username and self.sasl_password:
                module = (
                    "org.apache.kafka.common.security.plain.PlainLoginModule"
                    if self.sasl_mechanism == "PLAIN"
                    else "org.apache.kafka.common.security.scram.ScramLoginModule"
                )
                secret = self.sasl_password.get_secret_value()
                opts["kafka.sasl.jaas.config"] = (
                    f'{module} required username="{self.sasl_username}" password="{secret}";'
                )
        if self.ssl_cafile:
            opts["kafka.ssl.truststore.type"] = "PEM"
            opts["kafka.ssl.truststore.location"] = self.ssl_cafile
        opts.update({f"kafka.{k}": v for k, v in self.client_options.items()})
        return opts

    def python_client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (producer, admin, consumer)."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.ssl_cafile:
            opts["ssl_cafile"] = self.ssl_cafile
        return opts


class BrokerSettings(Section):
    """The local Kafka broker that `safewatch infra up` runs (KRaft, broker and controller)."""

    host: str = Field("127.0.0.1", description="Address the local broker listens on.")
    port: int = Field(9092, description="Client port of the local broker.")
    controller_port: int = Field(9093, description="KRaft controller port of the local broker.")
    data_dir: Path = Field(
        Path("var/kafka"), description="Log directory, config and pid file of the local broker."
    )
    jars_dir: Path = Field(
        Path("var/jars/kafka"), description="Where Maven copies the broker's jars."
    )
    heap: JvmMemory = Field("512m", description="JVM heap (-Xmx) of the local broker.")
    start_timeout_s: float = Field(60.0, description="Seconds to wait for the broker to listen.")
    node_id: int = Field(
        1, ge=1, description="KRaft node.id (a node of `infra up --cluster` has its own)."
    )
    quorum_voters: str = Field(
        "",
        description="controller.quorum.voters as id@host:port,...; empty: this node alone "
        "(`infra up --cluster` lists every node of the cluster).",
    )
    replication_factor: int = Field(
        1,
        ge=1,
        description="default.replication.factor and the replication factor of the internal "
        "topics (consumer offsets, transactions).",
    )
    min_insync_replicas: int = Field(
        1, ge=1, description="min.insync.replicas: replicas that must have a write with acks=all."
    )

    @model_validator(mode="after")
    def _replicas(self) -> BrokerSettings:
        if self.min_insync_replicas > self.replication_factor:
            msg = "min_insync_replicas cannot exceed replication_factor"
            raise ValueError(msg)
        return self


_PORT_LISTS = (
    "kafka_ports",
    "kafka_controller_ports",
    "spark_worker_ports",
    "spark_worker_webui_ports",
)


class ClusterSettings(Section):
    """The loopback cluster of `infra up --cluster`: KRaft brokers, a Spark master, workers."""

    host: str = Field("127.0.0.1", description="Address every process of the cluster binds to.")
    kafka_ports: Annotated[tuple[int, ...], NoDecode] = Field(
        (29092, 29094, 29096),
        description="Client ports of the brokers, one per node (node ids 1, 2, 3, ... in this "
        "order); the job's kafka.bootstrap_servers lists them.",
    )
    kafka_controller_ports: Annotated[tuple[int, ...], NoDecode] = Field(
        (29093, 29095, 29097),
        description="KRaft controller ports, one per node: every node is broker and controller.",
    )
    kafka_data_dir: Path = Field(
        Path("var/kafka-cluster"),
        description="The cluster id and a node-<id>/ folder per broker (config, log dirs, pid "
        "and log files).",
    )
    kafka_heap: JvmMemory = Field("512m", description="JVM heap (-Xmx) of each broker.")
    kafka_replication_factor: int = Field(
        3,
        ge=1,
        description="default.replication.factor, the replication factor of the internal topics "
        "and of the topics `infra up --cluster` creates.",
    )
    kafka_min_insync_replicas: int = Field(
        2,
        ge=1,
        description="min.insync.replicas: a write with acks=all needs this many replicas, so "
        "the cluster keeps accepting writes with one broker down.",
    )
    spark_data_dir: Path = Field(
        Path("var/spark-cluster"),
        description="Config, pid and log files of the Spark master and workers, and the "
        "workers' work dirs (executor logs).",
    )
    spark_master_port: int = Field(
        7077, ge=1, le=65535, description="Port of the Spark master (spark://host:port)."
    )
    spark_master_webui_port: int = Field(
        8080, ge=1, le=65535, description="Port of the master's web UI and its /json/ status."
    )
    spark_worker_ports: Annotated[tuple[int, ...], NoDecode] = Field(
        (7078, 7079),
        description="RPC port of each worker; as many workers start as ports are listed.",
    )
    spark_worker_webui_ports: Annotated[tuple[int, ...], NoDecode] = Field(
        (8081, 8082), description="Web UI port of each worker, in the same order."
    )
    spark_worker_cores: int = Field(1, ge=1, description="Cores each worker offers to executors.")
    spark_worker_memory: JvmMemory = Field(
        "1g",
        description="Memory each worker offers to executors (spark.executor.memory fits in it).",
    )
    spark_daemon_memory: JvmMemory = Field(
        "512m", description="JVM heap of the master and of each worker process (not executors)."
    )
    start_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Seconds to wait for the brokers to serve clients, or for the master to "
        "report every worker ALIVE.",
    )

    @field_validator(*_PORT_LISTS, mode="before")
    @classmethod
    def _split_ports(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator(*_PORT_LISTS)
    @classmethod
    def _valid_ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            msg = "at least one port is needed"
            raise ValueError(msg)
        if any(not 1 <= p <= 65535 for p in value):
            msg = f"ports must be between 1 and 65535, not {list(value)}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        if len(self.kafka_ports) != len(self.kafka_controller_ports):
            msg = "kafka_ports and kafka_controller_ports need one port per broker each"
            raise ValueError(msg)
        if len(self.spark_worker_ports) != len(self.spark_worker_webui_ports):
            msg = "spark_worker_ports and spark_worker_webui_ports need one port per worker each"
            raise ValueError(msg)
        if self.kafka_replication_factor > len(self.kafka_ports):
            msg = (
                f"kafka_replication_factor {self.kafka_replication_factor} needs at least as "
                f"many brokers; kafka_ports lists {len(self.kafka_ports)}"
            )
            raise ValueError(msg)
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            msg = "kafka_min_insync_replicas cannot exceed kafka_replication_factor"
            raise ValueError(msg)
        ports = [
            *self.kafka_ports,
            *self.kafka_controller_ports,
            self.spark_master_port,
            self.spark_master_webui_port,
            *self.spark_worker_ports,
            *self.spark_worker_webui_ports,
        ]
        twice = sorted({p for p in ports if ports.count(p) > 1})
        if twice:
            msg = f"port(s) {twice} are given to more than one process of the cluster"
            raise ValueError(msg)
        return self

    @property
    def bootstrap_servers(self) -> str:
        """host:port of every broker, comma-separated (for kafka.bootstrap_servers)."""
        return ",".join(f"{self.host}:{p}" for p in self.kafka_ports)

    @property
    def spark_master_url(self) -> str:
        """spark://host:port of the master (for spark.master)."""
        return f"spark://{self.host}:{self.spark_master_port}"
