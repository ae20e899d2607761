"""Duplicates: which on-time valid records repeat an event id (`repeated`, pure), and the
event ids aggregated by recent batches, kept as Parquet beside the checkpoint (`DedupState`).

Batch N writes the ids it aggregated to `<root>/<query id>/batch=N` before its warehouse
commit (overwriting what a crashed attempt left) and looks up its own ids among those of
committed batches < N that may hold events newer than the watermark. Files of batches
entirely behind the watermark are deleted after the commit.

The driver reads and writes a local root itself (pyarrow: no Spark job, so a small batch
stays cheap); any other Hadoop-supported URI (HDFS, S3, ...) goes through Spark.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

ID_SCHEMA = pa.schema([("event_id", pa.string()), ("event_time", pa.timestamp("us", tz="UTC"))])
_SPARK_ID_SCHEMA = "event_id string, event_time timestamp"


def repeated(ids: pa.Table, seen: Iterable[str]) -> list[tuple[int, int]]:
    """(partition, offset) of the records in `ids` (event_id, partition, offset of the batch's
    on-time valid records) that repeat an event id: one that an earlier batch counted
    (`seen`), or one that an earlier record of this batch holds, in (partition, offset)
    order. The first record of an id is kept only when no earlier batch counted it.
    """
    counted = set(seen)
    if ids.num_rows == 0:
        return []
    tally = ids.group_by("event_id").aggregate([("event_id", "count")])
    twice = tally.filter(pc.greater(tally.column("event_id_count"), 1)).column("event_id")
    suspects = pa.chunked_array([twice.combine_chunks(), pa.array(sorted(counted), pa.string())])
    rows = ids.filter(pc.is_in(ids.column("event_id"), value_set=suspects.combine_chunks()))
    rows = rows.sort_by([("partition", "ascending"), ("offset", "ascending")])
    marks: list[tuple[int, int]] = []
    for event_id, partition, offset in zip(
        rows.column("event_id").to_pylist(),
        rows.column("partition").to_pylist(),
        rows.column("offset").to_pylist(),
        strict=True,
    ):
        if event_id in counted:
            marks.append((partition, offset))
        else:
            counted.add(event_id)
    return marks


def _local_dir(uri: str) -> Path | None:
    """The directory of a local root (a plain path or file:), None for any other URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "":
        return Path(uri)
    return None


class DedupState:
    """The ids files of one query; `through_spark` forces Spark's I/O on a local root too."""

    def __init__(
        self, spark: SparkSession, root: str, query_id: str, *, through_spark: bool = False
    ) -> None:
        self.spark = spark
        self.base = f"{root.rstrip('/')}/{query_id}"
        self._local = None if through_spark else _local_dir(self.base)

    def path(self, batch_id: int) -> str:
        return f"{self.base}/batch={batch_id}"

    def seen(self, batch_ids: Iterable[int], ids: pa.Array) -> list[str]:
        """Which of `ids` these (committed) batches aggregated."""
        batches = sorted(batch_ids)
        if not batches or len(ids) == 0:
            return []
        wanted = pc.unique(ids)
        if self._local is not None:
            files = [
                str(f)
                for b in batches
                if (self._local / f"batch={b}").is_dir()
                for f in sorted((self._local / f"batch={b}").glob("*.parquet"))
            ]
            if not files:
                return []
            dataset = pads.dataset(files, schema=ID_SCHEMA, format="parquet")
            found = dataset.to_table(columns=["event_id"], filter=pc.field("event_id").isin(wanted))
            return pc.unique(found.column("event_id")).to_pylist()  # type: ignore[no-any-return]
        paths = [p for p in (self.path(b) for b in batches) if self._hadoop_path(p) is not None]
        if not paths:
            return []
        prior = self.spark.read.schema(_SPARK_ID_SCHEMA).parquet(*paths)
        batch = self.spark.createDataFrame(pa.table({"event_id": wanted}))
        found_df = prior.join(F.broadcast(batch), "event_id", "left_semi").select("event_id")
        return sorted({r["event_id"] for r in found_df.distinct().collect()})

    def write(self, ids: pa.Table, batch_id: int) -> None:
        """Store the ids (ID_SCHEMA's columns) this batch aggregated."""
        ids = ids.select(ID_SCHEMA.names).cast(ID_SCHEMA)
        if self._local is None:
            frame = self.spark.createDataFrame(ids) if ids.num_rows else None
            if frame is None:
                frame = self.spark.createDataFrame([], _SPARK_ID_SCHEMA)
            frame.write.mode("overwrite").parquet(self.path(batch_id))
            return
        target = self._local / f"batch={batch_id}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        # Hidden while written (readers skip names starting with '.'), then renamed.
        partial = target / f".{uuid.uuid4().hex}.tmp"
        pq.write_table(ids, partial)
        partial.replace(target / "part-0.parquet")

    def prune(self, batch_ids: Iterable[int]) -> None:
        """Delete the files of these batches (missing ones are ignored)."""
        if self._local is not None:
            for batch_id in batch_ids:
                shutil.rmtree(self._local / f"batch={batch_id}", ignore_errors=True)
            return
        for batch_id in batch_ids:
            found = self._hadoop_path(self.path(batch_id))
            if found is not None:
                found[0].delete(found[1], True)

    def _hadoop_path(self, uri: str) -> tuple[Any, Any] | None:
        """(Hadoop FileSystem, Path) of `uri` when it exists, else None."""
        jvm = self.spark._jvm  # noqa: SLF001 - Hadoop's FileSystem has no Python API
        assert jvm is not None
        conf = self.spark._jsc.hadoopConfiguration()  # noqa: SLF001
        path = jvm.org.apache.hadoop.fs.Path(uri)
        fs = path.getFileSystem(conf)
        return (fs, path) if fs.exists(path) else None
