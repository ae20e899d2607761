"""The DLQ scrubber: no record can make it raise, run unbounded or write invalid or
oversized output, and ordinary records are scrubbed exactly as before."""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

import pytest

from pipelines.privacy.detectors import mask
from pipelines.privacy.pseudonym import pseudonymize
from pipelines.privacy.scrub import (
    MAX_ERROR_BYTES,
    MAX_ERRORS,
    PAYLOAD_PREFIX_BYTES,
    RAW_ID,
    DlqPayload,
    dlq_payload,
    json_size,
    raw_identifier_fields,
    scrub_payload,
)
from tests.integration.mixed_input import KINDS, build_mixed_input, planted_pii

BUDGET = 1_000_000 - 4_096  # what dlq_records gives the scrubber with the default cap

# Built from parts so that no test file holds a ready-made string a scanner would flag.
EMAIL = "jane.doe" + "@" + "example.org"
CARD = "4111" + "1111" * 3
ANY_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
CARD_DIGITS = re.compile(r"4111[ -]?1111[ -]?1111[ -]?1111")


def _before(raw: str) -> str:
    """The scrubber as it was before it was bounded: the reference for ordinary records."""

    def mask_all(value: Any) -> Any:
        if isinstance(value, str):
            return mask(value)
        if isinstance(value, list):
            return [mask_all(v) for v in value]
        if isinstance(value, dict):
            return {mask(str(k)): mask_all(v) for k, v in value.items()}
        return value

    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return mask(raw)
    if isinstance(event, dict):
        for field in raw_identifier_fields(event):
            event[field] = RAW_ID
    return json.dumps(mask_all(event), ensure_ascii=False, separators=(",", ":"))


def _record_size(r: DlqPayload) -> int:
    """Bytes of payload and errors in the DLQ record's JSON (brackets and commas included)."""
    return json_size(r.payload) + sum(json_size(e) + 1 for e in r.errors) + 2


def _assert_safe(r: DlqPayload, max_bytes: int) -> None:
    r.payload.encode("utf-8")  # raises on a lone surrogate
    for e in r.errors:
        e.encode("utf-8")
    assert _record_size(r) <= max_bytes
    assert len(r.errors) <= MAX_ERRORS + 1


# --- ordinary records -----------------------------------------------------------------------


def test_ordinary_records_are_scrubbed_as_before() -> None:
    rng = random.Random(12)
    # The poison kinds (deep nesting, huge numbers, lone surrogates, PEM storms) broke the
    # scrubber before; they have tests of their own below.
    ordinary = [k for k in KINDS if k not in ("deep", "huge_number", "surrogate", "pem_storm")]
    records = build_mixed_input(rng, seed=12, valid=200, kinds=ordinary * 5, max_message_bytes=8192)
    raw_ids = 0
    for r in records:
        text = r.payload.decode("utf-8", "replace")
        expected = _before(text)
        assert scrub_payload(text) == expected
        if len(r.payload) <= PAYLOAD_PREFIX_BYTES:
            out = dlq_payload(r.payload, ["schema_violation|$.x: missing"], max_bytes=BUDGET)
            assert out == DlqPayload(
                expected, ["schema_violation|$.x: missing"], False, len(r.payload), None
            )
        raw_ids += RAW_ID in expected
    assert raw_ids > 0  # the raw-id records were among them


def test_planted_pii_is_masked_in_values_and_keys() -> None:
    rng = random.Random(3)
    for kind, value in planted_pii(rng, 7):
        doc = {"excerpts": {"prompt": f"call {value} now"}, f"k {value}": 1}
        out = scrub_payload(json.dumps(doc))
        assert value not in out, kind
        assert json.loads(out)["excerpts"]["prompt"].startswith("call [")


# --- numbers --------------------------------------------------------------------------------


def test_card_numbers_written_as_json_numbers_are_masked() -> None:
    raw = f'{{"excerpts":{{"prompt":{CARD}}},"n":[-{CARD},{CARD}.0]}}'
    # The detectors decide on the number's text: "….0" is no card number for them either.
    assert scrub_payload(raw) == f'{{"excerpts":{{"prompt":"[CARD]"}},"n":["-[CARD]",{CARD}.0]}}'
    assert CARD_DIGITS.search(_before(raw))  # before: the card number went to the DLQ


def test_other_numbers_keep_their_exact_text() -> None:
    raw = '{"a":1.50,"b":-0,"c":1E5,"d":[12345,0.000001,true,null,false],"e":NaN}'
    assert scrub_payload(raw) == raw


def test_5000_digit_integers_are_kept_as_text() -> None:
    digits = "7" * 5000
    raw = f'{{"n":{digits},"m":[-{digits}],"f":{digits}.5e-3}}'
    with pytest.raises(ValueError):
        _before(raw)  # before: Python's int limit made the whole batch fail
    assert scrub_payload(raw) == raw
    assert scrub_payload(digits) == digits
    out = dlq_payload(raw.encode(), [], max_bytes=BUDGET)
    assert out.payload == raw and not out.truncated


def test_a_card_inside_a_huge_number_is_no_card_but_one_after_a_sign_is() -> None:
    # The detectors decide on the number's text: 5,000 more digits make it no card number.
    raw = f"[{CARD}{'0' * 5000}, -{CARD}]"
    assert scrub_payload(raw) == f'[{CARD}{"0" * 5000},"-[CARD]"]'


# --- nesting --------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [800, 5_000])
def test_deep_json_is_masked_as_text(depth: int) -> None:
    arrays = "[" * depth + "]" * depth
    objects = '{"a":' * depth + f'"{EMAIL}"' + "}" * depth
    if depth == 800:
        with pytest.raises(RecursionError):
            _before(objects)  # before: RecursionError, the batch failed on every retry
    assert scrub_payload(arrays) == arrays
    assert scrub_payload(objects) == mask(objects)
    assert EMAIL not in scrub_payload(objects)
    out = dlq_payload(objects.encode(), [], max_bytes=BUDGET)
    _assert_safe(out, BUDGET)
    assert ANY_EMAIL.search(out.payload) is None


def test_json_at_the_depth_limit_is_still_scrubbed_field_by_field() -> None:
    doc: Any = {"prompt": int(CARD)}
    for _ in range(63):
        doc = [doc]
    out = json.loads(scrub_payload(json.dumps(doc)))
    for _ in range(63):
        out = out[0]
    assert out == {"prompt": "[CARD]"}


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    raw = json.dumps({"prompt": "[" * 10_000 + f" {CARD}"})
    assert json.loads(scrub_payload(raw)) == {"prompt": "[" * 10_000 + " [CARD]"}


# --- text encoding --------------------------------------------------------------------------


def test_lone_surrogates_in_values_and_keys_become_replacement_characters() -> None:
    raw = '{"a":"\\ud800","\\udc00k":["x\\udfff"],"ok":"\\ud83d\\ude00"}'
    assert _before('{"a":"\\ud800"}') == '{"a":"\ud800"}'  # before: not valid UTF-8
    out = scrub_payload(raw)
    assert out == '{"a":"\ufffd","\ufffdk":["x\ufffd"],"ok":"\U0001f600"}'
    out.encode("utf-8")
    # Unescaped surrogates (in text that is not JSON) too.
    assert scrub_payload("not json \ud800") == "not json \ufffd"


def test_invalid_utf8_becomes_replacement_characters() -> None:
    value = b'{"prompt":"\xff\xfe ' + EMAIL.encode() + b' \xed\xa0\x80","k\xc3":1}'
    out = dlq_payload(value, [], max_bytes=BUDGET)
    assert out.payload == '{"prompt":"\ufffd\ufffd [EMAIL] \ufffd\ufffd\ufffd","k\ufffd":1}'
    assert not out.truncated and out.original_bytes == len(value)
    # What Spark's make_valid_utf8 passes on (U+FFFD already in place) is kept as it is.
    assert scrub_payload('{"a":"\ufffd"}') == '{"a":"\ufffd"}'


# --- size -----------------------------------------------------------------------------------


def _big_record(size: int) -> bytes:
    filler = f"text with {EMAIL} and {CARD} inside, ".encode()
    body = filler * (size // len(filler) + 1)
    return b'{"excerpts":{"prompt":"' + body[:size] + b'"}}'


def test_a_2mb_record_is_cut_to_a_masked_prefix_with_hash_and_length() -> None:
    value = _big_record(2_000_000)
    out = dlq_payload(value, ["message_too_large|$: 2000026 bytes"], max_bytes=BUDGET)
    _assert_safe(out, BUDGET)
    assert out.truncated
    assert out.original_bytes == len(value)
    assert out.original_sha256 == hashlib.sha256(value).hexdigest()
    assert len(out.payload) <= PAYLOAD_PREFIX_BYTES  # only a bounded prefix was masked
    assert out.payload.startswith('{"excerpts":{"prompt":"text with [EMAIL] and [CARD] inside')
    assert ANY_EMAIL.search(out.payload) is None
    assert CARD_DIGITS.search(out.payload) is None


def test_a_pem_storm_is_cut_before_it_is_masked() -> None:
    value = b"-----BEGIN PRIVATE KEY-----\n" * 33_000  # 924,000 bytes
    out = dlq_payload(value, [], max_bytes=BUDGET)
    _assert_safe(out, BUDGET)
    assert out.truncated and out.original_sha256 == hashlib.sha256(value).hexdigest()
    assert len(out.payload) <= PAYLOAD_PREFIX_BYTES
    assert "BEGIN" not in out.payload
    assert out.payload.startswith("[PRIVATE_KEY]\n[PRIVATE_KEY]\n")


@pytest.mark.parametrize("max_bytes", [4_096, 20_000, 100_000, BUDGET])
def test_escaping_never_makes_the_record_exceed_its_bound(max_bytes: int) -> None:
    poisons = [
        b'["' + b"\\u0001" * 20_000 + b'"]',  # each character becomes 6 bytes in the DLQ
        b"\x01" * 60_000,
        b'"' * 60_000,
        ("\u20ac" * 30_000).encode(),  # 3 bytes each
        ("\U0001f600" * 20_000).encode(),  # 4 bytes each
        _big_record(2_000_000),
        b"[" * 60_000,
    ]
    for value in poisons:
        out = dlq_payload(value, ["invalid_json|$: " + "x" * 5000], max_bytes=max_bytes)
        _assert_safe(out, max_bytes)
        assert out.original_bytes == len(value)
        if out.truncated:
            assert out.original_sha256 == hashlib.sha256(value).hexdigest()
        else:
            assert out.payload == scrub_payload(value.decode("utf-8", "replace"))


def test_a_value_split_by_the_cut_is_left_out_whole() -> None:
    card = " ".join([CARD[i : i + 4] for i in range(0, 16, 4)])
    head = b'"' + b"x" * (PAYLOAD_PREFIX_BYTES - 12) + b" "
    value = head + card.encode() + b' "' + b"y" * 100_000
    # A plain cut at the limit keeps a fragment the detectors no longer see as a card.
    assert "4111 1111" in mask(value[:PAYLOAD_PREFIX_BYTES].decode())
    out = dlq_payload(value, [], max_bytes=BUDGET)
    assert out.truncated
    assert out.payload == head.decode()


def test_json_escapes_in_a_cut_message_do_not_hide_secrets() -> None:
    hidden = EMAIL.replace("@", "\\u0040")
    key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".replace("/", "\\/")
    value = (f'{{"prompt":"{hidden} {key}\\n' + "z " * 50_000 + '"}').encode()
    out = dlq_payload(value, [], max_bytes=BUDGET)
    assert out.truncated
    assert out.payload.startswith('{"prompt":"[EMAIL] [SECRET]\n')


def test_tiny_bounds_still_hold() -> None:
    out = dlq_payload(_big_record(100_000), ["e|$: " + EMAIL * 500] * 50, max_bytes=1_000)
    _assert_safe(out, 1_000)
    assert EMAIL not in out.payload + "".join(out.errors)


# --- errors ---------------------------------------------------------------------------------


def test_error_messages_are_bounded_in_number_and_length() -> None:
    errors = [
        f"schema_violation|$.f{i}: unexpected field(s) {EMAIL} " + "k," * 5000 for i in range(500)
    ]
    out = dlq_payload(b"{}", errors, max_bytes=BUDGET)
    assert len(out.errors) == MAX_ERRORS + 1
    assert all(json_size(e) <= MAX_ERROR_BYTES for e in out.errors)
    assert all(
        e.startswith(f"schema_violation|$.f{i}: unexpected field(s) [EMAIL] k,")
        for i, e in enumerate(out.errors[:-1])
    )
    assert out.errors[-1] == f"schema_violation|$: {500 - MAX_ERRORS} more errors not shown"
    assert out.payload == "{}" and not out.truncated


def test_repeated_id_fields_are_each_replaced() -> None:
    pseudonym = pseudonymize("u1", b"k")
    raw = f'{{"user_id":"{EMAIL}","user_id":"{pseudonym}","tenant_id":12}}'
    assert (
        scrub_payload(raw)
        == f'{{"user_id":"{RAW_ID}","user_id":"{pseudonym}","tenant_id":"{RAW_ID}"}}'
    )
