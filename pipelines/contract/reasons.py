"""What becomes of a record: every fate the job, the backfill, the ledger and the exporter
name, defined once. Standard library only (the exporter reads it without Spark).

A record is aggregated, late, a duplicate, or rejected with one of `REJECT_REASONS`.
"""

from __future__ import annotations

# Rejected: the record is not an event the contract accepts (it goes to the DLQ topic).
MESSAGE_TOO_LARGE = "message_too_large"
INVALID_JSON = "invalid_json"
UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
SCHEMA_VIOLATION = "schema_violation"
EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
# Checking the record raised something unexpected: it is rejected, not the batch failed.
UNPROCESSABLE = "unprocessable"
REJECT_REASONS = (
    MESSAGE_TOO_LARGE,
    INVALID_JSON,
    UNKNOWN_SCHEMA_VERSION,
    SCHEMA_VIOLATION,
    EVENT_TIME_OUT_OF_RANGE,
    UNPROCESSABLE,
)

# Not rejected: counted in its window, behind the watermark (to the DLQ topic, not
# counted), or an event id counted before.
AGGREGATED = "aggregated"
LATE = "late"
DUPLICATE = "duplicate"

# A detector hit in an aggregated event's free text: the event is counted with that text
# dropped, and a scrubbed copy goes to the DLQ topic under this reason.
PII_DETECTED = "pii_detected"

# Records with no event to read (the quality sample leaves them out).
UNPARSED = (MESSAGE_TOO_LARGE, INVALID_JSON, UNKNOWN_SCHEMA_VERSION)
# Records that kept no event at all (the ledger's `parse_errors`): also those whose check
# failed unexpectedly.
PARSE_ERRORS = (*UNPARSED, UNPROCESSABLE)

# What became of a record that reaches the dead-letter topic: rejected (a reason code, or
# late), or counted with the free text that held personal data dropped (pii_detected).
REJECTED, COUNTED = "rejected", "counted"


def rejected_by_reason(by_status: dict[str, int]) -> dict[str, int]:
    """The rejected records of per-fate counts, by reason (aggregated, late and duplicate
    records are not rejected).
    """
    return {k: v for k, v in by_status.items() if k not in (AGGREGATED, DUPLICATE, LATE)}
