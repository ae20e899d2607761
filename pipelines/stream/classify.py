"""Decide the fate of every Kafka record of a micro-batch (pure DataFrame functions).

Each record ends in exactly one bucket, so the ledger's accounting closes:
    input = aggregated + rejected (by reason) + late + duplicates
Rejection reasons, in order of precedence:
    message_too_large, invalid_json, unknown_schema_version, schema_violation,
    event_time_out_of_range, pii_detected
then late (event_time before the watermark), then duplicate (event_id already aggregated
within the watermark, or earlier in the same batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.contract.spark_checks import free_text_paths, with_contract_errors
from pipelines.settings import SEGMENT_DIMENSIONS

MESSAGE_TOO_LARGE = "message_too_large"
EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
PII_DETECTED = "pii_detected"
LATE = "late"
DUPLICATE = "duplicate"
AGGREGATED = "aggregated"
REJECT_REASONS = (
    MESSAGE_TOO_LARGE,
    "invalid_json",
    "unknown_schema_version",
    "schema_violation",
    EVENT_TIME_OUT_OF_RANGE,
    PII_DETECTED,
)
# Paths whose errors make an event's safety telemetry incomplete.
SAFETY_PATHS = ("moderation", "refusal", "injection", "jailbreak", "tool_calls", "privacy",
                "feedback", "request.outcome")  # fmt: skip
REDACTED_VALUE = "[REDACTED]"


def check_contract(
    raw: DataFrame, *, max_message_bytes: int, max_future: timedelta, max_age: timedelta
) -> DataFrame:
    """Kafka records -> coordinates, `event` (typed, may be partial), `errors`, `reason`.

    `reason` is null for an event that meets the contract and whose event_time lies within
    [kafka timestamp - max_age, kafka timestamp + max_future]; the Kafka timestamp, not the
    wall clock, keeps a replayed batch's decisions identical.
    """
    too_large = F.length(F.col("value")) > max_message_bytes
    records = raw.select(
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("kafka_timestamp"),
        F.col("value"),
        too_large.alias("too_large"),
    )
    # An oversized message is not parsed at all. Invalid UTF-8 becomes U+FFFD here, once, so
    # that nothing downstream (JSON parser, Arrow, Python) meets undecodable bytes.
    text = F.when(~F.col("too_large"), F.make_valid_utf8(F.col("value").cast("string")))
    checked = (
        with_contract_errors(records, text)
        .withColumn(
            "errors",
            F.when(
                F.col("too_large"),
                F.array(
                    F.concat(
                        F.lit(f"{MESSAGE_TOO_LARGE}|$: "),
                        F.length(F.col("value")).cast("string"),
                        F.lit(f" bytes, more than the maximum of {max_message_bytes}"),
                    )
                ),
            ).otherwise(F.col("errors")),
        )
        .drop("too_large")
    )
    event_time = F.col("event.event_time")
    ahead = event_time > F.col("kafka_timestamp") + F.expr(_interval(max_future))
    behind = event_time < F.col("kafka_timestamp") - F.expr(_interval(max_age))
    first_reason = F.split(F.col("errors")[0], r"\|")[0]
    return checked.withColumn(
        "reason",
        F.when(F.size("errors") > 0, first_reason)
        .when(ahead | behind, F.lit(EVENT_TIME_OUT_OF_RANGE))
        .otherwise(F.lit(None).cast("string")),
    ).withColumn(
        "errors",
        F.when(
            (F.size("errors") == 0) & ahead,
            F.array(F.lit(f"{EVENT_TIME_OUT_OF_RANGE}|$.event_time: more than {max_future} "
                          "ahead of the Kafka record's timestamp")),
        )
        .when(
            (F.size("errors") == 0) & behind,
            F.array(F.lit(f"{EVENT_TIME_OUT_OF_RANGE}|$.event_time: more than {max_age} "
                          "behind the Kafka record's timestamp")),
        )
        .otherwise(F.col("errors")),
    )  # fmt: skip


def _interval(delta: timedelta) -> str:
    return f"INTERVAL {int(delta.total_seconds())} SECONDS"


def free_texts(paths: Sequence[str] | None = None) -> Column:
    """Array of the event's free-text fields (nulls dropped)."""
    cols = [F.col(f"event.{p}") for p in (paths or free_text_paths())]
    return F.filter(F.array(*cols), lambda t: t.isNotNull())


def pii_candidates(checked: DataFrame, screen: str) -> DataFrame:
    """Contract-valid records whose free text the JVM screen flags (Python decides next).

    One match of the screen over the free-text fields joined by newlines: a text that holds
    a match still holds it inside the joined string (the screen has no anchors, and no
    detector matches across a line break), and one regex pass per event replaces one per
    field.
    """
    joined = F.concat_ws("\n", *[F.col(f"event.{p}") for p in free_text_paths()])
    return checked.where(F.col("reason").isNull() & joined.rlike(screen)).select(
        "partition", "offset", free_texts().alias("texts")
    )


def apply_verdicts(
    checked: DataFrame,
    pii: DataFrame,
    prior_ids: DataFrame | None,
    watermark: datetime | None,
) -> DataFrame:
    """Add `pii_detectors` and the final `status` (aggregated, late, duplicate or a reason).

    `pii` holds (partition, offset, detectors) of the records with confirmed hits;
    `prior_ids` the event ids aggregated by earlier batches within the watermark.
    """
    joined = checked.join(pii, ["partition", "offset"], "left").withColumn(
        "reason",
        F.when(
            F.col("reason").isNull() & (F.size(F.coalesce("detectors", F.array())) > 0),
            F.lit(PII_DETECTED),
        ).otherwise(F.col("reason")),
    )
    valid = F.col("reason").isNull()
    late = valid & (F.col("event.event_time") < F.lit(watermark)) if watermark else F.lit(False)
    on_time = valid & ~late
    # Duplicates are found on a narrow projection (id and coordinates), so only ids are
    # shuffled; the few records marked come back by a broadcast join on their coordinates.
    keys = joined.where(on_time).select(F.col("event.event_id").alias("_id"), "partition", "offset")
    position = F.struct("partition", "offset")
    firsts = (
        keys.groupBy("_id")
        .agg(F.min(position).alias("_first"), F.count(F.lit(1)).alias("_n"))
        .where(F.col("_n") > 1)
    )
    repeated = (
        keys.join(firsts, "_id").where(position != F.col("_first")).select("partition", "offset")
    )
    if prior_ids is not None:
        seen = prior_ids.select(F.col("event_id").alias("_id")).distinct()
        repeated = repeated.unionByName(keys.join(seen, "_id").select("partition", "offset"))
    marks = repeated.distinct().withColumn("_duplicate", F.lit(True))
    ranked = joined.join(F.broadcast(marks), ["partition", "offset"], "left")
    status = (
        F.when(~valid, F.col("reason"))
        .when(late, F.lit(LATE))
        .when(on_time & F.col("_duplicate").isNotNull(), F.lit(DUPLICATE))
        .otherwise(F.lit(AGGREGATED))
    )
    verdict = ranked.withColumn("status", status).drop("_duplicate")
    # Every record that is not aggregated says why, in the same form as the contract errors.
    return verdict.withColumn(
        "errors",
        F.when(
            F.col("status") == PII_DETECTED,
            F.array(
                F.concat(
                    F.lit(f"{PII_DETECTED}|$: free text holds "),
                    F.array_join(F.col("detectors"), ", "),
                    F.lit(" (upstream redaction failed)"),
                )
            ),
        )
        .when(
            F.col("status") == LATE,
            F.array(F.lit(f"{LATE}|$.event_time: behind the watermark {watermark}")),
        )
        .when(
            F.col("status") == DUPLICATE,
            F.array(F.lit(f"{DUPLICATE}|$.event_id: already counted within the watermark")),
        )
        .otherwise(F.col("errors")),
    )


def telemetry_rows(verdicts: DataFrame, screen: str) -> DataFrame:
    """Records attributable to a segment, for events_seen / telemetry_complete /
    redaction_failures: a readable event_time and a segment that met the contract.

    Segment values of a PII-rejected event that the screen flags are replaced, so that the
    personal data cannot become a segment key.
    """
    segment_ok = ~F.exists("errors", lambda e: e.contains("|$.segment"))
    attributable = (
        # Out-of-range times are not trusted enough to place an event in a window.
        F.col("status").isin(AGGREGATED, "schema_violation", PII_DETECTED)
        & F.col("event.event_time").isNotNull()
        & F.col("event.segment").isNotNull()
        & segment_ok
    )
    pattern = r"\|\$\.(" + "|".join(p.replace(".", r"\.") for p in SAFETY_PATHS) + ")"
    complete = ~F.exists("errors", lambda e: e.rlike(pattern))
    is_pii = F.col("status") == PII_DETECTED
    dims = [
        F.when(is_pii & F.col(f"event.segment.{d}").rlike(screen), F.lit(REDACTED_VALUE))
        .otherwise(F.col(f"event.segment.{d}"))
        .alias(d)
        for d in SEGMENT_DIMENSIONS
    ]
    return verdicts.where(attributable).select(
        F.col("event.event_time").alias("event_time"),
        F.struct(*dims).alias("segment"),
        complete.alias("telemetry_complete"),
        is_pii.alias("redaction_failure"),
    )
