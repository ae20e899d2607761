"""The example events next to the schema are valid v1 events and say what their name says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.contract.validate import validate_event
from pipelines.synth import labels
from schemas import example_paths

EXPECTED_TRUE = {
    "answered_clean": set(),
    "refused_self_harm": {"refused"},
    "blocked_violence": {
        "violation",
        "blocked",
        "jailbreak_attempt",
        "jailbreak_success",
        "user_report",
    },
    "injection_tool_output": {"injection_attempt", "injection_success"},
    "with_excerpts": {"pii_in_output"},
}


def test_the_examples_are_there() -> None:
    assert {p.stem for p in example_paths()} >= set(EXPECTED_TRUE)


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_example_is_valid(path: Path) -> None:
    event = json.loads(path.read_text(encoding="utf-8"))
    assert validate_event(event) == []


@pytest.mark.parametrize("name", sorted(EXPECTED_TRUE))
def test_example_labels(name: str) -> None:
    path = next(p for p in example_paths() if p.stem == name)
    event = json.loads(path.read_text(encoding="utf-8"))
    assert {k for k, v in labels(event).items() if v} == EXPECTED_TRUE[name]
