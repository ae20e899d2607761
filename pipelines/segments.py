"""The segment vocabulary shared by the job, the warehouse, the exporter and the settings.

The dimensions are those of the event contract's `segment` object
(`schemas/interaction_event/v1.json`), in its order, which is the warehouse's column order;
the reserved values are what a segment column holds besides a producer's value. Standard
library only: the Python workers import it, and with it neither pydantic (the settings) nor
SQLAlchemy (the warehouse tables), which cost a cold worker about half a second.
"""

from __future__ import annotations

import json

from schemas import event_schema

# The dimensions an aggregate can be grouped by: the properties of the event's `segment`.
SEGMENT_DIMENSIONS: tuple[str, ...] = tuple(
    event_schema("1")["properties"]["segment"]["properties"]
)

ALL_DIMENSIONS_VALUE = "*"  # value of a dimension the aggregate is not grouped by
OTHER_VALUE = "other"  # a value beyond its dimension's limit (cardinality control)
UNKNOWN_VALUE = "unknown"  # a dimension the event left empty
REDACTED_VALUE = "[REDACTED]"  # a value in which a personal-data detector hits
# Values that never count against a dimension's limit of distinct values.
RESERVED_VALUES = frozenset({OTHER_VALUE, ALL_DIMENSIONS_VALUE, UNKNOWN_VALUE})

# A segment named by its dimensions: ((dimension, value), ...) in a grouping's order (an
# alert rule's `by`); () is all traffic.
Segment = tuple[tuple[str, str], ...]
# A segment as a warehouse row holds it: one value per dimension of SEGMENT_DIMENSIONS, in
# that order (ALL_DIMENSIONS_VALUE where the row is not grouped by a dimension).
SegmentValues = tuple[str, ...]


def segment_key(segment: Segment) -> str:
    """The stored form of a segment (alert states and history): JSON [[dimension, value],
    ...] in the segment's order.
    """
    return json.dumps([list(p) for p in segment], separators=(",", ":"))


def parse_segment(key: str) -> Segment:
    """The segment `segment_key` stored."""
    return tuple((str(d), str(v)) for d, v in json.loads(key))


def segment_label(segment: Segment) -> str:
    """``chat / atlas-l-2026.10.2 / de-DE``, or ``all traffic`` for the empty segment."""
    return " / ".join(value for _, value in segment) or "all traffic"
