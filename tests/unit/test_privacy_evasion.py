"""Obfuscated personal data and secrets are still found, masked whole, and screened; public
contacts on the deployment's allow-list are not hits.

Each evasion case is a plain identifier (one the detector finds, with the detector named
here) rewritten by one obfuscation whose output a reader sees as the same identifier:
invisible characters inside it, other spaces and dashes between its groups, fullwidth or
other-script digits, look-alike letters, an escaped "@". The expected outcome is fixed by
construction: one hit over exactly the obfuscated identifier, and a mask that leaves the
words around it and nothing of it.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipelines.contract.records import REDACTED_TEXT, Limits, RecordChecker
from pipelines.contract.shapes import INPUT_SCHEMA
from pipelines.privacy.detectors import (
    DETECTORS,
    AllowList,
    detect,
    detector_names,
    mask,
    screen_pattern,
)
from pipelines.privacy.normalise import CONFUSABLES, normalise, normalise_mapped
from pipelines.settings import PrivacySettings, Settings
from pipelines.stream.counting import REDACTED_VALUE, Counting, _screened
from schemas import example_paths

SCREEN = re.compile(screen_pattern())
SHORT_JWT = (  # its payload {"sub":"1234567890"} is 27 characters long
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
PLACEHOLDER = {d.name: d.placeholder for d in DETECTORS}

# (identifier as written plainly, the detector that finds it)
IDENTIFIERS: list[tuple[str, str]] = [
    ("jane.doe@example.org", "email"),
    ("+44 20 7946 0958", "phone"),
    ("(415) 555-0132", "phone"),
    ("415-555-0132", "phone"),
    ("4111 1111 1111 1111", "payment_card"),
    ("5500-0000-0000-0004", "payment_card"),
    ("DE89 3704 0044 0532 0130 00", "iban"),
    ("GB82 WEST 1234 5698 7654 32", "iban"),
    ("123-45-6789", "us_ssn"),
    ("192.168.1.20", "ipv4"),
    ("2001:db8::1", "ipv6"),
    ("AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "api_key"),
    ("ghp_a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2a1B2", "api_key"),
]

# Look-alikes written out here, independently of normalise.CONFUSABLES.
_CYRILLIC = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у",
             "A": "А", "B": "В", "E": "Е", "K": "К", "M": "М", "H": "Н", "O": "О",
             "P": "Р", "C": "С", "T": "Т", "X": "Х"}  # fmt: skip
_GREEK = {"o": "ο", "A": "Α", "B": "Β", "E": "Ε", "I": "Ι", "K": "Κ", "O": "Ο", "T": "Τ"}


def _every(n: int, mark: str) -> Callable[[str], str]:
    """Insert `mark` after every `n`-th character (never at the ends)."""

    def obfuscate(s: str) -> str:
        return "".join(ch + (mark if (i + 1) % n == 0 and i + 1 < len(s) else "")
                       for i, ch in enumerate(s))  # fmt: skip

    return obfuscate


def _digits(zero: int) -> Callable[[str], str]:
    return lambda s: "".join(chr(zero + int(ch)) if ch.isdigit() else ch for ch in s)


def _fullwidth(s: str) -> str:
    return "".join(
        "\u3000" if ch == " " else chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in s
    )


def _letters(table: dict[str, str]) -> Callable[[str], str]:
    return lambda s: "".join(table.get(ch, ch) for ch in s)


def _chars(old: str, new: str) -> Callable[[str], str]:
    return lambda s: s.replace(old, new)


OBFUSCATIONS: dict[str, Callable[[str], str]] = {
    "zero-width space": _every(3, "\u200b"),
    "zero-width joiner and non-joiner": lambda s: _every(5, "\u200d")(_every(2, "\u200c")(s)),
    "soft hyphen": _every(4, "\u00ad"),
    "word joiner": _every(1, "\u2060"),
    "byte-order mark": _every(6, "\ufeff"),
    "bidirectional isolate": lambda s: s[:3] + "\u2066" + s[3:-2] + "\u2069" + s[-2:],
    "combining accent": _every(2, "\u0301"),
    "variation selector": _every(3, "\ufe0f"),
    "fullwidth": _fullwidth,
    "Arabic-Indic digits": _digits(0x0660),
    "Devanagari digits": _digits(0x0966),
    "mathematical bold digits": _digits(0x1D7CE),
    "no-break space": _chars(" ", "\u00a0"),
    "narrow no-break space": _chars(" ", "\u202f"),
    "figure space": _chars(" ", "\u2007"),
    "ideographic space": _chars(" ", "\u3000"),
    "en dash": _chars("-", "\u2013"),
    "non-breaking hyphen": _chars("-", "\u2011"),
    "minus sign": _chars("-", "\u2212"),
    "fullwidth hyphen": _chars("-", "\uff0d"),
    "fullwidth full stop": _chars(".", "\uff0e"),
    "one dot leader": _chars(".", "\u2024"),
    "fullwidth at": _chars("@", "\uff20"),
    "small at": _chars("@", "\ufe6b"),
    "URL-escaped at": _chars("@", "%40"),
    "HTML decimal reference at": _chars("@", "&#64;"),
    # Escaped dots count only in an address (a run with an escaped "@").
    "HTML hex references in an address": lambda s: (
        s.replace("@", "&#x40;").replace(".", "&#x2E;") if "@" in s else s
    ),
    "HTML named reference at": _chars("@", "&commat;"),
    "Cyrillic look-alikes": _letters(_CYRILLIC),
    "Greek look-alikes": _letters(_GREEK),
    "fullwidth with zero-width spaces": lambda s: _every(2, "\u200b")(_fullwidth(s)),
    "Arabic-Indic digits, no-break spaces": lambda s: _digits(0x0660)(s.replace(" ", "\u00a0")),
}

CASES = [
    pytest.param(obfuscate(plain), detector, id=f"{detector}:{plain}:{name}")
    for plain, detector in IDENTIFIERS
    for name, obfuscate in OBFUSCATIONS.items()
    if obfuscate(plain) != plain
]
BEFORE, AFTER = "please note ", " thanks"


def test_the_evasion_suite_is_broad() -> None:
    assert len(CASES) >= 60
    assert {p.values[1] for p in CASES} == {d for _, d in IDENTIFIERS}
    # Every obfuscation is used on some identifier.
    assert {str(p.id).rsplit(":", 1)[1] for p in CASES} == set(OBFUSCATIONS)


@pytest.mark.parametrize(("value", "detector"), CASES)
def test_obfuscated_identifiers_are_found_screened_and_masked_whole(
    value: str, detector: str
) -> None:
    text = f"{BEFORE}{value}{AFTER}"
    hits = detect(text)
    assert [(h.detector, text[h.start : h.end]) for h in hits] == [(detector, value)]
    assert SCREEN.search(normalise(text))
    assert mask(text) == f"{BEFORE}{PLACEHOLDER[detector]}{AFTER}"


@pytest.mark.parametrize(("value", "detector"), CASES)
def test_the_record_screen_flags_obfuscated_identifiers(value: str, detector: str) -> None:
    checker = _checker()
    out = checker.check_batch(_batch([_event(f"{BEFORE}{value}{AFTER}")]), None).to_pylist()
    # Counted as a redaction failure, the text dropped.
    assert out[0]["detectors"] == [detector]
    assert out[0]["event"]["excerpts"]["prompt"] == REDACTED_TEXT


@pytest.mark.parametrize(("value", "detector"), CASES[::7])
def test_counting_redacts_obfuscated_segment_values(value: str, detector: str) -> None:
    # A segment value of a record rejected for another reason is screened by counting alone.
    counting = Counting(window_s=300, dimensions=("model_version",), users_lg_k=12,
                        screen=screen_pattern())  # fmt: skip
    assert _screened(value, counting) == REDACTED_VALUE
    assert _screened("atlas-s-2026.08.1", counting) == "atlas-s-2026.08.1"


HOSTILE = {
    "apostrophes": "a'" * 30_000,
    "ampersands": "a&" * 30_000,
    "eyJ run": "eyJ" * 20_000,
    "JWT-like parts": ("eyJ" + "a" * 40 + ".") * 1_500,
    "local parts": ("a'b&c" * 13 + "@") * 1_000,
    "escaped at": "a%40" * 20_000,
    "HTML references": "a&#64;&period;" * 5_000,
    "card groups": "4111 " * 12_000,
    "card groups with dots": "4111." * 12_000,
    "parenthesised area codes": "(212) 555 " * 6_000,
    "zero-width digits": "4\u200b" * 30_000,
    "distinct look-alikes": "".join(chr(c) for c in range(0x1D400, 0x1D6A4)) * 100,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_texts_take_linear_time(text: str) -> None:
    # CPU time, not wall time: other processes do not count. Each takes milliseconds; a
    # quadratic scan over 60,000 characters takes seconds.
    started = time.process_time()
    SCREEN.search(normalise(text))
    detect(text)
    assert time.process_time() - started < 1.0


# --- normalise ------------------------------------------------------------------------------


def test_plain_ascii_takes_the_fast_path() -> None:
    text = "nothing to see here: 2024-01-15, v1.2.3"
    assert normalise(text) is text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("j\u200bane\u00ad@exa\u2060mple.com", "jane@example.com"),
        ("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "jane@example.com"),
        ("jаne@exаmple.com", "jane@example.com"),  # Cyrillic а
        ("٤١٥-٥٥٥-٠١٣٢", "415-555-0132"),
        ("४१५\u2013५५५\u2013०१३२", "415-555-0132"),
        ("4111\u00a01111\u202f1111\u30001111", "4111 1111 1111 1111"),
        ("josé@example.com", "jose@example.com"),
        ("o\u2019neil@example.org", "o'neil@example.org"),
        ("jane.doe%40example.com", "jane.doe@example.com"),
        ("a%2Eb%40c%2ecom", "a.b@c.com"),
        ("50% or 100%2E of it", "50% or 100%2E of it"),  # no escaped "@" in the run
        ("jane&#64;example&#46;com", "jane@example.com"),
        ("jane&#X40;example&period;com, R&D&commat;x.io", "jane@example.com, R&D@x.io"),
        ("Q&amp;A at noon; AT&T; 10&#46;0&#46;1", "Q&amp;A at noon; AT&T; 10&#46;0&#46;1"),
        ("中文 日本語 한국어 ελλη", "中文 日本語 한국어 ελλη"),  # Hangul recomposed
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected
    assert normalise_mapped(raw)[0] == expected


def test_normalise_is_idempotent_character_by_character() -> None:
    # `normalise` replaces one distinct character after the other, which is only the same as
    # one pass if what a character becomes is left as it is.
    changed = 0
    for code in range(0x80, 0x30000, 3):
        if 0xD800 <= code < 0xE000:
            continue
        once = normalise(chr(code))
        assert normalise(once) == once, hex(code)
        changed += once != chr(code)
    assert changed > 1000


@pytest.mark.parametrize("distinct", [3, 16, 17, 2000])
def test_normalise_is_the_same_whatever_the_number_of_characters_to_change(
    distinct: int,
) -> None:
    # A few distinct characters to change are replaced one by one; many (a text made to be
    # slow) are translated in one pass. Both give the character-by-character result.
    changing = [chr(c) for c in range(0xFF10, 0xFF5B)]  # fullwidth digits and letters
    changing += [chr(c) for c in range(0x1D400, 0x1D6A4) if normalise(chr(c)) != chr(c)]
    text = " and ".join(changing[:distinct]) * 3
    assert normalise(text) == "".join(normalise(ch) for ch in text)


def test_confusables_map_to_the_letter_they_resemble() -> None:
    for ch, ascii_ch in CONFUSABLES.items():
        assert not ch.isascii() and ascii_ch.isascii()
        if unicodedata.category(ch) in ("Ll", "Lu"):
            # The Unicode name says which script; the case agrees with the ASCII letter's.
            assert unicodedata.name(ch).split()[0] in {"CYRILLIC", "GREEK", "ARMENIAN", "LATIN",
                                                       "LISU"}  # fmt: skip
            assert ch.isupper() == ascii_ch.isupper() or ch in "ꓲ"


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(
        st.one_of(
            st.text(max_size=6),
            st.sampled_from(["%40", "%2E", "a", "@", "\u200b", "１", "٣", "ﬁ", "…", "e\u0301"]),
        ),
        max_size=20,
    ).map("".join)
)
def test_normalise_mapped_agrees_with_normalise(text: str) -> None:
    plain, starts, ends = normalise_mapped(text)
    assert plain == normalise(text)
    assert len(starts) == len(ends) == len(plain)
    assert all(0 <= a < b <= len(text) for a, b in zip(starts, ends, strict=True))
    assert starts == sorted(starts) and ends == sorted(ends)
    # Each character of the result comes from its span: an ASCII character is copied, an
    # escape is "%" and two hex digits.
    for ch, a, b in zip(plain, starts, ends, strict=True):
        source = text[a:b]
        assert b - a == 1 or (b - a == 3 and source[0] == "%")
        if source.isascii() and b - a == 1:
            assert source == ch


# --- formats and whole-match masks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail firstname.o'neil@example.org now", "mail [EMAIL] now"),
        ("mail firstname.o\u2019neil@example.org now", "mail [EMAIL] now"),
        (f"jwt {SHORT_JWT}.", "jwt [JWT]."),
        ("amex 3782 8224 6310 005 and 3782-8224-6310-005", "amex [CARD] and [CARD]"),
        ("amex 3782 822463 10005 and 3714-496353-98431", "amex [CARD] and [CARD]"),
        ("call (212) 555 0147 or (212)\u00a0555\u00a00147", "call [PHONE] or [PHONE]"),
    ],
)
def test_whole_matches_are_masked(text: str, masked: str) -> None:
    assert mask(text) == masked
    assert SCREEN.search(normalise(text))


# --- allow-list -----------------------------------------------------------------------------

HELPLINES = AllowList(
    values=("1-800-273-8255", "Support@Example.com"),
    patterns=("[a-z]+@help[.]example[.]org", "[+]1 800 [0-9]{3} [0-9]{4}"),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call 1-800-273-8255 now", []),
        ("call １-８００-２７３-８２５５ now", []),  # compared normalised
        ("write to support@example.com", []),  # ignoring case
        ("write to desk@help.example.org", []),
        ("call +1 800 555 0199", []),
        # not allowed: another number, another address, a longer address around the value
        ("call 1-800-273-8256 now", ["phone"]),
        ("write to jane@example.com", ["email"]),
        ("write to xsupport@example.com", ["email"]),
        ("write to desk@help.example.org.uk", ["email"]),  # the pattern must match whole
        ("call 1-800-273-8255 or 415-555-0132", ["phone"]),
    ],
)
def test_the_allow_list_drops_only_allowed_hits(text: str, expected: list[str]) -> None:
    assert detector_names(text, HELPLINES) == expected
    # Without the allow-list every one of them is a hit.
    assert detect(text) != []


def test_mask_keeps_allowed_contacts() -> None:
    text = "Helpline 1-800-273-8255, support@example.com; Jane: jane@example.com, 415-555-0132"
    assert mask(text, HELPLINES) == (
        "Helpline 1-800-273-8255, support@example.com; Jane: [EMAIL], [PHONE]"
    )
    assert mask(text) == "Helpline [PHONE], [EMAIL]; Jane: [EMAIL], [PHONE]"


def test_an_invalid_allowed_pattern_is_named() -> None:
    with pytest.raises(ValueError, match=r"allowed pattern '\[0-9' is not a valid"):
        AllowList(patterns=("[0-9",))


def test_the_allow_list_is_hashable_for_caching() -> None:
    assert hash(HELPLINES) == hash(AllowList(values=HELPLINES.values, patterns=HELPLINES.patterns))
    from_lists = AllowList(values=list(HELPLINES.values), patterns=list(HELPLINES.patterns))  # type: ignore[arg-type]
    assert from_lists == HELPLINES and hash(from_lists) == hash(HELPLINES)
    assert detector_names("call 1-800-273-8255", from_lists) == []


def test_privacy_settings_hold_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PrivacySettings().pii_allowed_values == ()
    assert PrivacySettings().pii_allowed_patterns == ()
    monkeypatch.setenv("SAFEWATCH_PRIVACY__PII_ALLOWED_VALUES", "1-800-273-8255, help@example.org")
    monkeypatch.setenv("SAFEWATCH_PRIVACY__PII_ALLOWED_PATTERNS", '["[0-9]{1,3}-800-[0-9-]+"]')
    privacy = Settings().privacy
    assert privacy.pii_allowed_values == ("1-800-273-8255", "help@example.org")
    assert privacy.pii_allowed_patterns == ("[0-9]{1,3}-800-[0-9-]+",)
    allow = AllowList(values=privacy.pii_allowed_values, patterns=privacy.pii_allowed_patterns)
    assert detector_names("call 1-800-555-0199 or help@example.org", allow) == []
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        PrivacySettings(pii_allowed_patterns=("(unclosed",))


# --- the record checker -----------------------------------------------------------------------

LIMITS = Limits(
    max_message_bytes=1_000_000, max_future=timedelta(minutes=5), max_age=timedelta(days=7)
)
EXAMPLE = json.loads(next(iter(example_paths())).read_text())


def _checker(allow: AllowList | None = None) -> RecordChecker:
    return RecordChecker(
        LIMITS, screen=screen_pattern(), detect=partial(detector_names, allow=allow)
    )


def _event(prompt: str) -> dict[str, object]:
    event = json.loads(json.dumps(EXAMPLE))
    event["event_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event["excerpts"] = {"prompt": prompt, "response": None}
    return event


def _batch(events: list[dict[str, object]]) -> pa.RecordBatch:
    n = len(events)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(["t"] * n),
            pa.array([0] * n, pa.int32()),
            pa.array(range(n), pa.int64()),
            pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            pa.array([json.dumps(e).encode() for e in events], pa.binary()),
        ],
        schema=INPUT_SCHEMA,
    )


def test_the_checker_keeps_allowed_contacts_and_drops_the_rest() -> None:
    prompts = [
        "If you are in crisis call 1-800-273-8255 or mail support@example.com.",
        "If you are in crisis call 1-800-273-8255 or mail jane@example.com.",
        "nothing personal here",
    ]
    events = [_event(p) for p in prompts]
    allowed = _checker(HELPLINES).check_batch(_batch(events), None).to_pylist()
    assert [r["detectors"] for r in allowed] == [None, ["email"], None]
    kept = [r["event"]["excerpts"]["prompt"] for r in allowed]
    assert kept == [prompts[0], REDACTED_TEXT, prompts[2]]
    # Without an allow-list the helpline is a redaction failure, as it was before.
    plain = _checker().check_batch(_batch(events), None).to_pylist()
    assert [r["detectors"] for r in plain] == [["email", "phone"], ["email", "phone"], None]
