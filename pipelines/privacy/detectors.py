r"""Detectors of personal data and secrets that upstream redaction should have removed.

Safewatch never persists text in which a detector fires. Each detector has two faces that
must agree: a regular expression (`Detector.pattern`) and an optional exact check in Python
(`Detector.validate`, see `pipelines.privacy.validators`). The streaming job screens every
free-text field with `screen_pattern()` in its pass over each record
(`pipelines.contract.records`) and runs `detect` only on the few texts the screen lets
through. The screen is also valid Java (Spark `rlike`, i.e. `Matcher.find`).

Both read the text through `pipelines.privacy.normalise.normalise`, which undoes simple
obfuscations (zero-width and other format characters, other spaces and dashes, fullwidth
and other-script digits, look-alike letters, "%40" for "@"): `detect` normalises itself and
reports spans of the text it was given; the screen must be run on `normalise(text)`, as
`RecordChecker` does (a JVM screen on raw text would miss obfuscated values).

A deployment's public contacts (helplines, support addresses) are not personal data: an
`AllowList` passed to `detect`, `detector_names` or `mask` drops the candidates whose
normalised text it allows (settings `privacy.pii_allowed_values` / `pii_allowed_patterns`).

Detectors, in order of specificity (the order of `DETECTORS`):

- ``private_key``: a PEM header ``-----BEGIN [RSA |EC |OPENSSH |ENCRYPTED |PGP ]PRIVATE KEY
  [BLOCK]-----``; the hit extends over the body up to the matching ``-----END …-----`` line
  when there is one within 16 KB (otherwise the body's base64 lines are left to
  ``high_entropy``). Public keys and certificates are not hits.
- ``aws_access_key``: ``AKIA`` / ``ASIA`` + 16 upper-case letters or digits. Secret access
  keys (40 base64 characters, no prefix) are left to ``high_entropy``.
- ``api_key``: well-known prefixes: ``sk-…`` (OpenAI and similar, tail must look random),
  ``sk_live_`` / ``sk_test_`` / ``rk_…`` (Stripe), ``ghp_ gho_ ghu_ ghs_ ghr_`` + 36 and
  ``github_pat_…`` (GitHub), ``xoxa- xoxb- xoxp- xoxr-`` (Slack), ``AIza`` + 35 (Google),
  ``glpat-`` + 20 (GitLab).
- ``bearer_token``: ``Bearer`` (or ``bearer``, ``BEARER``) + a token of 20 or more
  characters that looks random (a digit, ``_+/=~`` or a lower→upper case change), so that
  "Bearer Authentication-Scheme-Specification" is not a hit.
- ``jwt``: a JSON Web Token, ``eyJ`` + base64url header (8+ characters) ``.`` payload (2+)
  ``.`` signature (possibly empty), or the five parts of an encrypted token: the whole
  token is one hit, however short its parts (a 27-character payload is no high_entropy
  hit on its own). After "Bearer" it is part of the bearer_token hit.
- ``payment_card``: 13-19 digits, ungrouped or in the printed groupings 4-4-4-4[-1..3],
  4-4-4-3 (American Express as some print it) and 4-6-4/4-6-5 (spaces, dashes or dots, not
  mixed), with a known issuer prefix and length and a valid Luhn check. Limits: other
  groupings (4-4-5 for 13 digits), UATP (prefix 1) and RuPay 8x are not detected; a fifth
  group after a 16-digit card (an expiry or CVV) is masked with it.
- ``iban``: country code + 2 check digits + BBAN, compact or in groups of 4 separated by
  single spaces, of the registered length for the country and mod-97 valid. Upper case only.
- ``us_ssn``: ``AAA-GG-SSSS`` outside the never-assigned ranges (area 000, 666, 900-999,
  group 00, serial 0000). Unformatted 9-digit numbers are not detected (they are
  indistinguishable from other ids).
- ``email``: ASCII local part (up to 64 characters of letters, digits and ``._%+&-'``, so
  "o'neil@example.org" is one hit) ``@`` dotted domain with an alphabetic top-level domain.
  An apostrophe right after a local-part character is part of the address; one after a
  space or "=" is a quote ('jane@example.com' in code). Accented Latin letters count as
  their ASCII letter (see `normalise`). Not detected: addresses in other scripts, spelled
  out obfuscations ("jane at example dot com"), ``user@localhost``. Reserved example
  domains are hits: the detector cannot know which addresses are fictitious.
- ``ipv6``: full (8 groups, or 6 + an IPv4 tail) and ``::``-compressed forms that parse as
  IPv6, contain a decimal digit and, when compressed, have at least two groups one of them
  four hex digits long. So times (12:30:45), MAC addresses (6 groups), hex words
  ("dead:beef::cafe"), C++ names ("Abc::Def"), slices ("a[1::2]") and the loopback "::1"
  are not hits. Zone ids ("%eth0") are not part of the hit.
- ``ipv4``: four decimal octets 0-255 without leading zeros, the first one not 0. A bare
  10.0.0.1, 192.168.1.20 or 8.8.8.8 is a hit, private ranges included: whether an address
  identifies a person depends on context the detector does not have. Decided to be a
  version, not a hit: an address glued to a letter, digit, dot or "word/" ("v2.10.3.1",
  "Chrome/120.0.0.0", "1.2.3.4.5"), or right after a version word (version, ver, ver., v,
  v., release, rel., build, firmware; capitalised or not, and VERSION) and one of " ",
  ": ", "=", " = ", each optionally followed by a double quote ("version 10.0.0.1",
  "release 4.1.1.0", 'version: "10.0.0.0"'). Octets with leading zeros
  ("192.168.001.001") are not detected.
- ``phone``: international numbers written with a ``+`` or ``00`` prefix and groups
  separated by single spaces, dots or dashes, with an optional parenthesised area code or
  trunk ``(0)`` (+1 (415) 555-0132, +44 20 7946 0958, +49 30 901820, 0049 30 901820),
  ``+`` followed by 7-15 digits (E.164), and US numbers (415) 555-0132, (212) 555 0147,
  415-555-0132, 415.555.0132, 888 621-6988, 1-800-555-0199. At least 7 digits after the
  prefix. Not detected: national numbers of other countries without a country code (020
  7946 0958) and US numbers written with spaces only and no parentheses (415 555 0132),
  both indistinguishable from lists of figures; 7-digit local numbers. Dates, times, ISO
  timestamps, versions, unformatted order numbers and figures with thousands separators
  after a sign ("+20 000 000 users") are not hits.
- ``high_entropy``: a maximal run of 32 or more base64 / base64url characters
  (``A-Z a-z 0-9 + / _ -``) with upper case, lower case and digits, not hex-only, whose
  Shannon entropy is at least the expectation for a random string of that length minus
  0.5 bit, and in which at most half of the neighbouring pairs are two lower-case letters
  (words are made of such pairs; random base64 has about 16 %). UUIDs, git SHAs, 64-hex
  pseudonymous ids, camelCase identifiers and URL slugs are not hits; random base64 keys of
  32+ characters are (99.5 % of 32-character ones: a key without a digit is missed).
  Trailing ``=`` padding is not part of the hit.

Overlaps. Detectors are run independently; a candidate rejected by its validator does not
hide a later candidate that starts inside it. Candidates that overlap (from different
detectors) are merged into ONE hit covering their union, named after the most specific
detector among them (earliest in `DETECTORS`). Merging, rather than keeping only one of
them, leaves no fragment of either candidate unmasked: an access key id written in one run
with its secret ("AKIA…/wJalr…") is one ``aws_access_key`` hit over the whole run when the
run also passes as ``high_entropy``. `mask` then repeats until `detect` finds nothing,
which catches a fragment that only becomes a hit once its neighbour is masked.

Java compatibility. Every pattern uses only the common subset of Python `re` and
`java.util.regex` with identical meaning in both: ASCII character classes written out
(``[0-9]``, never ``\d``, ``\w``, ``\s``, ``\b`` or ``.``, whose Unicode behaviour
differs), non-capturing groups only, fixed-width lookbehind, lookahead, greedy and lazy
quantifiers, no inline flags, and no backslash at all (``[.]``, ``[+]``), so the patterns
survive any layer of string-literal escaping on the way to Spark. Tab, CR and LF appear as
literal characters. Match spans are identical in both engines (checked on Java 17 and 25;
tests/unit/test_privacy_java_parity.py compares them with the JDK at hand).

The screen. Java's regex engine tries every alternative at every position, so the plain
union of the patterns runs at about 2 MB/s per core. `screen_pattern()` instead starts with
a lookahead for one of `SCREEN_ANCHORS` (characters every match starts with) and uses, for
the detectors whose matches start with common letters (email, api_key, jwt, ipv6,
high_entropy) or upper case (iban), a `Detector.screen`: a superset anchored on a rarer
character ("@", "-"/"_" of a key prefix, the "J" of "eyJ", ":", a digit); private_key's
screen is its header alone. That runs at about 30 MB/s per core and passes about 1 % of
ordinary prompts, which `detect` then settles. Each screen is a superset of its pattern by
the argument in the comment above it; the tests check it, and that every screen match
starts at an anchor.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from pipelines.privacy.normalise import normalise, normalise_mapped
from pipelines.privacy.validators import (
    valid_api_key,
    valid_bearer,
    valid_card,
    valid_high_entropy,
    valid_iban,
    valid_ipv6,
    valid_phone,
    valid_us_ssn,
)


@dataclass(frozen=True)
class Hit:
    """A detected span `text[start:end]`; the matched text itself is never kept."""

    detector: str
    start: int
    end: int


@dataclass(frozen=True)
class Detector:
    """One kind of personal data or secret.

    `pattern` is Java- and Python-compatible and matches a superset of the hits: every hit
    is exactly one match. `validate`, when set, receives exactly the matched text and
    decides. `screen` is the detector's part of `screen_pattern()`: wherever `pattern`
    matches, `screen` matches too (not necessarily at the same place).
    """

    name: str
    placeholder: str
    pattern: str
    validate: Callable[[str], bool] | None
    screen: str | None = None
    """A superset of `pattern` for the JVM screen, starting at a character of
    `SCREEN_ANCHORS` (None: `pattern` itself, which then must start at one)."""


# --- patterns -------------------------------------------------------------------------------

# The local part also takes "&" and the apostrophe ("o'neil@example.org"). The apostrophe
# cannot be written (the patterns hold no single quote), so it is the range "&-(" without
# "(": alone in a class, and after a lookahead refusing "(".
_LOCAL_CHAR = "(?:[0-9A-Za-z._%+&-]|(?![(])[&-(])"
_EMAIL = (
    # Not preceded by a local-part character: none of [0-9A-Za-z._%+&-], and not an
    # apostrophe (a character of "&-(" other than "&" and "(") that follows one, so
    # "o'neil@…" is not hit from "neil" but 'jane@example.com' in quotes is.
    "(?<![0-9A-Za-z._%+&-])(?:(?<![&-(])|(?<=[(])|(?<![0-9A-Za-z._%+&-][&-(]))"
    # A fast check that an "@" follows (a superset of the local part: a class, not groups).
    "(?=[0-9A-Za-z._%+&-(-]{1,64}@)"
    f"[0-9A-Za-z]{_LOCAL_CHAR}{{0,63}}"
    "@"
    # Bounded label count: Java matches a repeated group recursively.
    "(?:[0-9A-Za-z-]{1,63}[.]){1,10}[A-Za-z]{2,24}"
    "(?![0-9A-Za-z-])"
)

# Screen: the domain as in _EMAIL, anchored on "@" after a local-part character (or "(").
_EMAIL_SCREEN = (
    "@(?<=[0-9A-Za-z._%+&-(-]@)(?:[0-9A-Za-z-]{1,63}[.]){1,10}[A-Za-z]{2,24}(?![0-9A-Za-z-])"
)

_PHONE_INTL = (
    # "00" is also a group inside longer figures ("DE89 3704 0044 0532 …"), so it must not
    # follow a digit and a separator.
    "(?:[+]|(?<![0-9][ .-])00)[1-9][0-9]{0,2}"
    "(?:[ .-]?[(][0-9]{1,4}[)][ .-]?[0-9]{1,12}|[ .-][0-9]{1,12})"
    "(?:[ .-][0-9]{1,12}){0,6}"
    "(?![0-9])"
)
_PHONE_E164 = "[+][1-9][0-9]{6,14}(?![0-9])"
_PHONE_US = (
    "(?<![.-])"
    "(?:1[ .-]?)?"
    # The last separator is a space only after a parenthesised area code ("(212) 555 0147"):
    # "256 512 1024" is a list of figures.
    "(?:[(][2-9][0-9]{2}[)][ ]?[2-9][0-9]{2}[ .-]|[2-9][0-9]{2}[ .-][2-9][0-9]{2}[.-])"
    "[0-9]{4}"
    "(?![0-9]|[.-][0-9])"
)
_PHONE = f"(?<![0-9A-Za-z+])(?:{_PHONE_INTL}|{_PHONE_E164}|{_PHONE_US})"

# Printed groupings, each with one separator throughout: 4-4-4-4 (+ 1-3 more digits, or an
# expiry or CVV after it), 4-4-4-3 (15 digits, American Express as some print it) and 4-6-4
# / 4-6-5 (Diners Club, American Express).
_CARD_GROUPS = "".join(
    f"|[0-9]{{4}}(?:{sep}[0-9]{{4}}){{3}}(?:{sep}[0-9]{{1,3}})?"
    f"|[0-9]{{4}}(?:{sep}[0-9]{{4}}){{2}}{sep}[0-9]{{3}}"
    f"|[0-9]{{4}}{sep}[0-9]{{6}}{sep}[0-9]{{4,5}}"
    for sep in ("[ ]", "-", "[.]")
)
_CARD = (
    # Every issuer prefix in validators._CARD_RANGES starts with 2-6.
    f"(?<![0-9A-Za-z_.])(?=[2-6])(?:[0-9]{{13,19}}{_CARD_GROUPS})(?![0-9A-Za-z_]|[.,][0-9])"
)

_US_SSN = "(?<![0-9A-Za-z-])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9A-Za-z]|-[0-9])"

_IBAN = (
    "(?<![0-9A-Za-z])[A-Z]{2}[0-9]{2}(?:[ ]?[0-9A-Z]{4}){2,7}(?:[ ]?[0-9A-Z]{1,3})?(?![0-9A-Za-z])"
)

# Screen: anchored on the first check digit.
_IBAN_SCREEN = "[0-9](?<=[A-Z]{2}[0-9])[0-9](?:[ ]?[0-9A-Z]{4}){2}"

_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_FIRST_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]?)"
_VERSION_WORDS = (
    "[Vv]ersion", "VERSION", "[Vv]er", "[Vv]er[.]", "[Vv]", "[Vv][.]",
    "[Rr]elease", "[Rr]el[.]", "[Bb]uild", "[Ff]irmware",
)  # fmt: skip
# Prose ("version 1.2.3.4", "Version: …"), YAML / JSON ('version: "…"', '"version": "…"')
# and code ('version="…"', 'version = "…"').
_VERSION_SEPARATORS = (" ", ": ", ': "', '": "', "=", '="', " = ", ' = "')
# Python only accepts fixed-width lookbehind, so one assertion per word and separator.
_NOT_A_VERSION = "".join(
    f"(?<!{word}{sep})" for word in _VERSION_WORDS for sep in _VERSION_SEPARATORS
)
_IPV4_ADDRESS = f"{_FIRST_OCTET}(?:[.]{_OCTET}){{3}}"
_IPV4 = (
    "(?=[0-9])(?<![0-9A-Za-z_.])(?<![A-Za-z]/)"
    f"{_NOT_A_VERSION}{_IPV4_ADDRESS}"
    "(?![0-9A-Za-z_]|[.][0-9])"
)

_H = "[0-9A-Fa-f]{1,4}"
_V4_TAIL = f"{_OCTET}(?:[.]{_OCTET}){{3}}"
_IPV6_RIGHT = f"(?:(?:{_H}:){{0,5}}{_V4_TAIL}|{_H}(?::{_H}){{0,6}})"
_IPV6 = (
    "(?<![0-9A-Za-z_.])"
    f"(?:(?:{_H}:){{7}}{_H}"
    f"|(?:{_H}:){{6}}{_V4_TAIL}"
    f"|{_H}(?::{_H}){{0,6}}::{_IPV6_RIGHT}?"
    f"|::{_IPV6_RIGHT})"
    "(?![0-9A-Za-z_:]|[.][0-9])"
)

# Screen: a full form has ":" after a hex digit followed by five more "hex:" groups and a
# group ending at ":" or "." (IPv4 tail); a compressed form has "::" next to a hex digit.
_IPV6_SCREEN = f":(?:(?<=[0-9A-Fa-f]:)(?:{_H}:){{5}}{_H}[:.]|:(?<=[0-9A-Fa-f]::)|:[0-9A-Fa-f])"

_PEM_LABEL = "(?:[A-Z0-9]+[ ]){0,3}PRIVATE[ ]KEY(?:[ ]BLOCK)?"
# Literal tab, CR and LF in the class: the same characters in Java and Python, unlike \s.
# Bounded: the largest usual key (a 4096-bit PGP block) is under 8 KB, and an unbounded
# lazy scan from each of many headers without an END line would take quadratic time.
_PEM_BODY = "[0-9A-Za-z+/=:,. \t\r\n-]{0,16384}?"
_PEM_HEADER = f"-----BEGIN[ ]{_PEM_LABEL}-----"
_PRIVATE_KEY = f"{_PEM_HEADER}(?:{_PEM_BODY}-----END[ ]{_PEM_LABEL}-----)?"

_AWS_ACCESS_KEY = "(?<![0-9A-Za-z])(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"

_API_KEY = (
    "(?<![0-9A-Za-z_-])"
    "(?:sk-[0-9A-Za-z_-]{20,}"
    "|(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}"
    "|gh[porsu]_[0-9A-Za-z]{36}"
    "|github_pat_[0-9A-Za-z_]{22,}"
    "|xox[abpr]-[0-9A-Za-z-]{10,}"
    "|AIza[0-9A-Za-z_-]{35}"
    "|glpat-[0-9A-Za-z_-]{20})"
    "(?![0-9A-Za-z_-])"
)

# Screen: anchored on the "-" or "_" that ends each prefix (or the "A" of "AIza"), with
# the prefix checked behind it and the shortest tail the pattern allows.
_API_KEY_SCREEN = (
    "-(?:(?<=sk-)[0-9A-Za-z_-]{20}|(?<=xox[abpr]-)[0-9A-Za-z-]{10}|(?<=glpat-)[0-9A-Za-z_-]{20})"
    "|_(?:(?<=[rs]k_)(?:live|test)_[0-9A-Za-z]{16}|(?<=gh[porsu]_)[0-9A-Za-z]{36}"
    "|(?<=github_)pat_[0-9A-Za-z_]{22})"
    "|AIza[0-9A-Za-z_-]{35}"
)

_BEARER = "(?<![0-9A-Za-z_])(?:[Bb]earer|BEARER)[ ]{1,4}[0-9A-Za-z._~+/-]{20,}=*"

# A JSON Web Token: base64url header (a JSON object, so "eyJ"), payload and signature (empty
# when unsigned), or the five parts of an encrypted token; the whole token is the hit.
_B64URL = "[0-9A-Za-z_-]"
_JWT = (
    # The literal first lets Python skip to each "eyJ"; the lookbehind then checks the
    # character before it.
    f"eyJ(?<!{_B64URL}eyJ){_B64URL}{{5,}}[.]{_B64URL}{{2,}}[.]{_B64URL}*"
    f"(?:[.]{_B64URL}+[.]{_B64URL}+)?(?!{_B64URL})"
)
# Screen: anchored on the "J" of "eyJ", with the pattern's check of the character before it
# (without it, a long run of "eyJ" would be scanned from each of them: quadratic time).
_JWT_SCREEN = f"J(?<=eyJ)(?<!{_B64URL}eyJ){_B64URL}{{5,}}[.]{_B64URL}{{2,}}[.]"

_B64 = "0-9A-Za-z+/_-"
_HIGH_ENTROPY = (
    f"(?<![{_B64}])(?=[{_B64}]{{32}})"
    f"(?=[{_B64}]*[0-9])(?=[{_B64}]*[A-Z])(?=[{_B64}]*[a-z])"
    f"[{_B64}]{{32,}}"
)
# Screen: every candidate holds a digit; a run of 32 or more around it extends at least 16
# characters before it or 16 after it (otherwise it would have at most 31).
_HIGH_ENTROPY_SCREEN = f"[0-9](?:(?<=[{_B64}]{{17}})|(?=[{_B64}]{{16}}))"

# Every match of every screen (a `Detector.screen`, or the `pattern` when it has none) starts
# with one of these characters; the screen tests them first at each position, which makes
# it about 20 times faster on the JVM than trying every alternative everywhere.
SCREEN_ANCHORS = "-_:@+(0-9ABJb"


DETECTORS: tuple[Detector, ...] = (
    # Screen: the header alone, sparing the JVM the scan for the END line.
    Detector("private_key", "[PRIVATE_KEY]", _PRIVATE_KEY, None, _PEM_HEADER),
    Detector("aws_access_key", "[AWS_KEY]", _AWS_ACCESS_KEY, None),
    Detector("api_key", "[API_KEY]", _API_KEY, valid_api_key, _API_KEY_SCREEN),
    Detector("bearer_token", "[BEARER_TOKEN]", _BEARER, valid_bearer),
    Detector("jwt", "[JWT]", _JWT, None, _JWT_SCREEN),
    Detector("payment_card", "[CARD]", _CARD, valid_card),
    Detector("iban", "[IBAN]", _IBAN, valid_iban, _IBAN_SCREEN),
    Detector("us_ssn", "[SSN]", _US_SSN, valid_us_ssn),
    Detector("email", "[EMAIL]", _EMAIL, None, _EMAIL_SCREEN),
    Detector("ipv6", "[IPV6]", _IPV6, valid_ipv6, _IPV6_SCREEN),
    Detector("ipv4", "[IPV4]", _IPV4, None),
    Detector("phone", "[PHONE]", _PHONE, valid_phone),
    Detector("high_entropy", "[SECRET]", _HIGH_ENTROPY, valid_high_entropy, _HIGH_ENTROPY_SCREEN),
)

_COMPILED: tuple[tuple[Detector, re.Pattern[str]], ...] = tuple(
    (d, re.compile(d.pattern)) for d in DETECTORS
)
_PLACEHOLDERS = {d.name: d.placeholder for d in DETECTORS}


@dataclass(frozen=True)
class AllowList:
    """Public contacts that are not personal data: hits whose text is allowed are dropped.

    `values` are compared with a hit's normalised text, ignoring case ("1-800-273-8255",
    "support@example.com"); `patterns` are Python regular expressions that must match the
    whole normalised text of a hit ("[a-z]+@support[.]example[.]com"). Only a complete
    candidate of one detector is allowed: a value inside a longer hit is still masked.
    Hashable, so a process can cache what it builds from one.
    """

    values: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Tuples whatever was passed (lists from a config file), so that it stays hashable.
        object.__setattr__(self, "values", tuple(self.values))
        object.__setattr__(self, "patterns", tuple(self.patterns))
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                msg = f"allowed pattern {pattern!r} is not a valid regular expression: {e}"
                raise ValueError(msg) from None

    def allows(self, hit: str) -> bool:
        """Whether the (normalised) text of a hit is allowed."""
        values, patterns = _compiled_allow_list(self)
        return hit.casefold() in values or any(p.fullmatch(hit) for p in patterns)


@cache
def _compiled_allow_list(allow: AllowList) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    values = frozenset(normalise(v).casefold() for v in allow.values)
    return values, tuple(re.compile(p) for p in allow.patterns)


def _candidates(text: str, allow: AllowList | None) -> list[tuple[int, int, int]]:
    """(start, end, rank) of every validated, not allowed match of every detector."""
    found: list[tuple[int, int, int]] = []
    for rank, (detector, rx) in enumerate(_COMPILED):
        pos = 0
        while (m := rx.search(text, pos)) is not None:
            if (detector.validate is None or detector.validate(m.group())) and (
                allow is None or not allow.allows(m.group())
            ):
                found.append((m.start(), m.end(), rank))
                pos = max(m.end(), m.start() + 1)
            else:
                # A rejected candidate must not hide one that starts inside it
                # ("1234 4111 1111 1111 1111": the card starts at the second group).
                pos = m.start() + 1
    return found


def detect(text: str, allow: AllowList | None = None) -> list[Hit]:
    """All hits in `text`, non-overlapping and sorted by start.

    The detectors read `normalise(text)`; each hit is mapped back to the span of `text` its
    characters come from (with any character removed inside it). Overlapping candidates are
    merged into one hit over their union, named after the most specific detector among
    them (see the module docstring). Candidates `allow` allows are dropped. Never raises.
    """
    plain = normalise(text)
    candidates = _candidates(plain, allow)
    if candidates and plain != text:
        _, starts, ends = normalise_mapped(text)
        candidates = [(starts[s], ends[e - 1], rank) for s, e, rank in candidates]
    hits: list[Hit] = []
    cur_start = cur_end = cur_rank = -1
    for start, end, rank in sorted(candidates):
        if start < cur_end:
            cur_end = max(cur_end, end)
            cur_rank = min(cur_rank, rank)
            continue
        if cur_end >= 0:
            hits.append(Hit(DETECTORS[cur_rank].name, cur_start, cur_end))
        cur_start, cur_end, cur_rank = start, end, rank
    if cur_end >= 0:
        hits.append(Hit(DETECTORS[cur_rank].name, cur_start, cur_end))
    return hits


def detector_names(text: str, allow: AllowList | None = None) -> list[str]:
    """The sorted, unique names of the detectors that hit `text` ([] when none)."""
    return sorted({h.detector for h in detect(text, allow)})


def _replace(text: str, hits: list[Hit]) -> str:
    parts: list[str] = []
    pos = 0
    for h in hits:
        parts.append(text[pos : h.start])
        parts.append(_PLACEHOLDERS[h.detector])
        pos = h.end
    parts.append(text[pos:])
    return "".join(parts)


def mask(text: str, allow: AllowList | None = None) -> str:
    """`text` with every hit replaced by its detector's placeholder, e.g. "[EMAIL]".

    The result is guaranteed to hold nothing `detect` flags (with the same `allow`):
    masking is repeated until no hit is left (one pass in practice). Text outside the hits
    is kept unchanged, in its original form (not normalised).
    """
    # No pattern matches "[" or "]", so a hit always consumes text outside placeholders,
    # and len(text) + 1 passes are a hard bound.
    for _ in range(len(text) + 1):
        hits = detect(text, allow)
        if not hits:
            return text
        text = _replace(text, hits)
    msg = "mask did not converge; a detector pattern matches its own placeholder"
    raise RuntimeError(msg)


def screen_pattern() -> str:
    """ONE Java-compatible regex that finds a match in every text on which `detect` hits.

    `(?=[SCREEN_ANCHORS])` followed by the alternation of every detector's screen. A
    superset: each screen matches wherever its pattern does, and also passes texts whose
    candidates the Python validators then reject. For Spark:
    `F.col("text").rlike(screen_pattern())`. The pattern holds no backslash and no single
    quote, so it also survives embedding in a SQL string literal unchanged.
    """
    branches = "|".join(f"(?:{d.screen or d.pattern})" for d in DETECTORS)
    return f"(?=[{SCREEN_ANCHORS}])(?:{branches})"
