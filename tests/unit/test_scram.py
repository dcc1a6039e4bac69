"""The PostgreSQL driver's SCRAM-SHA-256 verifier, checked against RFC 7677's exchange.

The functional suite logs in with verifiers made this way on a real PostgreSQL; this
checks the keys themselves: a server holding the verifier accepts the RFC's client
proof, and the client accepts the server's signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dfe.provisioning.drivers.postgresql import scram_sha256_verifier
from dfe.provisioning.errors import DriverError

# RFC 7677 section 3: user "user", password "pencil".
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL_BARE = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
AUTH_MESSAGE = f"{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_BARE}".encode()


def keys_of(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    scheme, rest = verifier.split("$", 1)
    assert scheme == "SCRAM-SHA-256"
    head, keys = rest.split("$")
    iterations, salt = head.split(":")
    stored, server = keys.split(":")
    return (
        int(iterations),
        base64.b64decode(salt),
        base64.b64decode(stored),
        base64.b64decode(server),
    )


def test_the_verifier_accepts_the_rfc_client_and_signs_as_the_rfc_server() -> None:
    iterations, salt, stored_key, server_key = keys_of(scram_sha256_verifier("pencil", salt=SALT))
    assert (iterations, salt) == (4096, SALT)
    # The server's check of the client's proof: ClientKey = proof XOR ClientSignature.
    client_signature = hmac.new(stored_key, AUTH_MESSAGE, "sha256").digest()
    client_key = bytes(a ^ b for a, b in zip(PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert hmac.new(server_key, AUTH_MESSAGE, "sha256").digest() == SERVER_SIGNATURE


def test_another_password_fails_the_rfc_proof() -> None:
    _, _, stored_key, _ = keys_of(scram_sha256_verifier("pencil2", salt=SALT))
    client_signature = hmac.new(stored_key, AUTH_MESSAGE, "sha256").digest()
    client_key = bytes(a ^ b for a, b in zip(PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() != stored_key


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_each_verifier_has_a_fresh_salt_and_its_keys_follow_from_it(password: str) -> None:
    first, second = scram_sha256_verifier(password), scram_sha256_verifier(password)
    _, salt, stored_key, server_key = keys_of(first)
    assert len(salt) == 16 and salt != keys_of(second)[1]
    assert scram_sha256_verifier(password, salt=salt) == first
    assert keys_of(second)[2:] != (stored_key, server_key)


@pytest.mark.parametrize("password", ["pässword", "tab\there", "line\nbreak"])
def test_a_password_saslprep_could_change_is_refused(password: str) -> None:
    with pytest.raises(DriverError, match="printable ASCII"):
        scram_sha256_verifier(password)
