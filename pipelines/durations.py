"""Parse the human durations used in settings ("5 minutes", "30 seconds", "1 hour", "90s")."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_duration(text: str) -> timedelta:
    """The duration of `text` (a number and a unit, as Spark accepts); ValueError otherwise."""
    match = _PATTERN.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        msg = f"cannot read duration {text!r}: use e.g. '5 minutes', '30 seconds', '1 hour'"
        raise ValueError(msg)
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])


def spark_interval(text: str) -> str:
    """The same duration spelled for Spark (`window`, `processingTime`), e.g. '300 seconds'."""
    seconds = parse_duration(text).total_seconds()
    if seconds <= 0:
        msg = f"duration {text!r} must be positive"
        raise ValueError(msg)
    return f"{int(seconds)} seconds" if seconds == int(seconds) else f"{seconds} seconds"
