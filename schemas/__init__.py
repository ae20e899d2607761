"""The event contract and warehouse migrations, shipped as package data.

`interaction_event/v<N>.json` is the one source of truth for the event shape: the validator
and the Spark schema are both derived from it (see `pipelines.contract`).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
SUPPORTED_EVENT_VERSIONS = ("1",)


@cache
def event_schema(version: str = "1") -> dict[str, Any]:
    """The JSON Schema of `interaction_event` at `version`; KeyError for an unknown version."""
    if version not in SUPPORTED_EVENT_VERSIONS:
        raise KeyError(version)
    with open(ROOT / "interaction_event" / f"v{version}.json", encoding="utf-8") as fh:
        return json.load(fh)


def example_paths() -> list[Path]:
    """The example events kept next to the schema, each a valid v1 event."""
    return sorted((ROOT / "examples").glob("*.json"))
