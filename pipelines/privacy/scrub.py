r"""Make a rejected record safe to keep: every PII hit masked, raw identifiers replaced.

Used for everything Safewatch writes about a rejected event (the DLQ payload and the error
messages), because a rejected event is exactly the one whose redaction cannot be trusted.

Whatever a record holds, scrubbing it takes bounded time, yields bounded, valid UTF-8 text
and never raises (`dlq_payload`):

- JSON nested deeper than `MAX_DEPTH` is masked as plain text (no recursion over it);
- numbers keep their exact text (integers of any length included) unless the detectors
  flag that text, in which case they become the masked text as a JSON string
  (``4111111111111111`` -> ``"[CARD]"``);
- invalid UTF-8 and lone surrogates (``"\ud800"``, in values and keys) become U+FFFD;
- a message of more than `PAYLOAD_PREFIX_BYTES` (or one whose scrubbed text does not fit
  the DLQ record) is kept as a masked prefix, flagged truncated, with the byte length and
  SHA-256 of the whole original; only that prefix is masked;
- error messages are bounded in number (`MAX_ERRORS`) and length (`MAX_ERROR_BYTES`).

A text is never cut inside something the detectors find in the `CUT_MARGIN` characters
around the cut: a value the cut would split in two (a card number, an e-mail address) is
left out whole rather than kept as an unmasked fragment the detectors no longer recognise.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.privacy.detectors import detect, mask
from pipelines.privacy.pseudonym import is_pseudonym

ID_FIELDS = ("tenant_id", "user_id", "session_id")
RAW_ID = "[RAW_ID]"

MAX_DEPTH = 64
"""JSON nested deeper than this (arrays and objects) is masked as plain text."""
PAYLOAD_PREFIX_BYTES = 65_536
"""Larger messages are kept as a masked prefix of this many bytes at most (the default
`contract.max_message_bytes`: every message the contract parses fits)."""
MAX_ERRORS = 20
"""Error messages kept per record; the rest are summed up in one last message."""
MAX_ERROR_BYTES = 1_000
"""Longer error messages (UTF-8, as JSON strings) are cut to this many bytes."""
CUT_MARGIN = 256
"""Characters after a cut the detectors also look at, so that no value is left half there."""

_SURROGATE = re.compile("[\ud800-\udfff]")
# A string, closed or not (the text may be cut), or a bracket: the depth is counted on
# brackets outside strings. Linear: no nested quantifier can backtrack.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
# A run of JSON escape sequences (one run so that a surrogate pair is decoded as one).
_ESCAPES = re.compile(r'(?:\\(?:u[0-9A-Fa-f]{4}|["\\/bfnrt]))+')


def raw_identifier_fields(event: Any) -> list[str]:
    """The id fields of a parsed event that hold something other than a pseudonym."""
    if not isinstance(event, dict):
        return []
    return [
        f for f in ID_FIELDS if f in event and event[f] is not None and not is_pseudonym(event[f])
    ]


def valid_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD: always encodable as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (brackets inside strings aside)."""
    depth = deepest = 0
    for m in _STRING_OR_BRACKET.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


@dataclass(frozen=True)
class _Number:
    """A JSON number (or NaN / Infinity) kept as its literal text."""

    text: str


@dataclass(frozen=True)
class _Pairs:
    """A JSON object as its key/value pairs, in order, duplicates kept."""

    pairs: list[tuple[str, Any]]


def _parse(text: str) -> Any:
    """The JSON value of `text` (numbers as `_Number`, objects as `_Pairs`); raises
    ValueError when `text` is not JSON. Only called on text at most `MAX_DEPTH` deep.
    """
    return json.loads(
        text,
        parse_int=_Number,
        parse_float=_Number,
        parse_constant=_Number,
        object_pairs_hook=_Pairs,
    )


def _masked(text: str, cache: dict[str, str]) -> str:
    if text not in cache:
        cache[text] = mask(valid_text(text))
    return cache[text]


def _dump(value: Any, cache: dict[str, str], out: list[str]) -> None:
    """Append the scrubbed JSON of `value` to `out` (recursion bounded by `MAX_DEPTH`)."""
    if isinstance(value, str):
        out.append(json.dumps(_masked(value, cache), ensure_ascii=False))
    elif isinstance(value, _Number):
        masked = _masked(value.text, cache)
        out.append(value.text if masked == value.text else json.dumps(masked, ensure_ascii=False))
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _dump(item, cache, out)
        out.append("]")
    elif isinstance(value, _Pairs):
        out.append("{")
        for i, (key, item) in enumerate(value.pairs):
            if i:
                out.append(",")
            out.append(json.dumps(_masked(key, cache), ensure_ascii=False))
            out.append(":")
            _dump(item, cache, out)
        out.append("}")
    else:  # true, false, null
        out.append(json.dumps(value))


def scrub_payload(raw: str) -> str:
    """`raw` with raw ids replaced by [RAW_ID] and every detector hit masked.

    A JSON value is scrubbed field by field (keys and numbers too) and re-serialised
    compactly, numbers keeping their literal text; anything else (invalid JSON, truncated
    text, JSON nested deeper than `MAX_DEPTH`) is masked as plain text. The result is valid
    UTF-8. Time and memory are linear in `len(raw)`; callers bound the length (`dlq_payload`).
    """
    try:
        if _json_depth(raw) > MAX_DEPTH:
            return mask(valid_text(raw))
        event = _parse(raw)
    except ValueError:  # JSONDecodeError is one
        return mask(valid_text(raw))
    if isinstance(event, _Pairs):  # each pair checked: a repeated id field holds no raw id
        event = _Pairs(
            [(k, RAW_ID if raw_identifier_fields({k: _plain(v)}) else v) for k, v in event.pairs]
        )
    out: list[str] = []
    _dump(event, {}, out)
    return "".join(out)


def _plain(value: Any) -> Any:
    """What `raw_identifier_fields` needs to know of a parsed value: strings as they are."""
    return value if isinstance(value, str) or value is None else object()


def unescape_json_text(text: str) -> str:
    r"""`text` with JSON string escapes decoded (``\u0040`` -> ``@``, ``\/`` -> ``/``,
    ``\n`` -> a new line), so that the detectors see a cut JSON message as it reads.
    """

    def decode(m: re.Match[str]) -> str:
        run = m.group()
        try:
            return str(json.loads(f'"{run}"'))
        except ValueError:  # cannot happen for a run of valid escapes; keep the text
            return run

    return valid_text(_ESCAPES.sub(decode, text))


def json_size(text: str) -> int:
    """Bytes `text` takes as a JSON string in UTF-8, quotes included (as Spark's to_json
    writes it: quotes, backslashes and control characters escaped).
    """
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "replace"))


def _cut(text: str, limit: int) -> str:
    """`text[:p]` for the largest `p <= limit` that splits no hit the detectors find in
    `text[:limit + CUT_MARGIN]`: a value the cut would split is left out whole.
    """
    if len(text) <= limit:
        return text
    p = limit
    for hit in detect(text[: limit + CUT_MARGIN]):
        if hit.start < p < hit.end:
            p = hit.start
    return text[:p]


def masked_prefix(text: str, max_bytes: int, max_chars: int | None = None) -> str:
    """The masked start of `text` whose `json_size` is at most `max_bytes` and that masks at
    most `max_chars` characters of `text` ("" if nothing fits). The text is cut before it is
    masked, never inside a hit (`CUT_MARGIN`), so only a bounded part is ever masked.
    """
    text = valid_text(text)
    limit = max(0, max_bytes - 2)  # characters: each takes one byte at least
    if max_chars is not None:
        limit = min(limit, max_chars)
    for _ in range(8):
        masked = mask(_cut(text, limit))
        size = json_size(masked)
        if size <= max_bytes:
            return masked
        # Escapes and multi-byte characters: shrink in proportion and retry.
        limit = min(limit, len(text)) * max_bytes // size * 9 // 10
    return ""


@dataclass(frozen=True)
class DlqPayload:
    """What the DLQ record keeps of one message: its scrubbed payload and error messages."""

    payload: str
    errors: list[str]
    truncated: bool  # the payload is a masked prefix of the message
    original_bytes: int  # length of the whole message
    original_sha256: str | None  # SHA-256 (hex) of the whole message when truncated


def bounded_errors(errors: Sequence[str] | None) -> list[str]:
    """The masked error messages: at most `MAX_ERRORS` (and a last one counting the rest),
    each at most `MAX_ERROR_BYTES` bytes as a JSON string.
    """
    errors = list(errors or [])
    kept = [masked_prefix(e, MAX_ERROR_BYTES) for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        first = errors[0]
        reason = first.split("|", 1)[0] if "|" in first[:64] else "error"
        kept.append(mask(f"{reason}|$: {len(errors) - MAX_ERRORS} more errors not shown"))
    return kept


def dlq_payload(
    value: bytes,
    errors: Sequence[str] | None,
    *,
    max_bytes: int,
    prefix_bytes: int = PAYLOAD_PREFIX_BYTES,
) -> DlqPayload:
    """The scrubbed payload and errors of one message, together at most `max_bytes` as JSON
    strings (`json_size`).

    A message of at most `prefix_bytes` whose scrubbed text fits is kept whole
    (`scrub_payload`); any other is cut to a prefix (JSON escapes decoded) and masked, and
    its length and SHA-256 are kept. Never raises; the work is bounded by `prefix_bytes`
    and the error limits, whatever the message holds.
    """
    kept_errors = bounded_errors(errors)
    budget = max_bytes - sum(json_size(e) + 1 for e in kept_errors) - 2
    while budget < 2 and kept_errors:  # only with a tiny max_bytes
        budget += json_size(kept_errors.pop()) + 1
    if len(value) <= prefix_bytes:
        payload = scrub_payload(value.decode("utf-8", "replace"))
        if json_size(payload) <= budget:
            return DlqPayload(payload, kept_errors, False, len(value), None)
    head = value[: prefix_bytes + 4 * CUT_MARGIN]
    text = unescape_json_text(head.decode("utf-8", "replace"))
    limit = prefix_bytes
    if len(head) < len(value):  # the text itself is cut: no hit can be seen past its end
        limit = min(limit, len(text) - CUT_MARGIN)
    payload = masked_prefix(text, max(budget, 2), max(limit, 0))
    digest = hashlib.sha256(value).hexdigest()
    return DlqPayload(payload, kept_errors, True, len(value), digest)
