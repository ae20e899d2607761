"""Build the Spark session from settings, with Spark's Kafka connector on spark.jars.

The same function serves every master: local[N], a standalone master (spark://…, e.g. the
loopback cluster of `safewatch infra up --cluster`), YARN or Kubernetes. What differs by
master is set here; anything else a cluster needs goes in spark.conf (docs/cluster.md).
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from pyspark import SparkContext
from pyspark.sql import SparkSession

from pipelines.errors import InfraError
from pipelines.redact import SPARK_REDACTION_REGEX
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


def loopback_master(master: str) -> bool:
    """Whether `master` is a standalone master on this machine's loopback (spark://127.0.0.1:…).

    A high-availability URL (spark://host1:port1,host2:port2) counts only if every host is.
    """
    if not master.startswith("spark://"):
        return False
    hosts = [urlsplit(f"spark://{part}").hostname for part in master[8:].split(",")]
    return all(h is not None and _is_loopback(h) for h in hosts)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The driver's logging (log4j 2): warnings and errors, without start-up notices.
LOG4J = Path(__file__).with_name("log4j2.properties")
# Lines the JVM writes to stderr by itself, not through log4j: Spark's launcher always adds
# the incubating vector API module, and the JVM announces it on every start.
JVM_NOTICES = (re.compile(rb"^WARNING: Using incubator modules: "),)


@contextmanager
def _jvm_notices_dropped() -> Iterator[None]:
    """While the JVM starts, give it a stderr that drops JVM_NOTICES and passes everything
    else on to ours, for as long as it runs. If a JVM already runs, it starts nothing.
    """
    if SparkContext._active_spark_context is not None:  # noqa: SLF001 - no public test
        yield
        return
    sys.stderr.flush()
    target = os.dup(2)  # where the JVM's stderr goes on to
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    threading.Thread(target=_pass_on, args=(read_end, target), daemon=True).start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(target, 2)  # ours again; the JVM keeps the pipe


def _pass_on(read_end: int, target: int) -> None:
    with os.fdopen(read_end, "rb") as source, os.fdopen(target, "wb", buffering=0) as out:
        for line in source:
            if not any(p.match(line) for p in JVM_NOTICES):
                out.write(line)


def build_session(settings: SparkSettings) -> SparkSession:
    """A session (or the active one) configured for Safewatch: UTC, few shuffle partitions.

    On a cluster master the executors are sized by executor_memory, executor_cores and
    max_cores; with a standalone master on loopback the driver binds to and advertises
    127.0.0.1, where the executors on this machine reach it.
    """
    local = settings.master.startswith("local")
    loopback = local or loopback_master(settings.master)
    if loopback:
        # A driver on loopback talks to itself or to executors on this machine: bind to
        # loopback instead of guessing an interface (Spark warns at every start otherwise).
        # Must be set before the JVM starts.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # PySpark starts its Python workers with $PYSPARK_PYTHON (default: python3 on the PATH),
    # which lacks this environment's packages; the driver's interpreter has them.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The driver serves spark.jars to executors on other machines too: local paths suffice.
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
        # Python workers (PII detectors, scrubbing) need this environment's packages. On the
        # loopback cluster executors run on this machine, so the same interpreter serves; on
        # other machines, set spark.conf."spark.pyspark.python" to their environment.
        .config("spark.pyspark.python", sys.executable)
        # Adaptive execution does not apply to streaming plans; Spark warns if it is left on.
        .config("spark.sql.adaptive.enabled", "false")
        # Headroom for deep plans: stopping a query mid-batch formats its plan with recursive
        # regular expressions that can overflow the JVM's default 1 MB thread stack.
        .config("spark.driver.extraJavaOptions", f"-Xss16m -Dlog4j.configurationFile={LOG4J}")
        # The UI, event logs and printed plans mask what Safewatch never prints either: conf
        # entries and source options (kafka.sasl.jaas.config) with secret-looking names.
        .config("spark.redaction.regex", SPARK_REDACTION_REGEX)
        .config("spark.sql.redaction.options.regex", f"(?i)url|{SPARK_REDACTION_REGEX[4:]}")
    )
    if not local:
        builder = builder.config("spark.executor.memory", settings.executor_memory).config(
            "spark.executor.cores", str(settings.executor_cores)
        )
        if settings.max_cores is not None:
            builder = builder.config("spark.cores.max", str(settings.max_cores))
    if loopback and not local:
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    with _jvm_notices_dropped():
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    _quiet_query_errors(spark)
    return spark


_CAUSE = re.compile(r"terminated with exception: (?P<cause>.*?)(?: SQLSTATE: \w+)*\s*$")


def query_failure(message: str, checkpoint_dir: str) -> str:
    """One line for a streaming query that Spark stopped on an error of its own (not one a
    batch raised): its cause, from the first line of Spark's message ("[STREAM_FAILED] Query
    [...] terminated with exception: java.io.IOException: ... SQLSTATE: XXKST"), and what
    to do.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "no message"
    found = _CAUSE.search(first)
    cause = found.group("cause") if found else first
    return (
        f"the streaming query stopped: {cause}. Nothing of the batch under way was "
        "committed; fix the cause (Kafka reachable, the checkpoint folder "
        f"{checkpoint_dir} writable and not full) and restart the job: it resumes from its "
        "checkpoint"
    )


# The logger of the streaming query's own "terminated with error" report.
QUERY_LOGGER = "org.apache.spark.sql.execution.streaming.runtime.MicroBatchExecution"


def _quiet_query_errors(spark: SparkSession) -> None:
    """Silence the query's report of the error that ended it: the same error reaches the
    caller of awaitTermination, which reports it (an error a person can act on as one line,
    jobs/streaming_aggregator.RunningJob; anything else with its traceback), and Spark's
    report of it is a page of Python and JVM stack first.
    """
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - log4j has no Python API
    assert jvm is not None
    log4j = jvm.org.apache.logging.log4j
    log4j.core.config.Configurator.setLevel(QUERY_LOGGER, log4j.Level.OFF)


_PRODUCER_POOL = "org.apache.spark.sql.kafka010.producer.InternalKafkaProducerPool$"


def close_kafka_producers() -> None:
    """Close the Kafka producers Spark keeps for its Kafka writes (the dead-letter topic):
    they live as long as the JVM, and log a failed reconnection every second once the
    broker they wrote to is stopped. Call before stopping a broker the JVM outlives.
    """
    sc = SparkContext._active_spark_context  # noqa: SLF001 - no public test
    if sc is None:
        return
    jvm = sc._jvm  # noqa: SLF001 - the pool has no Python API
    assert jvm is not None
    loader = jvm.org.apache.spark.util.Utils.getContextOrSparkClassLoader()
    try:
        pool = jvm.java.lang.Class.forName(_PRODUCER_POOL, True, loader)
    except Exception:  # noqa: BLE001 - no Kafka connector on the class path: nothing to close
        return
    pool.getField("MODULE$").get(None).reset()
