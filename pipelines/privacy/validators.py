"""Checks that turn a regular-expression candidate into a detector hit.

Each `valid_*` function receives exactly the text a detector's pattern matched and answers
whether it is the thing the detector targets: a check digit, a registry of lengths, a range
the issuing authority never assigns, or a measure of randomness. All are pure and never
raise on malformed input (they answer False).
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from functools import lru_cache

# --- payment cards ---------------------------------------------------------------------

# (lowest prefix, highest prefix, allowed lengths); prefixes compared on equal-length heads.
_CARD_RANGES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("2200", "2204", frozenset(range(16, 20))),  # Mir
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("300", "305", frozenset(range(14, 20))),  # Diners Club
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(16, 20))),
    ("3528", "3589", frozenset(range(16, 20))),  # JCB
    ("50", "50", frozenset(range(13, 20))),  # Maestro, Verve, RuPay
    ("56", "58", frozenset(range(13, 20))),  # Maestro
    ("6", "6", frozenset(range(13, 20))),  # Discover, UnionPay, Maestro, RuPay, Troy
)


def luhn_valid(digits: str) -> bool:
    """True iff `digits` (ASCII digits only, at least 2) passes the Luhn mod-10 check."""
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    # Luhn: every second digit from the right is doubled, so a typo in any one digit, and
    # most swaps of neighbours, change the sum modulo 10.
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_prefix_plausible(digits: str) -> bool:
    """True iff the issuer prefix (IIN) and length belong to a known card scheme."""
    for low, high, lengths in _CARD_RANGES:
        head = digits[: len(low)]
        if len(digits) in lengths and low <= head <= high:
            return True
    return False


def _card_number(digits: str) -> bool:
    return card_prefix_plausible(digits) and luhn_valid(digits)


def valid_card(candidate: str) -> bool:
    """True iff `candidate` (digits, optionally grouped by " ", "-" or ".") is a plausible,
    Luhn-valid card.

    A grouped number with a fifth group of 1-3 digits is accepted when either all digits or
    the first four groups alone form a card: "4111 1111 1111 1111 12/27" is a card followed
    by an expiry date, and the hit then covers the extra group too.
    """
    groups = candidate.replace("-", " ").replace(".", " ").split(" ")
    digits = "".join(groups)
    if _card_number(digits):
        return True
    return len(groups) == 5 and _card_number("".join(groups[:4]))


# --- US social security numbers ---------------------------------------------------------


def valid_us_ssn(candidate: str) -> bool:
    """True iff `candidate` (AAA-GG-SSSS) lies outside the ranges the SSA never assigns.

    Never assigned: area 000, 666 and 900-999, group 00, serial 0000.
    """
    parts = candidate.split("-")
    if len(parts) != 3 or [len(p) for p in parts] != [3, 2, 4]:
        return False
    area, group, serial = parts
    if not all(p.isascii() and p.isdigit() for p in parts):
        return False
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# --- IBAN --------------------------------------------------------------------------------

# Total IBAN length per country, from the SWIFT IBAN registry.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_checksum_valid(iban: str) -> bool:
    """True iff the compact upper-case `iban` passes the ISO 7064 mod-97 check (== 1)."""
    if len(iban) < 5 or not iban.isascii() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    # Letters become 10..35; the whole number modulo 97 must be 1.
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def valid_iban(candidate: str) -> bool:
    """True iff `candidate` (compact or grouped by spaces) is a registered-length, mod-97 IBAN.

    Further 4-character groups after a complete IBAN (an upper-case word such as "THEN"
    written after "BE68 5390 0754 7034") are tolerated: the IBAN is then judged on its
    registered length, and the hit covers the extra groups too.
    """
    groups = candidate.split(" ")
    compact = "".join(groups)
    length = IBAN_LENGTHS.get(compact[:2])
    if length is None or len(compact) < length:
        return False
    if len(compact) > length:
        # Only a cut between groups, never inside one.
        boundaries = {sum(len(g) for g in groups[: i + 1]) for i in range(len(groups))}
        if len(groups) == 1 or length not in boundaries:
            return False
    return iban_checksum_valid(compact[:length])


# --- phone numbers -------------------------------------------------------------------------


def valid_phone(candidate: str) -> bool:
    """True iff an international candidate has at least 7 digits after its "+" or "00".

    E.164 numbers have 7-15 digits including the country code; more digits are a number
    followed by other figures ("+44 20 7946 0958 2024"), which still hold a number, so only
    the lower bound is checked. A figure with thousands separators ("+20 000 000 users":
    every group after the first of three digits, the last one 000) is not a number.
    National (US) candidates are decided by the pattern alone.
    """
    if not candidate.startswith(("+", "00")):
        return True
    body = candidate[1:] if candidate.startswith("+") else candidate[2:]
    groups = "".join(ch if ch.isdigit() else " " for ch in body).split()
    if sum(len(g) for g in groups) < 7:
        return False
    rest = groups[1:]
    return not (rest and all(len(g) == 3 for g in rest) and rest[-1] == "000")


# --- IPv6 ----------------------------------------------------------------------------------


def valid_ipv6(candidate: str) -> bool:
    """True iff `candidate` is an IPv6 address that text other than an address rarely forms.

    Beyond syntax (checked by `ipaddress`), it needs a decimal digit (so hex words such as
    "dead:beef::cafe" and C++ names such as "Abc::Def" do not count) and, when compressed,
    at least two groups one of which has four hex digits (so "::1", "1::2" in a slice
    `a[1::2]` and "10::200" do not count).
    """
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    if not any(ch.isdigit() for ch in candidate):
        return False
    if "::" not in candidate:
        return True
    groups = [g for g in candidate.replace("::", ":").split(":") if g]
    return len(groups) >= 2 and any(len(g) == 4 or "." in g for g in groups)


# --- secrets --------------------------------------------------------------------------------


def looks_random(token: str) -> bool:
    """True iff `token` has a digit, a symbol of `_+/=~`, or an upper case letter after a lower.

    Words, even joined by hyphens ("Authentication-Scheme-Specification"), have none of
    these; a random token of 20 or more characters almost always has at least one.
    """
    if any(ch.isdigit() or ch in "_+/=~" for ch in token):
        return True
    return any(a.islower() and b.isupper() for a, b in zip(token, token[1:], strict=False))


def valid_api_key(candidate: str) -> bool:
    """True iff a prefixed key candidate is random-looking where its prefix alone is weak.

    "sk-" also starts hyphenated words ("sk-learn-style-…"), so its tail must look random;
    the other prefixes (sk_live_, ghp_, xoxb-, AIza, glpat-, …) are specific enough.
    """
    if candidate.startswith("sk-"):
        return looks_random(candidate[3:])
    return True


def valid_bearer(candidate: str) -> bool:
    """True iff the token after "Bearer" looks random (see `looks_random`)."""
    parts = candidate.split()
    return len(parts) >= 2 and looks_random(parts[-1])


def shannon_entropy(text: str) -> float:
    """Shannon entropy of the character distribution of `text`, in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


_ALPHABET = 64  # base64 / base64url
_ENTROPY_CAP = 512


@lru_cache(maxsize=_ENTROPY_CAP + 1)
def expected_random_entropy(length: int) -> float:
    """Expected `shannon_entropy` of `length` characters drawn uniformly from 64 symbols.

    The empirical entropy of a short string is biased low (32 random base64 characters give
    about 4.55 bits, not 6), so thresholds are set against this expectation, not against 6.
    Exact: 64 · Σ_c P(Binomial(n, 1/64) = c) · -(c/n)·log2(c/n). Lengths above 512 use 512.
    """
    n = min(max(length, 1), _ENTROPY_CAP)
    p = 1.0 / _ALPHABET
    total = 0.0
    for c in range(1, n + 1):
        log_pmf = (
            math.lgamma(n + 1)
            - math.lgamma(c + 1)
            - math.lgamma(n - c + 1)
            + c * math.log(p)
            + (n - c) * math.log1p(-p)
        )
        total += math.exp(log_pmf) * -(c / n) * math.log2(c / n)
    return _ALPHABET * total


# Random base64 of 32 characters has entropy 4.55 ± 0.14 bits; 0.5 below the expectation
# keeps more than 99.9 % of random keys of any length while hex digests, URL slugs and
# joined words fall 0.5-1.5 bits below.
ENTROPY_MARGIN_BITS = 0.5
# In random base64 about 16 % of neighbouring pairs are two lower-case letters (under 49 %
# in 99.9 % of 32-character keys, less in longer ones); in words, even joined in camelCase
# ("getUserAccountSettingsById2024"), more than half are.
MAX_LOWER_PAIR_SHARE = 0.5


def lower_pair_share(text: str) -> float:
    """Share of neighbouring character pairs in `text` that are both lower-case letters."""
    if len(text) < 2:
        return 0.0
    pairs = sum(a.islower() and b.islower() for a, b in zip(text, text[1:], strict=False))
    return pairs / (len(text) - 1)


def valid_high_entropy(candidate: str) -> bool:
    """True iff a run of base64 characters looks like a random key, not text or a digest.

    All of: not hex-only (hex digests, UUIDs and the 64-hex pseudonyms are identifiers, not
    secrets); entropy at least `expected_random_entropy(len) - ENTROPY_MARGIN_BITS`; at
    most `MAX_LOWER_PAIR_SHARE` of neighbouring pairs both lower-case letters (words).
    """
    letters = {ch for ch in candidate.lower() if ch.isalpha()}
    if letters <= set("abcdef"):
        return False
    threshold = expected_random_entropy(len(candidate)) - ENTROPY_MARGIN_BITS
    if shannon_entropy(candidate) < threshold:
        return False
    return lower_pair_share(candidate) <= MAX_LOWER_PAIR_SHARE
