r"""What Safewatch shows of a setting, URL or error message: everything but the secrets.

One set of pure functions, used wherever text may reach a person or a table: `safewatch
config show`, log lines, error messages and the outbox's `last_error`.

Three kinds of secret are recognised:

- **Secret-looking names.** `is_secret_key` splits a name into words (at `.`, `_`, `-`, other
  punctuation and camelCase: `ssl.key.password`, `keyPassword`, `api_key`) and calls it secret
  when a word is one of `SECRET_WORDS` (password, passwd, pwd, pass, passphrase, secret,
  token, credential(s), jaas, auth, authorization, apikey, ...) or *key*, unless the next word
  says the value only describes the secret (`DESCRIPTORS`: `key.serializer`,
  `ssl.key.location`, `credentials.provider`, `sasl.login.callback.handler.class`,
  `auth.type`). `sasl` alone is not a secret word: the SASL properties that hold a secret
  name it (`sasl.jaas.config`, `sasl.oauthbearer...client.secret`), while `sasl.mechanism`
  and `sasl.kerberos.service.name` help to diagnose a connection. When in doubt a name is
  secret: showing `***` for a harmless value costs less than printing a key.
- **URL user information**: `scheme://user:pass@host` becomes `scheme://***@host`, wherever
  it occurs in a text. A password holding `/`, `?`, `#` or a space must be percent-encoded in
  a URL (SQLAlchemy and urllib require it too); unencoded, the part after that character is
  not recognised as user information.
- **Webhook URLs**: their path and query often *are* the credential (a Slack hook is
  `https://hooks.slack.com/services/T000/B000/XXXX`), so `redact_webhook_url` keeps only
  `scheme://host:port`.

`redact_text` also masks `name=value`, `"name": "value"` and `name="value"` pairs whose name
is secret-looking (a JAAS line `password="..."`, a query `?token=...`) and the credential of
`Bearer ...` / `Basic ...`. Messages of HTTP and database libraries often embed the URL they
were given (requests: `Max retries exceeded with url: /services/...`), possibly
percent-decoded; pass the secret parts of the URL (`url_secrets`) as `secrets` and every
occurrence is replaced, whatever the library did with it.

`SPARK_REDACTION_REGEX` gives Spark the same names for what it shows itself (UI, event logs,
plans).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

REDACTED = "***"

# A name holding one of these words (a whole word, see `_words`) names a secret.
SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "credential",
        "credentials",
        "jaas",
        "auth",
        "authorization",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "cookie",
        "key",
    }
)
# Words that end a secret word (one word: `trustStorePassword` is split, `keystorepassword`
# is not).
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "credential", "credentials")
# A secret word followed by one of these names something about the secret, not the secret:
# `key.serializer` (a class), `ssl.key.location` (a path), `auth.type` (a mechanism).
DESCRIPTORS = frozenset(
    {
        "serializer",
        "deserializer",
        "location",
        "file",
        "path",
        "type",
        "mechanism",
        "method",
        "provider",
        "class",
        "handler",
        "format",
        "algorithm",
        "alias",
        "name",
        "length",
        "size",
        "endpoint",
        "url",
        "uri",
        "enabled",
        "expiry",
        "ttl",
        "refresh",
    }
)
# The same names as a Java regular expression, for Spark's own redaction of its UI, event logs
# and plans (spark.redaction.regex, spark.sql.redaction.options.regex), which matches a key or
# a value anywhere: the suffix words anywhere (camelCase keys), the other words as whole words.
# Without the DESCRIPTORS exceptions: Spark redacts a little more than Safewatch.
SPARK_REDACTION_REGEX = (
    "(?i)"
    + "|".join(_SECRET_SUFFIXES)
    + "|(?:^|[^a-z0-9])(?:"
    + "|".join(sorted(SECRET_WORDS))
    + ")(?:[^a-z0-9]|$)"
)
_MIN_SECRET_LENGTH = 3  # shorter `secrets` are not replaced in free text (they would garble it)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")
# scheme://userinfo@ : the user information runs to the last @ before the host's end.
# Names start only where no name character precedes (the look-behinds): the scan stays linear
# on long runs of name characters.
_USERINFO = re.compile(
    r"(?P<scheme>(?<![A-Za-z0-9+.\-])[a-zA-Z][a-zA-Z0-9+.\-]*://)[^\s/?#@]*(?:@[^\s/?#@]*)*@"
)
_PAIR = re.compile(
    r"""(?P<key>(?<![A-Za-z0-9_.\-])-*[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>\s*=\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;&#"'<>)\]}]+)"""
)
_QUOTED_PAIR = re.compile(
    r"""(?P<q>["'])(?P<key>[^"'\s]{1,200})(?P=q)(?P<sep>\s*:\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
)
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]{6,}")


def _words(name: str) -> list[str]:
    return [w for w in _NON_WORD.split(_CAMEL.sub(".", name).lower()) if w]


def is_secret_key(name: str) -> bool:
    """True when a setting, option, header or parameter called `name` holds a secret."""
    words = _words(name)
    for i, word in enumerate(words):
        secret = word in SECRET_WORDS or word.endswith(_SECRET_SUFFIXES)
        if secret and (i + 1 == len(words) or words[i + 1] not in DESCRIPTORS):
            return True
    return False


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known secret, URL user information and secret-named value masked.

    `secrets` are values known to be secret (a password, a webhook's path): each occurrence,
    as given, percent-encoded or percent-decoded, becomes `***`, longest first; values shorter
    than 3 characters are left to the patterns.
    """
    variants: set[str] = set()
    for secret in secrets:
        variants |= {secret, unquote(secret), quote(secret, safe="/"), quote(secret, safe="")}
    for secret in sorted((s for s in variants if len(s) >= _MIN_SECRET_LENGTH), key=len)[::-1]:
        text = text.replace(secret, REDACTED)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _QUOTED_PAIR.sub(_mask_pair, text)
    text = _PAIR.sub(_mask_pair, text)
    return _AUTH_SCHEME.sub(lambda m: f"{m['scheme']} {REDACTED}", text)


def _mask_pair(match: re.Match[str]) -> str:
    if not is_secret_key(match["key"]):
        return match[0]
    value = match["value"]
    quote_char = value[0] if value[:1] in ("'", '"') else ""
    return f"{match[0][: match.start('value') - match.start()]}{quote_char}{REDACTED}{quote_char}"


def redact_url(url: str) -> str:
    """`url` for a log line: user information and secret-named query values masked."""
    return redact_text(url)


def redact_webhook_url(url: str) -> str:
    """`scheme://host:port` of a webhook URL, `/***` standing for any path, query or fragment.

    A value that is not an absolute URL is shown as `***` (all of it may be the secret).
    """
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    shown = f"[{host}]" if ":" in host else host
    shown = f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")
    if parts.path.strip("/") or parts.query or parts.fragment:
        shown += f"/{REDACTED}"
    return shown


def url_secrets(url: str, *, path: bool = False) -> tuple[str, ...]:
    """The parts of `url` that must not be shown: its user information, and with `path` (a
    webhook) also its path, query and fragment and the URL itself. For `redact_text`.
    """
    try:
        parts = urlsplit(url.strip())
        username, password = parts.username, parts.password
    except ValueError:  # not even a URL: all of it is secret
        return (url,)
    found = [s for s in (password, username) if s]
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found.append(userinfo)
    if path:
        found += [url, parts.path.rstrip("/"), parts.query, parts.fragment]
        found += [parts.path.rstrip("/") + "?" + parts.query] if parts.query else []
    return tuple(s for s in found if s and s != "/")


def redact_tree(value: Any) -> Any:
    """A copy of nested mappings and sequences for display: the value of every secret-named
    key, and every secret object (anything with `get_secret_value`, e.g. pydantic's
    SecretStr), becomes `***` (None stays None: unset); every other string goes through
    `redact_text`. Other leaves are returned unchanged.
    """
    if hasattr(value, "get_secret_value"):
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and is_secret_key(k) and v is not None
                else redact_tree(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
