"""Every setting of Safewatch, in one typed, frozen object.

Built once by an entry point (`Settings.load`) from, in increasing precedence: the defaults
below, a TOML file (`--config`, `$SAFEWATCH_CONFIG`, or `./safewatch.toml` when present), and
environment variables `SAFEWATCH_<SECTION>__<NAME>` (e.g. `SAFEWATCH_KAFKA__BOOTSTRAP_SERVERS`).
Library code receives the object; no module reads the environment by itself.
`safewatch config docs` prints the reference generated from the descriptions below.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipelines.durations import parse_duration, spark_interval
from pipelines.errors import ConfigError
from pipelines.metrics.catalog import RATES
from pipelines.redact import is_secret_key, redact_text, redact_tree
from pipelines.segments import SEGMENT_DIMENSIONS


def _duration(text: str) -> str:
    """`text` if it reads as a positive duration ("5 minutes", "30 seconds", "1 hour")."""
    spark_interval(text)  # ValueError naming the problem: unreadable, or not positive
    return text


def _go_duration(text: str) -> str:
    """`text` if it is a duration as Alertmanager reads it: "0s", "30s", "5m", "1h30m"."""
    if not _GO_DURATION.fullmatch(text):
        msg = f"cannot read duration {text!r}: use Alertmanager's form, e.g. '30s', '5m', '1h'"
        raise ValueError(msg)
    return text


def _positive_go_duration(text: str) -> str:
    """As `_go_duration`, and more than zero (Alertmanager refuses a zero interval)."""
    if not any(ch in "123456789" for ch in _go_duration(text)):
        msg = f"duration {text!r} must be more than zero"
        raise ValueError(msg)
    return text


def _jvm_memory(text: str) -> str:
    """`text` if the JVM reads it as a memory size (-Xmx): "512m", "2g"."""
    if not _JVM_MEMORY.fullmatch(text):
        msg = f"{text!r} is not a JVM memory size such as 512m or 1g"
        raise ValueError(msg)
    return text


_GO_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
_JVM_MEMORY = re.compile(r"[1-9]\d*[kKmMgGtT]?")
# A positive duration as Safewatch reads it (pipelines/durations.py), kept as written.
Duration = Annotated[str, AfterValidator(_duration)]
GoDuration = Annotated[str, AfterValidator(_go_duration)]
PositiveGoDuration = Annotated[str, AfterValidator(_positive_go_duration)]
JvmMemory = Annotated[str, AfterValidator(_jvm_memory)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
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


class BrokerSettings(_Section):
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


# At most this many slices per window (stream.early_slice): each is tested at a share of the
# early error level, so more slices make every test slower to fire.
MAX_SLICES = 12


def _default_slice(window_s: float) -> str:
    """The default `stream.early_slice` of a window: 1 minute when it fits, else the
    shortest whole number of minutes that divides the window into at most MAX_SLICES, else
    the window itself (no slices).
    """
    for minutes in range(1, int(window_s // 60) + 1):
        piece = minutes * 60
        if window_s % piece == 0 and window_s / piece <= MAX_SLICES:
            return "1 minute" if minutes == 1 else f"{minutes} minutes"
    return f"{window_s:g} seconds"


_PORT_LISTS = (
    "kafka_ports",
    "kafka_controller_ports",
    "spark_worker_ports",
    "spark_worker_webui_ports",
)


class ClusterSettings(_Section):
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


class SparkSettings(_Section):
    """The Spark session the jobs run in: local by default, a cluster by changing `master`."""

    master: str = Field(
        "local[2]", description="Spark master URL (local[N], spark://…, yarn, k8s://…)."
    )
    app_name: str = Field("safewatch-aggregator", description="Spark application name.")
    shuffle_partitions: int = Field(
        2,
        ge=1,
        description="spark.sql.shuffle.partitions. Fixed by the checkpoint once a query ran.",
    )
    driver_memory: JvmMemory = Field(
        "1g",
        description="spark.driver.memory: heap of the driver JVM that the job starts (in local "
        "mode it runs the executors too).",
    )
    executor_memory: JvmMemory = Field(
        "1g",
        description="spark.executor.memory of each executor on a cluster master (must fit in "
        "what a worker or container offers).",
    )
    executor_cores: int = Field(
        1, ge=1, description="spark.executor.cores: task slots of each executor on a cluster."
    )
    max_cores: int | None = Field(
        None,
        ge=1,
        description="spark.cores.max: most cores the job takes from a standalone master "
        "(unset: all it offers).",
    )
    jars_dir: Path = Field(
        Path("var/jars/spark"),
        description="Where Maven copies Spark's Kafka connector (spark-sql-kafka-0-10) and deps.",
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Spark configuration, passed as-is; values of secret-looking names "
        "(...secret.key, ...password, ...token) are never printed.",
    )
    log_level: Annotated[
        Literal["ALL", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = Field("WARN", description="Spark's log level.")


class StreamSettings(_Section):
    """The streaming aggregation: triggers, windows and grouping."""

    checkpoint_dir: str = Field(
        "var/checkpoints/aggregator",
        description="Checkpoint location of the streaming query (any Hadoop-supported URI).",
    )
    trigger_interval: Duration = Field(
        "30 seconds", description="Micro-batch interval of `safewatch run` (continuous mode)."
    )
    max_offsets_per_trigger: int = Field(
        50_000, ge=1, description="Back-pressure: at most this many records per micro-batch."
    )
    starting_offsets: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new checkpoint starts reading the topic."
    )
    window: Duration = Field("5 minutes", description="Event-time tumbling window length.")
    early_slice: Duration = Field(
        "1 minute",
        description="Early alerting keeps each window's alerting counters per slice of this "
        "length too, and tests spans starting at each slice as well as the whole window, so "
        "an incident that starts mid-window is not diluted by the minutes before it. Must "
        "divide the window into at most 12 slices; the window's own length turns slices off. "
        "Left unset with a window that 1-minute slices do not fit, the shortest whole number "
        "of minutes that does is used, else the window.",
    )
    watermark: Duration = Field(
        "10 minutes",
        description="How late an event may arrive; older events are counted as late, "
        "not aggregated.",
    )
    dimensions: Annotated[tuple[str, ...], NoDecode] = Field(
        ("product_surface", "model_version", "locale"),
        description="Segment dimensions aggregates are grouped by (any of the event's "
        "segment fields).",
    )

    max_values_per_dimension: int = Field(
        100,
        ge=1,
        description="Cardinality control: a grouped dimension keeps at most this many distinct "
        "values (the first admitted, most events first); later new values are counted as "
        "`other`.",
    )
    max_values: dict[str, int] = Field(
        default_factory=dict,
        description="Per-dimension overrides of max_values_per_dimension, e.g. "
        "{model_version = 40}.",
    )

    def value_limits(self) -> dict[str, int]:
        """The value limit of each grouped dimension."""
        return {d: self.max_values.get(d, self.max_values_per_dimension) for d in self.dimensions}

    @field_validator("max_values")
    @classmethod
    def _known_limits(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = [d for d in value if d not in SEGMENT_DIMENSIONS]
        if unknown:
            msg = f"max_values names unknown dimension(s) {unknown}"
            raise ValueError(msg)
        if any(v < 1 for v in value.values()):
            msg = "max_values must be at least 1"
            raise ValueError(msg)
        return value

    @model_validator(mode="before")
    @classmethod
    def _slice_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "early_slice" not in data:
            try:
                window = parse_duration(str(data.get("window", "5 minutes"))).total_seconds()
            except ValueError:
                return data  # reported by the check below
            if window > 0:
                data = {**data, "early_slice": _default_slice(window)}
        return data

    @model_validator(mode="after")
    def _slices(self) -> StreamSettings:
        window = parse_duration(self.window).total_seconds()
        piece = parse_duration(self.early_slice).total_seconds()
        if window <= 0 or piece <= 0 or window % piece or piece != int(piece):
            msg = (
                f"early_slice ({self.early_slice!r}) must be a whole number of seconds that "
                f"divides window ({self.window!r}), e.g. '1 minute' for a 5-minute window"
            )
            raise ValueError(msg)
        if window / piece > MAX_SLICES:
            msg = (
                f"early_slice ({self.early_slice!r}) cuts window ({self.window!r}) into "
                f"{window / piece:g} slices; at most {MAX_SLICES}: use a longer early_slice"
            )
            raise ValueError(msg)
        return self

    @field_validator("dimensions", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("dimensions")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [d for d in value if d not in SEGMENT_DIMENSIONS]
        if unknown:
            msg = f"unknown segment dimension(s) {unknown}; choose from {list(SEGMENT_DIMENSIONS)}"
            raise ValueError(msg)
        if not value:
            msg = "at least one segment dimension is needed"
            raise ValueError(msg)
        return tuple(dict.fromkeys(value))


class ContractSettings(_Section):
    """What the job accepts; everything else goes to the dead-letter topic with a reason."""

    max_message_bytes: int = Field(
        65_536, ge=1024, description="Larger Kafka messages are rejected (message_too_large)."
    )
    max_future: Duration = Field(
        "5 minutes",
        description="An event_time further ahead of the Kafka record's timestamp is rejected "
        "(event_time_out_of_range).",
    )
    max_age: Duration = Field(
        "7 days",
        description="An event_time further behind the Kafka record's timestamp is rejected "
        "(event_time_out_of_range).",
    )
    dedup_state_dir: str = Field(
        "var/state/dedup",
        description="Where the job keeps the event ids of recent batches to drop duplicates "
        "within the watermark: a local path (read and written by the driver) or any other "
        "Hadoop-supported URI (through Spark). Keep it with the checkpoint.",
    )


class PrivacySettings(_Section):
    """Privacy controls on what analysts see, and the public contacts the PII screen accepts."""

    min_distinct_users: int = Field(
        20,
        ge=1,
        description="k of k-anonymity: analyst views hide window x segment rows with fewer "
        "(approximately) distinct users.",
    )
    users_sketch_lg_k: int = Field(
        11,
        ge=4,
        le=21,
        description="log2 of the HyperLogLog buckets of the distinct-user sketch "
        "(11: about 2 % error, at most ~2 KB per row).",
    )
    pii_allowed_values: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Public contacts that are not personal data (helplines, support "
        "addresses), comma-separated, e.g. 1-800-273-8255,support@example.com: a PII hit whose "
        "text is one of them (compared normalised, ignoring case) is not a redaction failure.",
    )
    pii_allowed_patterns: tuple[str, ...] = Field(
        (),
        description="Python regular expressions; a PII hit whose whole (normalised) text one "
        "of them matches is allowed, e.g. ['[a-z]+@support[.]example[.]com'] (environment "
        "variable: a JSON list).",
    )

    @field_validator("pii_allowed_values", mode="before")
    @classmethod
    def _split_values(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("pii_allowed_patterns")
    @classmethod
    def _valid_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from pipelines.privacy.detectors import AllowList

        AllowList(patterns=value)  # raises ValueError naming the invalid pattern
        return value


class QualitySettings(_Section):
    """The Great Expectations suite run on every micro-batch."""

    enabled: bool = Field(True, description="Validate each micro-batch with the suite.")
    max_rows: int = Field(
        5_000,
        ge=100,
        description="Validate a deterministic sample of at most this many events per batch "
        "(bounds the cost of a large batch; 5,000 rows estimate each expectation's failure "
        "rate to within about 1.4 percentage points at 95 %).",
    )
    sample_seed: int = Field(0, description="Seed of the sample.")
    max_text_chars: int = Field(
        2_000,
        ge=100,
        description="Strings of the sample longer than this are cut to this many characters "
        "before the suite sees them (bounds the memory of a huge free text).",
    )


class DriftSettings(_Section):
    """Drift statistics and rate tests of each closed window x segment against a baseline."""

    enabled: bool = Field(True, description="Compute drift for every window the watermark closes.")
    baseline: Literal["trailing", "pinned"] = Field(
        "trailing",
        description="trailing: the `lookback` before each window; pinned: the fixed period "
        "pinned_from..pinned_to (e.g. a known-good week).",
    )
    lookback: Duration = Field(
        "7 days", description="Length of the trailing baseline (e.g. '7 days', '24 hours')."
    )
    pinned_from: datetime | None = Field(
        None, description="Start of the pinned baseline period (UTC, ISO 8601)."
    )
    pinned_to: datetime | None = Field(
        None, description="End (exclusive) of the pinned baseline period (UTC, ISO 8601)."
    )
    reference_segment: dict[str, str] = Field(
        default_factory=dict,
        description="Compare each segment with the same segment but these dimension values, "
        "e.g. {model_version = 'atlas-l-2026.10.1'} to measure drift against the previous "
        "model; empty: each segment's own history.",
    )
    min_events: int = Field(
        30,
        ge=1,
        description="A statistic needs at least this many events (or rate denominator) in the "
        "window and in the baseline; otherwise it is stored with status insufficient_data.",
    )
    psi_epsilon: float = Field(
        1e-4,
        gt=0,
        lt=0.01,
        description="Proportion used in place of 0 for an empty bin in PSI (keeps it finite).",
    )

    @field_validator("reference_segment")
    @classmethod
    def _known_dimensions(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [d for d in value if d not in SEGMENT_DIMENSIONS]
        if unknown:
            msg = f"reference_segment names unknown dimension(s) {unknown}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _pinned_period(self) -> DriftSettings:
        if self.baseline == "pinned":
            if self.pinned_from is None or self.pinned_to is None:
                msg = "baseline = 'pinned' needs pinned_from and pinned_to"
                raise ValueError(msg)
            if self.pinned_from.tzinfo is None or self.pinned_to.tzinfo is None:
                msg = "pinned_from and pinned_to need a time zone (e.g. 2026-11-01T00:00:00Z)"
                raise ValueError(msg)
            if self.pinned_from >= self.pinned_to:
                msg = "pinned_from must be before pinned_to"
                raise ValueError(msg)
        return self


class WarehouseSettings(_Section):
    """Where aggregates go: an SQLite file by default, PostgreSQL in production."""

    url: SecretStr = Field(
        SecretStr("sqlite:///var/warehouse.db"),
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host/db (never printed).",
    )
    query_timeout_s: float = Field(
        30.0,
        gt=0,
        description="`safewatch query` cancels a statement that runs longer than this "
        "(PostgreSQL statement_timeout, SQLite progress handler).",
    )
    query_allow_writer_login: bool = Field(
        False,
        description="Let `safewatch query` run as a PostgreSQL login that can write or signal "
        "other sessions (superuser, table owner, pg_signal_backend), with a warning; by default "
        "it refuses: use the analyst login.",
    )
    retry_budget_s: float = Field(
        300.0,
        ge=0,
        description="How long the job keeps trying when the warehouse cannot be reached (a "
        "restart, a failover), from the first failure, before it stops with an error; each "
        "batch's commit is one transaction, tried again whole. 0: stop at the first failure.",
    )
    retry_initial_s: float = Field(
        1.0,
        gt=0,
        description="The first wait between two tries while the warehouse cannot be reached; "
        "each wait doubles, up to warehouse.retry_max_s.",
    )
    retry_max_s: float = Field(
        30.0,
        gt=0,
        description="The longest wait between two tries while the warehouse cannot be reached.",
    )

    @model_validator(mode="after")
    def _retry_waits(self) -> WarehouseSettings:
        if self.retry_max_s < self.retry_initial_s:
            msg = (
                f"retry_max_s ({self.retry_max_s:g}) must be at least retry_initial_s "
                f"({self.retry_initial_s:g})"
            )
            raise ValueError(msg)
        return self


_PROM_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")


class AlertingSettings(_Section):
    """Alert rules, where alerts go, and the local Alertmanager and Prometheus (tests, trials)."""

    rules: Annotated[tuple[str, ...], NoDecode] = Field(
        ("alerts/rules",),
        description="Alert rule files or directories (their *.yaml), evaluated for every "
        "window the job's watermark closes; see docs/alert-rules.md.",
    )
    evaluate: bool = Field(True, description="Evaluate the alert rules in the streaming job.")
    channels: Annotated[tuple[str, ...], NoDecode] = Field(
        ("alertmanager", "kafka"),
        description="Where alert notices go: alertmanager (API v2 at alertmanager_url), kafka "
        "(topic kafka.topic_alerts), webhook (notify_webhook_url). Undelivered notices wait in "
        "the warehouse's notification_outbox and are retried.",
    )
    notify_webhook_url: SecretStr | None = Field(
        None,
        description="URL Safewatch POSTs each alert notice to as JSON, for the webhook channel "
        "(never printed).",
    )
    retry_initial_s: float = Field(
        5.0, gt=0, description="Wait before retrying a failed delivery; doubles per failure."
    )
    retry_max_s: float = Field(300.0, gt=0, description="Longest wait between delivery retries.")
    deliver_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often the job delivers the outbox on its own, besides right after "
        "each batch: notices held by a channel that was down are sent once it is back, "
        "even when no events arrive.",
    )
    ttl_windows: int = Field(
        3,
        ge=1,
        description="A firing alert is sent with endsAt this many windows after its window: "
        "it is re-sent every window while firing, and expires if the job stops.",
    )
    runbook_base_url: str = Field(
        "",
        description="Prefix of runbook links in alerts, e.g. https://git.example.com/safewatch/"
        "blob/main/ (empty: the path in the repository, e.g. runbooks/X.md).",
    )

    @field_validator("rules", "channels", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in value if c not in ("alertmanager", "kafka", "webhook")]
        if unknown:
            msg = f"unknown alert channel(s) {unknown}; choose from alertmanager, kafka, webhook"
            raise ValueError(msg)
        return tuple(dict.fromkeys(value))

    alertmanager_url: str = Field(
        "http://127.0.0.1:9193",
        description="Base URL of the Alertmanager that receives alerts (API v2); the local "
        "instance is http://127.0.0.1:<alertmanager_port>. user:pass@ in it is sent as basic "
        "authentication and never printed.",
    )
    request_timeout_s: float = Field(
        10.0, gt=0, description="Seconds an HTTP call to Alertmanager may take."
    )
    alertmanager_port: int = Field(
        9193, ge=1, le=65535, description="Port of the local Alertmanager (web UI and API)."
    )
    prometheus_port: int = Field(
        9190, ge=1, le=65535, description="Port of the local Prometheus (web UI and API)."
    )
    metrics_port: int = Field(
        9108,
        ge=1,
        le=65535,
        description="Port of the streaming job's /metrics endpoint, scraped by the local "
        "Prometheus.",
    )
    data_dir: Path = Field(
        Path("var/alerting"),
        description="Config, data, pid and log files of the local Alertmanager and Prometheus.",
    )
    prometheus_rules: str = Field(
        "alerts/prometheus/*.rules.yml",
        description="Glob of the rule files the local Prometheus evaluates (relative: to the "
        "working directory).",
    )
    webhook_url: SecretStr | None = Field(
        None,
        description="Webhook the local Alertmanager notifies (e.g. a chat or paging hook; never "
        "printed); none: alerts are only kept in Alertmanager.",
    )
    group_wait: GoDuration = Field(
        "1s", description="Local Alertmanager: wait before the first notification of a group."
    )
    group_interval: PositiveGoDuration = Field(
        "5s",
        description="Local Alertmanager: wait before notifying changes (new or resolved alerts) "
        "of a group.",
    )
    repeat_interval: PositiveGoDuration = Field(
        "1h", description="Local Alertmanager: resend a still-firing alert after this long."
    )
    resolve_timeout: PositiveGoDuration = Field(
        "5m",
        description="Local Alertmanager: an alert posted without endsAt is resolved after this "
        "long without an update.",
    )
    start_timeout_s: float = Field(
        30.0, gt=0, description="Seconds to wait for the local Alertmanager or Prometheus."
    )

    @field_validator("group_wait", "group_interval", "repeat_interval", "resolve_timeout")
    @classmethod
    def _prometheus_duration(cls, value: str) -> str:
        if not value or not _PROM_DURATION.match(value):
            msg = f"{value!r} is not a Prometheus duration such as 30s, 5m, 1h30m or 2d"
            raise ValueError(msg)
        return value


# The targets of the report's KPIs unless report.targets overrides them: each rate's
# `default_target` in the metric catalog.
DEFAULT_KPI_TARGETS: dict[str, float] = {
    r.id: r.default_target for r in RATES if r.default_target is not None
}
# Mean time to mitigation targets of the KPI reference, in hours per severity.
DEFAULT_MTTR_TARGETS_HOURS: dict[str, float] = {"sev1": 4.0, "sev2": 24.0}
_SEVERITY = re.compile(r"^sev[1-4]$")


class ReportSettings(_Section):
    """The weekly safety-posture report for leadership (`safewatch report weekly`)."""

    out_dir: str = Field(
        "var/reports",
        description="Folder the report is written to (safety-posture-<week>.html and .md).",
    )
    targets: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_KPI_TARGETS),
        description="Target per KPI (catalog rate id -> proportion), each overridable alone, "
        "e.g. [report.targets] violation_rate = 0.002 or "
        "SAFEWATCH_REPORT__TARGETS__VIOLATION_RATE=0.002; the rest keep their defaults. A rate "
        "that is worse when higher must stay below its target, telemetry_completeness above "
        "it. Defaults are the example targets of the safety KPI reference: harmful output "
        "< 0.1 %, over-refusal (false-positive proxy) < 5 %, jailbreak success < 5 %, "
        "prompt-injection success < 1 %, unauthorized tool calls < 1 %, telemetry "
        "completeness > 98 %; PII leakage and redaction failures are 'near zero' there, "
        "taken as 0.01 %.",
    )
    min_events: int = Field(
        200,
        ge=1,
        description="Segments with fewer events in the week are not ranked among the top risks.",
    )
    top_segments: int = Field(
        5,
        ge=1,
        description="How many segments the report ranks as top risks. A segment with fewer "
        "distinct users in the week than privacy.min_distinct_users is never shown on its own "
        "(the report says how many were held back).",
    )
    mttr_targets: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_MTTR_TARGETS_HOURS),
        description="Time to resolve an alert, in hours per severity (sev1..sev4), each "
        "overridable alone; defaults are the mean-time-to-mitigation targets of the safety KPI "
        "reference (sev1 < 4 h, sev2 < 24 h).",
    )
    runbook_base_url: str = Field(
        "",
        description="Folder the report's runbook links point to, each link being this "
        "followed by <rule>.md: a URL, e.g. https://git.example.com/safewatch/blob/main/"
        "runbooks/ for a report that is mailed or shared, or a local folder. Empty: "
        "alerting.runbook_base_url followed by runbooks/ when that is set, else this "
        "repository's runbooks/ folder as a file:// URL, which opens from the report on the "
        "machine that wrote it.",
    )

    @field_validator("targets")
    @classmethod
    def _known_kpis(cls, value: dict[str, float]) -> dict[str, float]:
        valid = [r.id for r in RATES]
        unknown = sorted(k for k in value if k not in valid)
        if unknown:
            msg = f"report.targets names unknown KPI(s) {unknown}; valid rate ids: {valid}"
            raise ValueError(msg)
        outside = sorted(k for k, v in value.items() if not 0.0 <= v <= 1.0)
        if outside:
            msg = f"report.targets {outside} must be proportions between 0 and 1 (0.001 = 0.1 %)"
            raise ValueError(msg)
        return {**DEFAULT_KPI_TARGETS, **value}

    @field_validator("mttr_targets")
    @classmethod
    def _severities(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(k for k in value if not _SEVERITY.match(k))
        if unknown:
            msg = f"report.mttr_targets names unknown severities {unknown}; use sev1..sev4"
            raise ValueError(msg)
        if any(v <= 0 for v in value.values()):
            msg = "report.mttr_targets must be positive numbers of hours"
            raise ValueError(msg)
        return {**DEFAULT_MTTR_TARGETS_HOURS, **value}


class Settings(BaseSettings):
    """All settings; see `safewatch config docs`."""

    model_config = SettingsConfigDict(
        env_prefix="SAFEWATCH_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    broker: BrokerSettings = BrokerSettings()
    cluster: ClusterSettings = ClusterSettings()
    spark: SparkSettings = SparkSettings()
    stream: StreamSettings = StreamSettings()
    contract: ContractSettings = ContractSettings()
    privacy: PrivacySettings = PrivacySettings()
    quality: QualitySettings = QualitySettings()
    drift: DriftSettings = DriftSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    alerting: AlertingSettings = AlertingSettings()
    report: ReportSettings = ReportSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @classmethod
    def load(
        cls, config_file: str | Path | None = None, environ: dict[str, str] | None = None
    ) -> Settings:
        """Settings from `config_file` (or $SAFEWATCH_CONFIG, or ./safewatch.toml) and env vars.

        Raises ConfigError naming the file and the setting when a value is invalid.
        """
        env = os.environ if environ is None else environ
        _check_variable_names(env)
        path = config_file or env.get("SAFEWATCH_CONFIG")
        if path is None and Path("safewatch.toml").is_file():
            path = "safewatch.toml"
        if path is not None and not Path(path).is_file():
            msg = f"config file {path} does not exist"
            raise ConfigError(msg)
        _CONFIG_FILE["path"] = Path(path) if path else None
        try:
            if environ is None:
                return cls()
            saved = dict(os.environ)
            try:
                for key in [k for k in os.environ if k.startswith("SAFEWATCH_")]:
                    del os.environ[key]
                os.environ.update({k: v for k, v in environ.items() if k.startswith("SAFEWATCH_")})
                return cls()
            finally:
                os.environ.clear()
                os.environ.update(saved)
        except ValidationError as exc:
            where = f" (file {path})" if path else ""
            msg = f"invalid settings{where}: {_validation_message(exc)}"
            raise ConfigError(msg) from None  # pydantic's own text quotes every input, secrets too
        except ValueError as exc:
            where = f" (file {path})" if path else ""
            msg = f"invalid settings{where}: {exc}"
            raise ConfigError(msg) from exc
        finally:
            _CONFIG_FILE["path"] = None


_CONFIG_FILE: dict[str, Path | None] = {"path": None}
# SAFEWATCH_* variables that are not settings: the config file, the PostgreSQL role
# passwords of `warehouse roles`, the fault suite's crash points (pipelines/crashpoints.py).
OTHER_VARIABLES = frozenset(
    {"SAFEWATCH_CONFIG", "SAFEWATCH_WRITER_PASSWORD", "SAFEWATCH_ANALYST_PASSWORD",
     "SAFEWATCH_CRASH_AT"}
)  # fmt: skip


def _check_variable_names(env: Mapping[str, str]) -> None:
    """Refuse a SAFEWATCH_* variable that names no section: pydantic would ignore it, and
    the setting it was meant for would silently keep its default.
    """
    sections = sorted(Settings.model_fields)
    for name in sorted(env):
        if not name.startswith("SAFEWATCH_") or name in OTHER_VARIABLES:
            continue
        section, sep, key = name.removeprefix("SAFEWATCH_").partition("__")
        if sep and key and section.lower() in sections:
            continue  # an unknown key inside a known section is refused by the section
        if not sep or not key:
            msg = (
                f"environment variable {name} names no setting: settings are "
                f"SAFEWATCH_<SECTION>__<NAME>, e.g. SAFEWATCH_STREAM__WINDOW"
            )
        else:
            close = difflib.get_close_matches(section.lower(), sections, n=1)
            hint = f"did you mean SAFEWATCH_{close[0].upper()}__{key}? " if close else ""
            msg = (
                f"environment variable {name} names no settings section {section.lower()!r}: "
                f"{hint}sections: {', '.join(sections)}"
            )
        raise ConfigError(msg)


def _validation_message(exc: ValidationError) -> str:
    """Each error as `section.setting: reason (got value)`. The value is left out when it is
    not a plain scalar or belongs to a secret: a SecretStr field, or a secret-looking name on
    its path (`kafka.client_options.ssl.key.password`); URL credentials in it are masked.
    """
    parts = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        reason = error["msg"].removeprefix("Value error, ")  # a validator's own message
        text = f"{'.'.join(loc)}: {redact_text(reason)}"
        value = error.get("input")
        if isinstance(value, str | int | float) and not _is_secret_setting(loc):
            text += f" (got {redact_text(repr(value))})"
        parts.append(text)
    return "; ".join(parts)


def _is_secret_setting(loc: list[str]) -> bool:
    if any(is_secret_key(part) for part in loc):
        return True
    section = Settings.model_fields.get(loc[0]) if loc else None
    if section is None or len(loc) < 2:
        return False
    assert isinstance(section.annotation, type) and issubclass(section.annotation, BaseModel)
    field = section.annotation.model_fields.get(loc[1])
    return field is not None and SecretStr in (field.annotation, *get_args(field.annotation))


def settings_shown(settings: Settings) -> str:
    """The effective settings as JSON (`safewatch config show`), with every secret as `***`.

    Secret fields (SecretStr), the values of secret-named entries of the option maps
    (`kafka.client_options`, `spark.conf`: `sasl.jaas.config`, `...secret.key`) and the user
    information of any URL are masked by `pipelines.redact`; an unset secret shows as null.
    """
    from pydantic_core import to_jsonable_python

    sections = {name: dict(getattr(settings, name)) for name in type(settings).model_fields}
    return json.dumps(to_jsonable_python(redact_tree(sections)), indent=2)


def settings_reference() -> str:
    """Markdown reference of every setting: name, env variable, default, description."""
    lines = [
        "# Settings reference",
        "",
        "Generated by `safewatch config docs` from `pipelines/settings.py`. Every setting can "
        "be set in a TOML file (`--config FILE`, `$SAFEWATCH_CONFIG`, or `./safewatch.toml`) "
        "under its section, or by the environment variable shown, which wins over the file.",
        "",
    ]
    for section_name, section_field in Settings.model_fields.items():
        section_cls = section_field.annotation
        assert isinstance(section_cls, type) and issubclass(section_cls, BaseModel)
        lines += [f"## [{section_name}]", "", (section_cls.__doc__ or "").strip(), ""]
        lines += ["| setting | environment variable | default | description |", "|---|---|---|---|"]
        for name, field in section_cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, SecretStr):
                default = "(secret)" if name != "url" else "sqlite:///var/warehouse.db"
            if isinstance(default, tuple):
                default = ",".join(str(v) for v in default)
            env = f"SAFEWATCH_{section_name.upper()}__{name.upper()}"
            shown = "" if default is None else f"`{default}`"
            lines.append(f"| `{name}` | `{env}` | {shown} | {field.description} |")
        lines.append("")
    return "\n".join(lines)
