"""Build the Spark session from settings, with Spark's Kafka connector on spark.jars."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines.errors import InfraError
from pipelines.settings import SparkSettings

CONNECTOR_PREFIXES = (
    "spark-sql-kafka-0-10_",
    "spark-token-provider-kafka-0-10_",
    "kafka-clients-",
    "commons-pool2-",
)


def connector_jars(jars_dir: Path) -> list[Path]:
    """The connector jars in `jars_dir`; InfraError saying how to fetch them if any is missing."""
    found = sorted(jars_dir.glob("*.jar")) if jars_dir.is_dir() else []
    missing = [p for p in CONNECTOR_PREFIXES if not any(j.name.startswith(p) for j in found)]
    if missing:
        msg = (
            f"Spark's Kafka connector jars are missing from {jars_dir} ({', '.join(missing)}): "
            "run infra/setup.sh, or set spark.jars_dir (SAFEWATCH_SPARK__JARS_DIR)"
        )
        raise InfraError(msg)
    return [j.resolve() for j in found]


def build_session(settings: SparkSettings) -> SparkSession:
    """A session (or the active one) configured for Safewatch: UTC, few shuffle partitions."""
    if settings.master.startswith("local"):
        # A local driver talks to itself: bind to loopback instead of guessing an interface
        # (Spark warns at every start otherwise). Must be set before the JVM starts.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # PySpark starts its Python workers with $PYSPARK_PYTHON (default: python3 on the PATH),
    # which lacks this environment's packages; the driver's interpreter has them.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    jars = ",".join(str(j) for j in connector_jars(Path(settings.jars_dir)))
    builder = (
        SparkSession.builder.master(settings.master)
        .appName(settings.app_name)
        .config("spark.jars", jars)
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.streaming.forceDeleteTempCheckpointLocation", "true")
        # Python workers (PII detectors, scrubbing) need this environment's packages; on a
        # cluster, override with spark.conf."spark.pyspark.python".
        .config("spark.pyspark.python", sys.executable)
        # Adaptive execution does not apply to streaming plans; Spark warns if it is left on.
        .config("spark.sql.adaptive.enabled", "false")
        # The contract checks make a large plan; stopping a query mid-batch formats it with
        # recursive regular expressions that overflow the JVM's default 1 MB thread stack.
        .config("spark.driver.extraJavaOptions", "-Xss16m")
    )
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    return spark
