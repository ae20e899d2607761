"""The one line a job prints when Spark stopped its streaming query on an error of its own
(pipelines/stream/session.query_failure), from messages of the shape Spark gives.
"""

from __future__ import annotations

from pipelines.stream.session import query_failure


def test_a_query_spark_stopped_is_described_in_one_line() -> None:
    message = (
        "[STREAM_FAILED] Query [id = e94c2bd6, runId = 1ca26d88] terminated with exception: "
        "java.io.IOException: Operation not permitted SQLSTATE: XXKST\n"
        "=== Streaming Query ===\nIdentifier: safewatch_aggregator\n"
    )
    line = query_failure(message, "/srv/ckpt")
    assert line.startswith(
        "the streaming query stopped: java.io.IOException: Operation not permitted. Nothing"
    )
    assert "/srv/ckpt" in line and "\n" not in line and "SQLSTATE" not in line
    # A message of another shape: its first line, as it is.
    assert query_failure("Kafka went away\nat ...", "c").startswith(
        "the streaming query stopped: Kafka went away. "
    )
