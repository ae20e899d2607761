"""The value types that settings share, and the base class of every section.

A type here is a `str` checked at load and kept as written: `Duration` as Safewatch reads it
("5 minutes"), `GoDuration` and `PositiveGoDuration` as Alertmanager reads them ("30s"),
`JvmMemory` as the JVM reads -Xmx ("512m"). `Section` makes every section frozen and refuses
an unknown key.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from pipelines.durations import spark_interval


def _duration(text: str) -> str:
    """`text` if it reads as a positive duration ("5 minutes", "30 seconds", "1 hour")."""
    spark_interval(text)  # ValueError naming the problem: unreadable, or not positive
    return text


def _go_duration(text: str) -> str:
    """`text` if it is a duration as Alertmanager reads it: "0s", "30s", "5m", "1h30m"."""
    if not _GO_DURATION.fullmatch(text):
        msg = f"cannot read duration {text!r}: use Alertmanager's form, e.g. '30s', '5m', '1h'"
        raise ValueError(msg)
    return text


def _positive_go_duration(text: str) -> str:
    """As `_go_duration`, and more than zero (Alertmanager refuses a zero interval)."""
    if not any(ch in "123456789" for ch in _go_duration(text)):
        msg = f"duration {text!r} must be more than zero"
        raise ValueError(msg)
    return text


def _jvm_memory(text: str) -> str:
    """`text` if the JVM reads it as a memory size (-Xmx): "512m", "2g"."""
    if not _JVM_MEMORY.fullmatch(text):
        msg = f"{text!r} is not a JVM memory size such as 512m or 1g"
        raise ValueError(msg)
    return text


_GO_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
_JVM_MEMORY = re.compile(r"[1-9]\d*[kKmMgGtT]?")
# A positive duration as Safewatch reads it (pipelines/durations.py), kept as written.
Duration = Annotated[str, AfterValidator(_duration)]
GoDuration = Annotated[str, AfterValidator(_go_duration)]
PositiveGoDuration = Annotated[str, AfterValidator(_positive_go_duration)]
JvmMemory = Annotated[str, AfterValidator(_jvm_memory)]


class Section(BaseModel):
    """Base of every section: frozen, and a key it does not define is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")
