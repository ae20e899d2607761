"""Pseudonymous identifiers: HMAC-SHA256 of the raw id under a secret key.

The event contract (`tenant_id`, `user_id`, `session_id`) requires exactly this form: 64
lowercase hex characters. A keyed hash (not a bare hash) is used so that nobody without the
key can confirm a guessed raw id by hashing it; rotating the key unlinks all pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

PSEUDONYM_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def pseudonymize(raw_id: str, key: bytes) -> str:
    """HMAC-SHA256 of `raw_id` (UTF-8) under `key`, as 64 lowercase hex characters.

    Deterministic: the same raw id and key always give the same pseudonym; different keys
    give unrelated pseudonyms. Raises ValueError for an empty key, which would make the
    pseudonym a plain (guessable) hash.
    """
    if not key:
        msg = "pseudonymisation key must not be empty"
        raise ValueError(msg)
    return hmac.new(key, raw_id.encode("utf-8"), hashlib.sha256).hexdigest()


def is_pseudonym(value: Any) -> bool:
    """True iff `value` is a string of the pseudonym form (64 lowercase hex characters)."""
    return isinstance(value, str) and PSEUDONYM_PATTERN.fullmatch(value) is not None
