"""Errors of the alerting package."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pipelines.errors import SafewatchError


class RuleError(SafewatchError):
    """An alert rule file or rule is invalid: names the file, line, rule and field to fix.

    ``str(error)`` reads ``alerts/rules/safety.yaml:12: rule HarmfulOutputHigh: field
    condition.threshold.above: must be between 0 and 1``; the parts that are unknown (the
    rule when its name could not be read, the line of an unreadable file) are left out.
    The attributes carry the same parts for a caller that reports them differently.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        line: int | None = None,
        rule: str | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        self.rule = rule
        self.field = field
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(self.path if self.line is None else f"{self.path}:{self.line}")
        if self.rule is not None:
            parts.append(f"rule {self.rule}")
        if self.field is not None:
            parts.append(f"field {self.field}")
        parts.append(self.reason)
        return ": ".join(parts)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """The hint a RuleError ends with, ``" (did you mean a or b?)"``; empty if nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
