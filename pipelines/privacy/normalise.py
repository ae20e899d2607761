"""The text the PII / secret detectors and their screen read: simple obfuscations undone.

A person or a model can write an address or a number so that it still reads the same but no
longer matches an ASCII pattern: a zero-width space inside it, a no-break space or an en dash
between its groups, fullwidth or Arabic-Indic digits, a fullwidth "＠", Cyrillic letters that
look Latin ("jаne@exаmple.com" with a Cyrillic "а"), or "%40" for "@". `normalise` undoes
these, character by character:

1. NFKC compatibility mapping of each character (fullwidth and mathematical letters and
   digits, "＠", ligatures, no-break and other spaces become their plain forms);
2. Unicode format characters (category Cf: zero-width space and joiners, soft hyphen, word
   joiner, byte-order mark, bidirectional controls, tags), combining marks (Mn, Me:
   accents, variation selectors, the combining grapheme joiner) and the Hangul fillers are
   removed, also from inside a character: accented Latin letters become ASCII, so
   "josé@example.com" is read as an address;
3. every decimal digit of any script (category Nd) becomes its ASCII digit; every space
   separator becomes " ", line and paragraph separators a line feed; every dash (category
   Pd) and the minus sign become "-"; middle dots and the ideographic full stop become ".";
   single quotation marks used as apostrophes become "'" ("o’neil@example.org");
4. letters of other scripts that look like ASCII letters (`CONFUSABLES`: Cyrillic, Greek,
   Armenian and Latin look-alikes) become those letters;
5. in a run of address characters that holds an escaped "@" ("%40", "&#64;", "&#x40;",
   "&commat;"), the escapes of address characters are decoded: URL escapes (%40 @, %2E .,
   %2B +, %2D -, %5F _) and HTML references (&#64; &#x40; &commat; @, &#46; &#x2E;
   &period; .).

Text outside the identifiers is never shown to anyone in this form: `detect` maps its hits
back onto the original text (`normalise_mapped`), and `mask` replaces the original
characters. Plain ASCII text without "%" or "&" (most texts) is returned as it is, at the
cost of one `str.isascii` call; in other texts the distinct non-ASCII characters are found
at C speed, looked up in a table filled on first use, and only those that change are
replaced.

Limits: letters are compared after NFKC only, so scripts whose letters do not resemble
ASCII are left alone (an address spelled in Greek is not an ASCII address); digits of other
scripts count only where Unicode calls them decimal digits; spelled-out or bracketed forms
("[at]", "jane at example dot com"), other escapes (JSON's u0040 escape is decoded by the
JSON parser before the text gets here) and double escapes ("%2540", "&amp;#64;") are not decoded.
"""

from __future__ import annotations

import re
import unicodedata

# Letters of other scripts that look like an ASCII letter in common fonts (after NFKC), from
# the Unicode confusables data restricted to look-alikes of a single ASCII letter.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "е": "e", "һ": "h", "і": "i", "ј": "j", "ӏ": "l", "о": "o", "р": "p",
    "с": "c", "ѕ": "s", "у": "y", "х": "x", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ү": "y",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W",
    "Ү": "Y", "Ӏ": "I",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "υ": "u", "χ": "x", "ϲ": "c",
    "ϳ": "j",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C",
    # Armenian
    "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n", "զ": "q",
    # Latin look-alikes outside ASCII
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ʏ": "y", "ᴏ": "o", "ᴄ": "c", "ꓲ": "I",
    # Punctuation inside addresses and numbers
    "\u2212": "-",  # minus sign
    "\u00b7": ".",  # middle dot
    "\u2027": ".",  # hyphenation point
    "\u2219": ".",  # bullet operator
    "\u30fb": ".",  # katakana middle dot
    "\u3002": ".",  # ideographic full stop
    "\u2018": "'",  # quotation marks used as apostrophes
    "\u2019": "'",
    "\u02bc": "'",  # modifier letter apostrophe
    "\u2028": "\n",  # line separator
    "\u2029": "\n",  # paragraph separator
}  # fmt: skip

# Characters that render as nothing but are letters (Lo) to Unicode.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0")
_REMOVED = frozenset({"Cf", "Mn", "Me"})


def _plain(ch: str) -> str:
    """What one character stands for in the detectors' text."""
    if unicodedata.category(ch) in _REMOVED or ch in _INVISIBLE:
        return ""
    # NFKD, the marks dropped, then NFC: NFKC without accents (Hangul syllables recomposed).
    decomposed = unicodedata.normalize("NFKD", ch)
    kept = "".join(
        c for c in decomposed if unicodedata.category(c) not in _REMOVED and c not in _INVISIBLE
    )
    out = []
    for c in unicodedata.normalize("NFC", kept):
        category = unicodedata.category(c)
        if category == "Nd":
            out.append(str(unicodedata.decimal(c)))
        elif category == "Zs":
            out.append(" ")
        elif category == "Pd":
            out.append("-")
        else:
            out.append(CONFUSABLES.get(c, c))
    return "".join(out)


class _Plain(dict[str, str]):
    """`_plain` of every non-ASCII character seen, filled on first use."""

    def __missing__(self, ch: str) -> str:
        if len(self) > _CACHE_LIMIT:
            self.clear()
        plain = self[ch] = _plain(ch)
        return plain


class _Table(dict[int, str]):
    """The same by code point, for `str.translate`."""

    def __missing__(self, code: int) -> str:
        if len(self) > _CACHE_LIMIT:
            self.clear()
        plain = self[code] = _PLAIN[chr(code)]
        return plain


# Distinct characters kept (a few MB at most); a cache is emptied when it is full.
_CACHE_LIMIT = 100_000
_PLAIN = _Plain()
_TABLE = _Table()
# Up to this many distinct characters to change, one `str.replace` each (fast: most texts
# have a few accents or quotes); more (a text made to be slow) take one `str.translate`.
_MAX_REPLACES = 16
_ASCII_BYTES = bytes(range(128))


def _non_ascii(text: str) -> set[str]:
    """The distinct non-ASCII characters of `text`, found at C speed (no loop in Python)."""
    raw = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
    return set(raw.decode("utf-8", "surrogatepass"))


# A maximal run of address characters (decoded when it holds "%40"), and the escapes
# decoded inside it.
# Escapes of address characters: URL escapes and HTML character references.
_UNESCAPED = {
    "%40": "@", "%2e": ".", "%2b": "+", "%2d": "-", "%5f": "_",
    "&#64;": "@", "&#x40;": "@", "&commat;": "@", "&#46;": ".", "&#x2e;": ".", "&period;": ".",
}  # fmt: skip
_ESCAPE = re.compile("%(?:40|2[EeBbDd]|5[Ff])|&(?:#(?:64|46|[xX]40|[xX]2[eE])|commat|period);")
_ESCAPED_AT = re.compile("%40|&(?:#(?:64|[xX]40)|commat);")
_ADDRESS_RUN = re.compile(f"(?:[0-9A-Za-z._%+-]|{_ESCAPE.pattern})+")


def _has_escaped_at(text: str) -> bool:
    # Substring tests (C speed) before the regular expression: most texts have none.
    maybe = "%40" in text or "&#" in text or "&commat;" in text
    return maybe and _ESCAPED_AT.search(text) is not None


def _unescape(m: re.Match[str]) -> str:
    return _UNESCAPED[m.group().lower()]


def _decode_run(m: re.Match[str]) -> str:
    run = m.group()
    if _ESCAPED_AT.search(run) is None:
        return run
    return _ESCAPE.sub(_unescape, run)


def normalise(text: str) -> str:
    """`text` as the detectors read it (see the module docstring). Never raises."""
    if text.isascii():
        if "%" not in text and "&" not in text:
            return text
    else:
        changes = [(ch, plain) for ch in _non_ascii(text) if (plain := _PLAIN[ch]) != ch]
        if len(changes) > _MAX_REPLACES:
            text = text.translate(_TABLE)
        else:
            # `_plain` is idempotent (what it returns it keeps as it is), so replacing one
            # character after the other gives the same text as a translation in one pass.
            for ch, plain in changes:
                text = text.replace(ch, plain)
    if _has_escaped_at(text):
        text = _ADDRESS_RUN.sub(_decode_run, text)
    return text


def normalise_mapped(text: str) -> tuple[str, list[int], list[int]]:
    """`normalise(text)` with, for each of its characters, the span of `text` it comes from.

    Returns (normalised, starts, ends): character i of the result stands for
    `text[starts[i]:ends[i]]`, so a span [a, b) of the result covers `text[starts[a]:ends[b -
    1]]` (which includes every removed character inside it). Slower than `normalise`: for the
    few texts in which a detector fires.
    """
    chars: list[str] = []
    starts: list[int] = []
    for i, ch in enumerate(text):
        plain = ch if ch.isascii() else _PLAIN[ch]
        chars.extend(plain)
        starts.extend([i] * len(plain))
    ends = [s + 1 for s in starts]
    joined = "".join(chars)
    if not _has_escaped_at(joined):
        return joined, starts, ends
    out: list[str] = []
    out_starts: list[int] = []
    out_ends: list[int] = []
    pos = 0
    for run in _ADDRESS_RUN.finditer(joined):
        if _ESCAPED_AT.search(run.group()) is None:
            continue
        for e in _ESCAPE.finditer(joined, run.start(), run.end()):
            out.append(joined[pos : e.start()])
            out_starts += starts[pos : e.start()]
            out_ends += ends[pos : e.start()]
            out.append(_unescape(e))
            out_starts.append(starts[e.start()])
            out_ends.append(ends[e.end() - 1])
            pos = e.end()
    out.append(joined[pos:])
    out_starts += starts[pos:]
    out_ends += ends[pos:]
    return "".join(out), out_starts, out_ends
