"""SCRAM-SHA-256 verifiers against the worked example of RFC 7677 (section 3)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from pipelines.infra.scram import saslprep, scram_keys, scram_sha256_verifier

# RFC 7677 section 3: user "user", password "pencil".
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
NONCE = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SERVER_FIRST = f"r={NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
CLIENT_FINAL_WITHOUT_PROOF = f"c=biws,r={NONCE}"
PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
AUTH_MESSAGE = f"{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_WITHOUT_PROOF}".encode()


def test_the_stored_keys_accept_the_rfc_exchange():
    verifier = scram_sha256_verifier("pencil", salt=SALT, iterations=4096)
    method, rest = verifier.split("$", 1)
    head, keys = rest.split("$")
    iterations, salt = head.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    assert (method, iterations, base64.b64decode(salt)) == ("SCRAM-SHA-256", "4096", SALT)
    # What a server does with the stored keys (RFC 5802 section 3): recover ClientKey from
    # the client's proof and check it hashes to StoredKey; sign with ServerKey.
    client_signature = hmac.digest(stored_key, AUTH_MESSAGE, "sha256")
    client_key = bytes(a ^ b for a, b in zip(PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert hmac.digest(server_key, AUTH_MESSAGE, "sha256") == SERVER_SIGNATURE


def test_a_wrong_password_gives_other_keys_and_each_verifier_a_fresh_salt():
    assert scram_keys("pencil", SALT, 4096) != scram_keys("pencil!", SALT, 4096)
    a, b = scram_sha256_verifier("pencil"), scram_sha256_verifier("pencil")
    assert a != b
    assert "pencil" not in a


def test_saslprep_maps_spaces_and_drops_soft_hyphens_and_falls_back_when_prohibited():
    assert saslprep("pencil") == b"pencil"
    assert saslprep("I\u00adX") == b"IX"  # RFC 4013 example: soft hyphen mapped to nothing
    assert saslprep("a\u00a0b") == b"a b"  # non-ASCII space
    assert saslprep("\u2168") == b"IX"  # NFKC
    assert saslprep("a\u0007\u00e9") == "a\u0007\u00e9".encode()  # prohibited: raw bytes
