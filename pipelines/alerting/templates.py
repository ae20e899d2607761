"""The text of an alert: `summary` and `description` templates and how they are rendered.

Templates are `str.format` strings over the fields of `template_fields`; `render_template`
formats them, printing ``n/a`` for a value that is missing (no baseline, no rate test, no
traffic), whatever its format spec. `template_problem` says why a template is not valid
over a rule's fields; the loader (`pipelines.alerting.loader`) rejects such a rule.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from pipelines.alerting.errors import did_you_mean
from pipelines.alerting.model import STORED, Rule

# Fields every template may use, besides the names of the rule's `by` dimensions.
TEMPLATE_FIELDS = (
    "rule",
    "metric",
    "segment",
    "value",
    "lower",
    "upper",
    "numerator",
    "denominator",
    "baseline",
    "q_value",
    "window_start",
    "windows",
    "severity",
)


class _Missing:
    """A value that does not exist in this window: prints n/a whatever the format spec."""

    def __format__(self, spec: str) -> str:
        return "n/a"

    def __str__(self) -> str:
        return "n/a"

    def __repr__(self) -> str:
        return "n/a"


MISSING = _Missing()


def template_fields(rule: Rule) -> tuple[str, ...]:
    """The fields `rule`'s templates may use: TEMPLATE_FIELDS and its `by` dimensions."""
    return TEMPLATE_FIELDS + (() if rule.by == STORED else rule.by)


def render_template(template: str, values: Mapping[str, object]) -> str:
    """`template` formatted with `values`; a None value prints as ``n/a``.

    Raises KeyError for a field missing from `values` (the loader guarantees that a rule's
    templates use only `template_fields(rule)`).
    """
    return template.format_map({k: MISSING if v is None else v for k, v in values.items()})


def template_problem(template: str, allowed: Sequence[str]) -> str | None:
    """Why `template` is not a valid template over `allowed` fields, or None if it is."""
    try:
        names = list(_field_names(template))
    except ValueError as exc:
        return f"invalid template: {exc}"
    for name in names:
        if name == "" or name.isdigit():
            return "positional fields ({} or {0}) are not allowed: name a field"
        if "." in name or "[" in name:
            return f"field {{{name}}}: attribute and index access are not allowed"
        if name not in allowed:
            return f"unknown template field {{{name}}}{did_you_mean(name, allowed)}; allowed: " + (
                ", ".join(allowed)
            )
    dummy: dict[str, object] = {
        "rule": "Rule",
        "metric": "violation_rate",
        "segment": "chat / de-DE",
        "value": 0.5,
        "lower": 0.25,
        "upper": 0.75,
        "numerator": 1,
        "denominator": 2,
        "baseline": 0.5,
        "q_value": 0.01,
        "window_start": datetime(2026, 1, 1, tzinfo=UTC),
        "windows": 1,
        "severity": "sev1",
    }
    dummy.update({d: "value" for d in allowed if d not in dummy})
    try:
        render_template(template, dummy)
    except (ValueError, TypeError) as exc:
        return f"invalid template: {exc}"
    return None


def _field_names(template: str) -> Iterable[str]:
    for _, name, spec, _ in string.Formatter().parse(template):
        if name is not None:
            yield name
            if spec:
                yield from _field_names(spec)
