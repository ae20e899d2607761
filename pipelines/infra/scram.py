"""SCRAM-SHA-256 password verifiers computed on the client (RFC 5802, RFC 7677).

PostgreSQL stores a verifier, never the password; handing it the verifier instead of the
password keeps the password out of the SQL text, so out of error messages, tracebacks and
the server log. The format is PostgreSQL's own (what psql's password command sends):
`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
SALT_BYTES = 16


def saslprep(password: str) -> bytes:
    """The password's bytes as PostgreSQL hashes them (SASLprep, RFC 4013).

    ASCII passes unchanged. Otherwise spaces are mapped to U+0020, characters "mapped to
    nothing" dropped, NFKC applied; when the result holds a prohibited character or breaks
    the bidirectional rule, PostgreSQL falls back to the raw UTF-8 bytes, and so does this.
    """
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,  # unassigned code points (stored strings)
    )
    if not prepared or any(check(c) for c in prepared for check in prohibited):
        return raw
    rand_al = [stringprep.in_table_d1(c) for c in prepared]
    if any(rand_al) and (
        any(stringprep.in_table_d2(c) for c in prepared) or not (rand_al[0] and rand_al[-1])
    ):
        return raw
    return prepared.encode("utf-8")


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    """(ClientKey, StoredKey, ServerKey) of RFC 5802 section 3."""
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return client_key, hashlib.sha256(client_key).digest(), server_key


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS
) -> str:
    """PostgreSQL's stored form of `password`; a fresh random salt unless one is given."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    _, stored_key, server_key = scram_keys(password, salt, iterations)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
