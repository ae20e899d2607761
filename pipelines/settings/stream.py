"""The settings of the streaming job: the Spark session (`[spark]`), triggers, windows and
grouping (`[stream]`), what the job accepts (`[contract]`), what analysts may see
(`[privacy]`), the data-quality suite (`[quality]`) and drift against a baseline (`[drift]`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from pipelines.durations import parse_duration
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.settings.types import Duration, JvmMemory, Section

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


class SparkSettings(Section):
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


class StreamSettings(Section):
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


class ContractSettings(Section):
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


class PrivacySettings(Section):
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


class QualitySettings(Section):
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


class DriftSettings(Section):
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
