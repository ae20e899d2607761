"""Pseudonymous identifiers: HMAC-SHA256 under a key, in the contract's 64-hex form."""

from __future__ import annotations

import pytest

from pipelines.privacy.pseudonym import PSEUDONYM_PATTERN, is_pseudonym, pseudonymize


def test_rfc4231_test_case_2() -> None:
    # RFC 4231, 4.3 (test case 2): key "Jefe", data "what do ya want for nothing?".
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert pseudonymize("what do ya want for nothing?", b"Jefe") == expected


def test_deterministic_and_key_dependent() -> None:
    a = pseudonymize("user-00042", b"key-a")
    assert a == pseudonymize("user-00042", b"key-a")
    assert a != pseudonymize("user-00042", b"key-b")
    assert a != pseudonymize("user-00043", b"key-a")


def test_form_matches_the_contract() -> None:
    value = pseudonymize("tenant-001", b"k")
    assert PSEUDONYM_PATTERN.fullmatch(value)
    assert len(value) == 64 and value == value.lower()
    assert is_pseudonym(value)


@pytest.mark.parametrize(
    "value",
    ["", "user-00042", "A" * 64, "0" * 63, "0" * 65, "g" * 64, "0" * 64 + "\n", None, 42],
)
def test_is_pseudonym_rejects_other_values(value: object) -> None:
    assert not is_pseudonym(value)


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        pseudonymize("user-1", b"")
