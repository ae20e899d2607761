"""Validate one event dict against the JSON Schema of its declared version."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from schemas import event_schema


@cache
def _validator(version: str) -> Draft202012Validator:
    return Draft202012Validator(event_schema(version), format_checker=FormatChecker())


def validate_event(event: dict[str, Any], version: str = "1") -> list[str]:
    """Return the contract violations of `event`, each as '<json path>: <message>'; [] if valid."""
    errors = sorted(_validator(version).iter_errors(event), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]
