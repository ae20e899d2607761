"""PII and secret detectors: what each finds and misses, masking, and the JVM screen's parity.

Expected values come from outside this code: card numbers are the payment processors'
published test numbers, IBANs the registry's examples, SSN ranges the SSA's rules, and the
expected entropy of random strings is checked against a Monte Carlo estimate.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.privacy.detectors import (
    DETECTORS,
    SCREEN_ANCHORS,
    Detector,
    Hit,
    detect,
    detector_names,
    mask,
    screen_pattern,
)
from pipelines.privacy.normalise import normalise
from pipelines.privacy.pseudonym import pseudonymize
from pipelines.privacy.validators import (
    ENTROPY_MARGIN_BITS,
    card_prefix_plausible,
    expected_random_entropy,
    iban_checksum_valid,
    luhn_valid,
    shannon_entropy,
    valid_high_entropy,
    valid_us_ssn,
)

SCREEN = re.compile(screen_pattern())
NAMES = [d.name for d in DETECTORS]


def found(text: str) -> list[tuple[str, str]]:
    return [(h.detector, text[h.start : h.end]) for h in detect(text)]


def random_b64(rng: random.Random, length: int) -> str:
    return base64.b64encode(rng.randbytes(length)).decode()[:length]


# Header and signature of 20 and 43 characters, payload {"sub":"1234567890"} of 27.
SHORT_JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\nAwEHoUQDQg==\n-----END EC PRIVATE KEY-----"

# --- positives: (text, detector, the exact hit) -------------------------------------------

POSITIVES: list[tuple[str, str, str]] = [
    # email
    ("write to jane.doe@example.org today", "email", "jane.doe@example.org"),
    ("x_y-z+tag@sub.mail.example.co.uk.", "email", "x_y-z+tag@sub.mail.example.co.uk"),
    ("a@b.io", "email", "a@b.io"),
    # the apostrophe and "&" are legal in the local part; "(" before an address is not in it
    ("firstname.o'neil@example.org", "email", "firstname.o'neil@example.org"),
    ("(o'neil@example.org)", "email", "o'neil@example.org"),
    ("R&D@example.com", "email", "R&D@example.com"),
    ("'quoted@example.com'", "email", "quoted@example.com"),
    # phone: international with +, 00 and E.164, and US national forms
    ("call +1 (415) 555-0132 now", "phone", "+1 (415) 555-0132"),
    ("+44 20 7946 0958", "phone", "+44 20 7946 0958"),
    ("+44 (0)20 7946 0958", "phone", "+44 (0)20 7946 0958"),
    ("Berlin: +49 30 901820.", "phone", "+49 30 901820"),
    ("0049 30 901820", "phone", "0049 30 901820"),
    ("+33 1 23 45 67 89", "phone", "+33 1 23 45 67 89"),
    ("+7 495 123-45-67", "phone", "+7 495 123-45-67"),
    ("+81 3-1234-5678", "phone", "+81 3-1234-5678"),
    ("+1.415.555.0132", "phone", "+1.415.555.0132"),
    ("tel:+442079460958", "phone", "+442079460958"),
    ("(415) 555-0132", "phone", "(415) 555-0132"),
    ("(415)555-0132", "phone", "(415)555-0132"),
    ("ring 415-555-0132!", "phone", "415-555-0132"),
    ("415.555.0132", "phone", "415.555.0132"),
    ("1-800-555-0199", "phone", "1-800-555-0199"),
    ("call 888 621-6988 now", "phone", "888 621-6988"),
    ("call (212) 555 0147 now", "phone", "(212) 555 0147"),
    ("(212)555 0147", "phone", "(212)555 0147"),
    ("1 (212) 555 0147", "phone", "1 (212) 555 0147"),
    # payment cards: published test numbers in several groupings
    ("4111111111111111", "payment_card", "4111111111111111"),
    ("card 4111 1111 1111 1111 please", "payment_card", "4111 1111 1111 1111"),
    ("5500-0000-0000-0004", "payment_card", "5500-0000-0000-0004"),
    ("4242 4242 4242 4242", "payment_card", "4242 4242 4242 4242"),
    ("2223 0031 2200 3222", "payment_card", "2223 0031 2200 3222"),
    ("amex 378282246310005", "payment_card", "378282246310005"),
    ("amex 3782 822463 10005", "payment_card", "3782 822463 10005"),
    ("amex 3782-822463-10005", "payment_card", "3782-822463-10005"),
    ("amex 3782 8224 6310 005 exp", "payment_card", "3782 8224 6310 005"),
    ("amex 3714-4963-5398-431.", "payment_card", "3714-4963-5398-431"),
    ("card 4111.1111.1111.1111 ok", "payment_card", "4111.1111.1111.1111"),
    ("diners 3056 930902 5904", "payment_card", "3056 930902 5904"),
    ("6011 1111 1111 1117", "payment_card", "6011 1111 1111 1117"),
    ("jcb 3530111333300000", "payment_card", "3530111333300000"),
    ("visa-13 4222222222222", "payment_card", "4222222222222"),
    ("unionpay 6200000000000005", "payment_card", "6200000000000005"),
    ("4111 1111 1111 1111 12/27", "payment_card", "4111 1111 1111 1111 12"),
    ("1234 4111 1111 1111 1111", "payment_card", "4111 1111 1111 1111"),
    # US SSN
    ("SSN 123-45-6789.", "us_ssn", "123-45-6789"),
    ("078-05-1120", "us_ssn", "078-05-1120"),
    ("899-99-9999", "us_ssn", "899-99-9999"),
    # IBAN: registry examples, grouped and compact
    ("IBAN DE89 3704 0044 0532 0130 00", "iban", "DE89 3704 0044 0532 0130 00"),
    ("DE89370400440532013000", "iban", "DE89370400440532013000"),
    ("GB82 WEST 1234 5698 7654 32", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("FR14 2004 1010 0505 0001 3M02 606", "iban", "FR14 2004 1010 0505 0001 3M02 606"),
    ("NO93 8601 1117 947", "iban", "NO93 8601 1117 947"),
    ("BE68 5390 0754 7034 THEN", "iban", "BE68 5390 0754 7034 THEN"),
    # IPv4
    ("from 10.0.0.1 and", "ipv4", "10.0.0.1"),
    ("192.168.1.20", "ipv4", "192.168.1.20"),
    ("dns 8.8.8.8.", "ipv4", "8.8.8.8"),
    ("http://10.0.0.1:8080/x", "ipv4", "10.0.0.1"),
    ("10.0.0.0/8 is private", "ipv4", "10.0.0.0"),
    ("host=255.255.255.255;", "ipv4", "255.255.255.255"),
    # IPv6
    ("ip: 2001:db8::1", "ipv6", "2001:db8::1"),
    ("[2001:db8::1]:8080", "ipv6", "2001:db8::1"),
    ("fe80::1%eth0", "ipv6", "fe80::1"),
    ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ipv6", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("::ffff:192.0.2.128", "ipv6", "::ffff:192.0.2.128"),
    ("1080::8:800:200C:417A", "ipv6", "1080::8:800:200C:417A"),
    # secrets
    ("AKIAIOSFODNN7EXAMPLE", "aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("id=ASIAY34FZKBOKMUTVV7A,", "aws_access_key", "ASIAY34FZKBOKMUTVV7A"),
    ("-----BEGIN RSA PRIVATE KEY-----", "private_key", "-----BEGIN RSA PRIVATE KEY-----"),
    ("-----BEGIN PRIVATE KEY-----", "private_key", "-----BEGIN PRIVATE KEY-----"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "private_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ),
    (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        "private_key",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    ),
    (f"k:\n{PEM}\n", "private_key", PEM),
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig",
        "bearer_token",
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig",
    ),
    ("bearer abcdefghij0123456789KLMNOP", "bearer_token", "bearer abcdefghij0123456789KLMNOP"),
    # a short JWT: its 27-character payload alone is no high_entropy hit
    (
        f"token={SHORT_JWT};",
        "jwt",
        SHORT_JWT,
    ),
    ("a eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end", "jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
    ("key sk-" + "A1b2" * 12, "api_key", "sk-" + "A1b2" * 12),
    ("sk-proj-abcDEF1234567890abcdef", "api_key", "sk-proj-abcDEF1234567890abcdef"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("rk_test_51H8abcdefGHIJKLMNOPQR", "api_key", "rk_test_51H8abcdefGHIJKLMNOPQR"),
    ("ghp_" + "a1B2" * 9, "api_key", "ghp_" + "a1B2" * 9),
    ("gho_" + "Z9y8" * 9, "api_key", "gho_" + "Z9y8" * 9),
    (
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW",
        "api_key",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW",
    ),
    ("xoxb-1234567890-abcdefghij", "api_key", "xoxb-1234567890-abcdefghij"),
    (
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        "api_key",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    ),
    ("glpat-abcdefghij1234567890", "api_key", "glpat-abcdefghij1234567890"),
    # high entropy: AWS's documented example secret, and random base64 of several lengths
    (
        "aws_secret=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "high_entropy",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "secret: 3q2+7wX9/kLm4PzR8sT1vY6uB0nC5dEaF7gH==",
        "high_entropy",
        "3q2+7wX9/kLm4PzR8sT1vY6uB0nC5dEaF7gH",
    ),
    *[
        (f"token {key} end", "high_entropy", key)
        for key in (random_b64(random.Random(n), n) for n in (32, 44, 64, 88))
    ],
]


@pytest.mark.parametrize(("text", "detector", "hit"), POSITIVES)
def test_detects_the_exact_span(text: str, detector: str, hit: str) -> None:
    assert found(text) == [(detector, hit)]


def test_every_detector_has_positive_cases() -> None:
    assert {d for _, d, _ in POSITIVES} == set(NAMES)


# --- negatives ----------------------------------------------------------------------------

NEGATIVES: list[str] = [
    # phone look-alikes: dates, times, timestamps, versions, plain numbers, figures
    "on 2024-01-15 or 15.01.2024 at 12:30:45",
    "2024-01-15T10:20:30Z and 2024-01-15T10:20:30.123+01:00",
    "2024-01-15 10:20:30",
    "2024/01/15, 15/01/2024 10:30, 12/25",
    "version 1.2.3, Python 3.11.4",
    "order 1234567890, order #12345678901234, ORD-20240115-123456",
    "+1 for this idea",
    "UTC+05:30, +0200",
    "+20 000 000 users",
    "sizes 256 512 1024 and 100 200 300 400",
    "between 1990-2000",
    "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2",
    "DOI 10.1016/0022-247X(72)90083-2",
    "555-0132 and 020 7946 0958",
    "sizes (256) 512 10240 and 256 512 1024",
    "$1,234,567.89 and 1,000,000",
    # cards: Luhn-invalid, implausible prefix, order numbers
    "4111111111111112",
    "4111 1111 1111 1112",
    "1234567812345670",
    "0000 0000 0000 0000",
    "order no. 7003456789012345",
    "3782 8224 6310 006",  # Amex 4-4-4-3 with the check digit changed
    "version 2024.0115.1030.9999",
    "tracking 9400111899223197428490",
    "pi = 3.14159265358979323846",
    # SSN outside the ranges the SSA assigns
    "000-12-3456",
    "666-12-3456",
    "900-12-3456",
    "999-99-9999",
    "123-00-4567",
    "123-45-0000",
    # IBAN with one digit changed, and unknown countries
    "DE89 3704 0044 0532 0130 01",
    "DE89370400440532013001",
    "GB82 WEST 1234 5698 7654 33",
    "XX89 3704 0044 0532 0130 00",
    # versions that look like IPv4 addresses
    "Chrome 120.0.6099.109",
    "v2.10.3.1",
    "release 4.1.1.0",
    "version 10.0.0.1",
    'version: "10.0.0.0"',
    '{"version": "1.2.3.4"}',
    "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/120.0.0.0 Safari/537.36",
    "1.2.3.4.5",
    "0.9.1.2",
    "10.0.0.256",
    # IPv6 look-alikes
    "12:30:45",
    "std::vector<int> a; a[1::2]; ::1",
    "dead:beef::cafe",
    "00:1A:2B:3C:4D:5E",
    "use Module::Build; Abc::Def",
    # identifiers that are not secrets
    "550e8400-e29b-41d4-a716-446655440000",
    "04685de5a3450758a4adae1b368c50aafd38fb3e",
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    "getUserAccountSettingsById2024Version",
    "src/main/java/com/example/MyClass2.java",
    "runny-mascara-and-10-Bacardi-Breezers",
    "https://fortune.com/2016/07/19/mortgage-lending-racial-disparities/",
    # secret prefixes without a secret
    "the Bearer of bad news",
    "Bearer Authentication-Scheme-Specification",
    "sk-learn-is-a-library-for-machine-learning",
    "AKIAIOSFODNN7EXAMPL",
    "xoxb-short ghp_short",
    "-----BEGIN PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----",
    "eyJust a word. and eyJhbGciOiJIUzI1NiJ9 alone",
    # obfuscated and incomplete e-mail addresses
    "jane at example dot com, user@localhost, @handle",
    "",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_no_hit(text: str) -> None:
    assert found(text) == []


IDENTIFIERS = [
    *(str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)) for i in range(3)),
    str(uuid.UUID(int=random.Random(9).getrandbits(128), version=4)).upper(),
    hashlib.sha1(b"commit").hexdigest(),
    hashlib.sha256(b"x").hexdigest(),
    pseudonymize("user-00042", b"key"),
]


@pytest.mark.parametrize("value", IDENTIFIERS)
def test_uuids_digests_and_pseudonyms_are_not_secrets(value: str) -> None:
    assert detect(f"id={value} ok") == []


def test_random_base64_keys_are_found_and_hex_digests_are_not() -> None:
    rng = random.Random(2024)
    keys = [random_b64(rng, rng.randint(32, 128)) for _ in range(2000)]
    found_keys = sum(detector_names(f"key {k}") == ["high_entropy"] for k in keys)
    # A key without a digit (0.4 % of 32-character keys) is the main expected miss.
    assert found_keys / len(keys) >= 0.99
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(500)]
    assert not any(detect(d) for d in digests)


# --- validators -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("79927398713", True),  # the Luhn example of ISO/IEC 7812-1 and Wikipedia
        ("79927398710", False),
        ("4111111111111111", True),
        ("4111111111111121", False),  # one digit changed
        ("4111111111111", False),
        ("378282246310005", True),
        ("6011000990139424", True),
        ("", False),
        ("4111-1111", False),
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


def test_card_prefixes_and_lengths() -> None:
    assert card_prefix_plausible("4111111111111111")
    assert card_prefix_plausible("378282246310005")
    assert not card_prefix_plausible("3782822463100050")  # Amex has 15 digits
    assert not card_prefix_plausible("1234567812345670")
    assert not card_prefix_plausible("9400111899223197")


def test_iban_checksum_examples() -> None:
    assert iban_checksum_valid("DE89370400440532013000")
    assert iban_checksum_valid("GB82WEST12345698765432")
    assert not iban_checksum_valid("DE89370400440532013001")
    assert not iban_checksum_valid("GB82WEST12345698765423")  # neighbours swapped


@pytest.mark.parametrize(
    ("ssn", "valid"),
    [
        ("001-01-0001", True),
        ("665-99-9999", True),
        ("667-01-0001", True),
        ("000-01-0001", False),
        ("666-01-0001", False),
        ("900-01-0001", False),
        ("001-00-0001", False),
        ("001-01-0000", False),
        ("12-345-6789", False),
    ],
)
def test_ssn_ranges(ssn: str, valid: bool) -> None:
    assert valid_us_ssn(ssn) is valid


def test_entropy_basics() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abab") == pytest.approx(1.0)
    assert shannon_entropy("0123456789abcdef") == pytest.approx(4.0)


@pytest.mark.parametrize("length", [32, 48, 100])
def test_expected_random_entropy_matches_monte_carlo(length: int) -> None:
    rng = random.Random(length)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    samples = [shannon_entropy("".join(rng.choices(alphabet, k=length))) for _ in range(4000)]
    assert expected_random_entropy(length) == pytest.approx(sum(samples) / len(samples), abs=0.01)


def test_high_entropy_threshold_sits_between_random_keys_and_words() -> None:
    rng = random.Random(5)
    keys = [random_b64(rng, 32) for _ in range(3000)]
    below = sum(
        shannon_entropy(k) < expected_random_entropy(32) - ENTROPY_MARGIN_BITS for k in keys
    )
    assert below / len(keys) < 0.002
    assert not valid_high_entropy("ThisIsAVeryLongCamelCaseIdentifierName1")
    assert not valid_high_entropy("Polnik-IEEE-CEC-2018-Indexing-discrete-sets-in-a-label")


# --- overlaps, order, mask ----------------------------------------------------------------


def test_hits_are_sorted_named_and_hold_no_text() -> None:
    text = "ip 10.0.0.1, mail a@b.io, card 4111111111111111, ssn 123-45-6789"
    hits = detect(text)
    assert [h.detector for h in hits] == ["ipv4", "email", "payment_card", "us_ssn"]
    assert all(isinstance(h, Hit) and set(vars(h)) == {"detector", "start", "end"} for h in hits)
    assert detector_names(text) == ["email", "ipv4", "payment_card", "us_ssn"]
    assert detector_names("nothing here") == []


def test_overlapping_candidates_merge_into_the_most_specific() -> None:
    secret = random_b64(random.Random(11), 40).replace("/", "x").replace("+", "y")
    text = f"creds AKIAIOSFODNN7EXAMPLE/{secret} end"
    run = f"AKIAIOSFODNN7EXAMPLE/{secret}"
    # The key id alone and the whole run (high_entropy) overlap: one hit over the union.
    assert found(text) == [("aws_access_key", run)]
    assert mask(text) == "creds [AWS_KEY] end"


def test_a_rejected_candidate_does_not_hide_a_later_one() -> None:
    # The card candidate "1234 4111 1111 1111" fails Luhn; the real card starts inside it.
    assert found("ref 1234 4111 1111 1111 1111") == [("payment_card", "4111 1111 1111 1111")]


def test_mask_replaces_hits_and_keeps_the_rest() -> None:
    text = "Mail jane@example.org or call +44 20 7946 0958; card 4242 4242 4242 4242."
    assert mask(text) == "Mail [EMAIL] or call [PHONE]; card [CARD]."
    assert mask("nothing to hide: 2024-01-15, v1.2.3.4") == "nothing to hide: 2024-01-15, v1.2.3.4"


def test_placeholders_are_never_hits() -> None:
    placeholders = " ".join(d.placeholder for d in DETECTORS)
    assert detect(placeholders) == []
    assert detect("".join(d.placeholder for d in DETECTORS)) == []
    assert len({d.placeholder for d in DETECTORS}) == len(DETECTORS)


@pytest.mark.parametrize(("text", "detector", "hit"), POSITIVES)
def test_mask_leaves_nothing_detectable(text: str, detector: str, hit: str) -> None:
    masked = mask(text)
    assert detect(masked) == []
    assert hit not in masked
    assert next(d.placeholder for d in DETECTORS if d.name == detector) in masked


# --- pattern hygiene: the common subset of Python re and java.util.regex -------------------


@pytest.mark.parametrize("detector", DETECTORS, ids=NAMES)
def test_patterns_stay_in_the_java_compatible_subset(detector: Detector) -> None:
    for pattern in (detector.pattern, detector.screen or detector.pattern):
        compiled = re.compile(pattern)
        assert compiled.groups == 0, "capturing groups would renumber in the screen"
        assert "\\" not in pattern and "'" not in pattern
        assert "(?P" not in pattern and "(?i" not in pattern and "(?s" not in pattern
        assert "(?>" not in pattern and "++" not in pattern and "*+" not in pattern
        assert all(ch.isascii() and (ch.isprintable() or ch in "\t\r\n") for ch in pattern)


def test_screen_is_one_pattern_without_backslash() -> None:
    pattern = screen_pattern()
    assert re.compile(pattern).groups == 0
    assert "\\" not in pattern and "'" not in pattern
    assert pattern.startswith(f"(?=[{SCREEN_ANCHORS}])")


# --- hypothesis: generated values in random text ------------------------------------------

CONTEXT = st.text(max_size=40)
SEPARATOR = st.sampled_from(["\n", " | ", "; ", " / "])


def _luhn_complete(body: str) -> str:
    # Check digit computed independently of validators.luhn_valid.
    digits = [int(c) for c in body]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix, length = draw(
        st.sampled_from(
            [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15),
             ("37", 15), ("6011", 16), ("65", 16), ("3528", 16), ("62", 16), ("4", 13)]
        )
    )  # fmt: skip
    free = length - 1 - len(prefix)
    body = prefix + draw(st.text("0123456789", min_size=free, max_size=free))
    number = _luhn_complete(body)
    sep = draw(st.sampled_from(["", " ", "-", "."]))
    if not sep or length == 13:
        return number
    if length == 15:
        if draw(st.booleans()):
            return sep.join([number[:4], number[4:8], number[8:12], number[12:]])
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


@st.composite
def phone_numbers(draw: st.DrawFn) -> str:
    digits = st.text("0123456789", min_size=1, max_size=1)
    if draw(st.booleans()):
        area = draw(st.integers(200, 999))
        exchange = draw(st.integers(200, 999))
        line = draw(st.integers(0, 9999))
        style = draw(
            st.sampled_from(
                ["({a}) {e}-{s:04d}", "{a}-{e}-{s:04d}", "{a}.{e}.{s:04d}", "({a}) {e} {s:04d}"]
            )
        )
        return style.format(a=area, e=exchange, s=line)
    cc = draw(st.sampled_from(["1", "7", "33", "44", "49", "61", "81", "91", "351"]))
    groups = [
        draw(digits.filter(lambda d: d != "0")) + "".join(draw(digits) for _ in range(n - 1))
        for n in draw(st.lists(st.integers(2, 4), min_size=1, max_size=3))
    ]
    groups.append("".join(draw(digits) for _ in range(4)))
    sep = draw(st.sampled_from([" ", "-", "."]))
    prefix = draw(st.sampled_from(["+", "00"]))
    return f"{prefix}{cc} " + sep.join(groups)


@st.composite
def emails(draw: st.DrawFn) -> str:
    local = draw(st.from_regex(r"[a-z0-9][a-z0-9._%+&'-]{0,20}", fullmatch=True))
    labels = draw(
        st.lists(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), min_size=1, max_size=3)
    )
    tld = draw(st.from_regex(r"[a-z]{2,6}", fullmatch=True))
    return f"{local}@{'.'.join(labels)}.{tld}"


@st.composite
def ipv4_addresses(draw: st.DrawFn) -> str:
    octets = [draw(st.integers(1, 255))] + [draw(st.integers(0, 255)) for _ in range(3)]
    return ".".join(map(str, octets))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=CONTEXT,
    after=CONTEXT,
    sep=SEPARATOR,
    value=st.one_of(emails(), card_numbers(), phone_numbers(), ipv4_addresses()),
)
def test_generated_values_in_random_text_are_found_and_masked(
    before: str, after: str, sep: str, value: str
) -> None:
    text = f"{before}{sep}{value}{sep}{after}"
    start = len(before) + len(sep)
    end = start + len(value)
    hits = detect(text)
    assert any(h.start <= start and end <= h.end for h in hits), (text, hits)
    assert SCREEN.search(normalise(text))
    masked = mask(text)
    assert masked.count(value) < text.count(value)
    assert detect(masked) == []


RANK = {d.name: i for i, d in enumerate(DETECTORS)}


@settings(max_examples=200, deadline=None)
@given(
    case=st.one_of(
        emails().map(lambda v: (v, "email")),
        card_numbers().map(lambda v: (v, "payment_card")),
        phone_numbers().map(lambda v: (v, "phone")),
        ipv4_addresses().map(lambda v: (v, "ipv4")),
    )
)
def test_generated_values_in_plain_words_are_one_exact_hit(case: tuple[str, str]) -> None:
    value, name = case
    text = f"please note {value} thanks"
    hits = detect(text)
    assert [text[h.start : h.end] for h in hits] == [value]
    # Its own name, or a more specific one when it also holds another candidate (a phone
    # number whose groups form a card number): the merge rule.
    assert RANK[hits[0].detector] <= RANK[name]
    placeholder = next(d.placeholder for d in DETECTORS if d.name == hits[0].detector)
    assert mask(text) == f"please note {placeholder} thanks"


# --- parity: detect ⇒ screen ----------------------------------------------------------------

# Fragments that come close to every detector's shape, so random texts produce many
# candidates (most of them rejected by the validators) and near misses.
ATOMS = list("0123456789") * 4 + list(" .-+()/:@_=,\n") + list("aAbBfFzZkKxXeE") + [
    "Bearer ", "bearer ", "AKIA", "ASIA", "AKIAIOSFODNN", "7EXAMPLE", "sk-", "sk_live_",
    "rk_test_", "ghp_", "github_pat_", "xoxb-", "AIza", "glpat-",
    "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----",
    "version ", "v", "Chrome/", "::", "ffff", "fe80", "2001:db8", "00", "+1 ", "+44 ", "DE89",
    "GB82 WEST ", "4111", "1111 ", "5555", "378282", "123-45-", "6789", "415", "555-0132",
    "(415) ", "example.com", "mail.", ".co.uk", "192.168.", "10.0.0.", "255", "wJalrXUtnFEMI",
    "K7MDENG/bPxRfiCY", "Zm9vYmFy", "é", "٣", "１", "\u00a0", "😀", "ſ", "K",
    "\u200b", "＠", "%40", "а", "о", "\u2013", "'", "eyJhbGciOiJIUzI1NiJ9", ".eyJ", "J",
]  # fmt: skip
FUZZ = st.lists(st.sampled_from(ATOMS), max_size=40).map("".join)
RAW = [re.compile(d.pattern) for d in DETECTORS]
FRAGMENTS = [re.compile(d.screen or d.pattern) for d in DETECTORS]
UNANCHORED = re.compile("|".join(f"(?:{d.screen or d.pattern})" for d in DETECTORS))


def assert_parity(original: str) -> None:
    # The detectors and the screen both read the normalised text.
    text = normalise(original)
    if detect(original):
        assert SCREEN.search(text), original
    for detector, raw, fragment in zip(DETECTORS, RAW, FRAGMENTS, strict=True):
        if raw.search(text):
            assert fragment.search(text), (detector.name, text)
        for m in fragment.finditer(text):
            assert re.fullmatch(f"[{SCREEN_ANCHORS}]", text[m.start()]), (detector.name, text)
    assert bool(SCREEN.search(text)) == bool(UNANCHORED.search(text))


@pytest.mark.parametrize("text", [t for t, _, _ in POSITIVES] + NEGATIVES)
def test_screen_passes_every_case_with_a_hit(text: str) -> None:
    assert_parity(text)
    if detect(text):
        assert SCREEN.search(normalise(text))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=FUZZ)
def test_screen_parity_on_adversarial_random_text(text: str) -> None:
    assert_parity(text)
    hits = detect(text)
    assert all(a.end <= b.start for a, b in zip(hits, hits[1:], strict=False))
    assert all(0 <= h.start < h.end <= len(text) for h in hits)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_screen_parity_on_arbitrary_unicode(text: str) -> None:
    assert_parity(text)
    assert detect(mask(text)) == []


def test_fuzz_atoms_reach_every_detector() -> None:
    # The parity property is only as good as the candidates it sees.
    rng = random.Random(3)
    seen: Counter[str] = Counter()
    for _ in range(3000):
        text = "".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 40)))
        for raw, d in zip(RAW, DETECTORS, strict=True):
            if raw.search(text):
                seen[d.name] += 1
    assert set(seen) == set(NAMES), sorted(set(NAMES) - set(seen))
