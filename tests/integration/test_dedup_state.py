"""The event ids kept between batches (pipelines.stream.dedup.DedupState): written, looked up
and pruned the same way by the driver (a local root) and through Spark (any other URI).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from pipelines.stream.dedup import DedupState

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _ids(names):
    return pa.table(
        {
            "event_id": pa.array(names, pa.string()),
            "event_time": pa.array(
                [T0 + timedelta(seconds=i) for i in range(len(names))], pa.timestamp("us", "UTC")
            ),
        }
    )


@pytest.mark.parametrize("through_spark", [False, True], ids=["driver", "spark"])
def test_written_ids_are_found_overwritten_and_pruned(spark, tmp_path, through_spark):
    state = DedupState(spark, str(tmp_path / "dedup"), "q", through_spark=through_spark)
    state.write(_ids(["a", "b", "c"]), 0)
    state.write(_ids(["x"]), 1)  # a crashed attempt of batch 1 ...
    state.write(_ids(["d", "e"]), 1)  # ... overwritten by the one that commits
    state.write(_ids([]), 2)
    wanted = pa.array(["a", "e", "x", "zz", "a"])
    assert sorted(state.seen([0, 1, 2], wanted)) == ["a", "e"]
    assert state.seen([1], wanted) == ["e"]
    assert state.seen([], wanted) == []
    assert state.seen([7], wanted) == []  # never written
    # Either way of reading sees what either way wrote.
    other = DedupState(spark, str(tmp_path / "dedup"), "q", through_spark=not through_spark)
    assert sorted(other.seen([0, 1], wanted)) == ["a", "e"]
    back = spark.read.parquet(state.path(0)).orderBy("event_id").collect()
    assert [(r["event_id"], r["event_time"]) for r in back] == [
        (n, (T0 + timedelta(seconds=i)).replace(tzinfo=None)) for i, n in enumerate("abc")
    ]
    state.prune([0, 7])
    assert state.seen([0, 1], wanted) == ["e"]
