"""Event ids aggregated by recent batches, kept as Parquet beside the checkpoint.

Batch N writes the ids it aggregated to `<root>/<query id>/batch=N` before its warehouse
commit (overwriting what a crashed attempt left) and reads those of committed batches < N
that may hold events newer than the watermark. Files of batches entirely behind the
watermark are deleted after the commit. Reads and writes go through Spark, so the root can
be any Hadoop-supported URI (local disk, HDFS, S3).
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame, SparkSession

ID_SCHEMA = "event_id string, event_time timestamp"


class DedupState:
    def __init__(self, spark: SparkSession, root: str, query_id: str) -> None:
        self.spark = spark
        self.base = f"{root.rstrip('/')}/{query_id}"

    def path(self, batch_id: int) -> str:
        return f"{self.base}/batch={batch_id}"

    def prior_ids(self, batch_ids: Iterable[int]) -> DataFrame | None:
        """Ids written by these (committed) batches; None when there are none."""
        paths = [self.path(b) for b in sorted(batch_ids)]
        if not paths:
            return None
        return self.spark.read.schema(ID_SCHEMA).parquet(*paths)

    def write(self, ids: DataFrame, batch_id: int) -> None:
        # One file per partition of the batch: the write runs in parallel, where a single
        # file would make one task read the whole batch.
        ids.select("event_id", "event_time").write.mode("overwrite").parquet(self.path(batch_id))

    def prune(self, batch_ids: Iterable[int]) -> None:
        """Delete the files of these batches (missing ones are ignored)."""
        jvm = self.spark._jvm  # noqa: SLF001 - Hadoop's FileSystem has no Python API
        assert jvm is not None
        conf = self.spark._jsc.hadoopConfiguration()  # noqa: SLF001
        for batch_id in batch_ids:
            path = jvm.org.apache.hadoop.fs.Path(self.path(batch_id))
            path.getFileSystem(conf).delete(path, True)
