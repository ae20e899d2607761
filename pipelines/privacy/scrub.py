"""Make a rejected record safe to keep: every PII hit masked, raw identifiers replaced.

Used for everything Safewatch writes about a rejected event (the DLQ payload and the error
messages), because a rejected event is exactly the one whose redaction cannot be trusted.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.privacy.detectors import mask
from pipelines.privacy.pseudonym import is_pseudonym

ID_FIELDS = ("tenant_id", "user_id", "session_id")
RAW_ID = "[RAW_ID]"


def raw_identifier_fields(event: Any) -> list[str]:
    """The id fields of a parsed event that hold something other than a pseudonym."""
    if not isinstance(event, dict):
        return []
    return [
        f for f in ID_FIELDS if f in event and event[f] is not None and not is_pseudonym(event[f])
    ]


def _mask_all(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_mask_all(v) for v in value]
    if isinstance(value, dict):
        return {mask(str(k)): _mask_all(v) for k, v in value.items()}
    return value


def scrub_payload(raw: str) -> str:
    """`raw` with raw ids replaced by [RAW_ID] and every detector hit masked.

    A JSON object is scrubbed field by field (keys too) and re-serialised compactly; anything
    else (invalid JSON, truncated text) is masked as plain text.
    """
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return mask(raw)
    if isinstance(event, dict):
        for field in raw_identifier_fields(event):
            event[field] = RAW_ID
    return json.dumps(_mask_all(event), ensure_ascii=False, separators=(",", ":"))
