"""Signing and verifying Console API requests (RFC 9421 + RFC 9530).

Every request to `/api/v1` carries one HTTP Message Signature, hmac-sha256,
keyed with the caller's client secret, covering the method, authority, target
URI and Content-Digest of the request (and the `DFE-User-Token` header when
there is one), plus `created` and a `nonce`. This module is the whole scheme:
building those headers on the client side and checking them on the server
side, with replay protection through a `NonceStore`. It knows nothing about
HTTP frameworks, databases or who may do what; callers hand it the method,
the URL as the client sent it, the headers and the raw body.
docs/authentication.md describes the scheme for client authors.

Secret-dependent comparisons (HMAC, body digest) happen inside
http-message-signatures, in constant time.
"""

from __future__ import annotations

import heapq
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar, Protocol, cast

import cryptography.exceptions
import http_sf
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)

LABEL = "sig1"
ALGORITHM = "hmac-sha256"
REQUIRED_COMPONENTS = ("@method", "@authority", "@target-uri", "content-digest")
USER_TOKEN_HEADER = "dfe-user-token"  # noqa: S105 (a header name)
DEFAULT_MAX_AGE = 300
DEFAULT_MAX_FUTURE = 30

# At least 128 bits of randomness as base64url (22 chars) or hex (32 chars); the
# upper bound keeps nonce-store keys small.
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,128}")
_SIGNATURE_HEADERS = frozenset({"signature", "signature-input", "content-digest"})
_KNOWN_PARAMETERS = frozenset({"alg", "created", "expires", "keyid", "nonce", "tag"})
_TYPE_NAMES = {str: "a string", int: "an integer"}


class SignatureError(Exception):
    """A request failed verification. The API answers 401 with `code` as the problem type."""

    code: ClassVar[str]

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MissingSignatureError(SignatureError):
    code = "missing_signature"


class MalformedSignatureError(SignatureError):
    code = "malformed_signature"


class UnknownKeyError(SignatureError):
    code = "unknown_key"


class InsufficientCoverageError(SignatureError):
    code = "insufficient_coverage"


class BadSignatureError(SignatureError):
    code = "bad_signature"


class DigestMismatchError(SignatureError):
    code = "digest_mismatch"


class ExpiredSignatureError(SignatureError):
    code = "expired"


class FutureSignatureError(SignatureError):
    code = "from_the_future"


class ReplayedRequestError(SignatureError):
    code = "replayed"


@dataclass(frozen=True)
class VerifiedRequest:
    """What a verified signature vouches for."""

    client_id: str
    created: int
    nonce: str
    covers_user_token: bool


class NonceStore(Protocol):
    def remember(self, client_id: str, nonce: str, expires_at: float) -> bool:
        """Record (client_id, nonce) at least until `expires_at` (epoch seconds).

        Return False, recording nothing, if the pair is already recorded and
        not yet expired. Must be atomic: of two concurrent calls with the same
        pair, only one may return True. `expires_at` derives from the signed
        `created`, so the store's clock must agree with the verifier's.
        """
        ...


class MemoryNonceStore:
    """A NonceStore in process memory: for a single Console process, and tests.

    `clock` is injectable for tests that pass `now` to verify_request.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expires: dict[tuple[str, str], float] = {}
        # Min-heap by expiry, so purging looks only at the entries that are due.
        self._due: list[tuple[float, str, str]] = []

    def remember(self, client_id: str, nonce: str, expires_at: float) -> bool:
        with self._lock:
            now = self._clock()
            while self._due and self._due[0][0] < now:
                _, old_client, old_nonce = heapq.heappop(self._due)
                del self._expires[old_client, old_nonce]
            if (client_id, nonce) in self._expires:
                return False
            self._expires[client_id, nonce] = expires_at
            heapq.heappush(self._due, (expires_at, client_id, nonce))
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expires)


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    client_id: str,
    client_secret: str,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Return the Content-Digest, Signature-Input and Signature headers for a request.

    `url` must be the absolute URL as sent (see docs/authentication.md); `headers`
    are the other headers the request will carry. The caller adds the returned
    headers, replacing any it already had under those names.
    """
    if nonce is None:
        nonce = secrets.token_urlsafe(16)
    elif not _NONCE.fullmatch(nonce):
        raise ValueError("nonce must be 22-128 characters from [A-Za-z0-9_-]")
    fields = {k: v for k, v in headers.items() if k.lower() not in _SIGNATURE_HEADERS}
    covered: tuple[str, ...] = REQUIRED_COMPONENTS
    if any(name.lower() == USER_TOKEN_HEADER for name in fields):
        covered += (USER_TOKEN_HEADER,)
    message = SimpleNamespace(method=method.upper(), url=url, headers=fields)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(
            public_keys={}, private_keys={client_id: client_secret.encode()}
        ),
    )
    signer.sign(
        message,
        key_id=client_id,
        created=datetime.fromtimestamp(int(time.time()) if created is None else created, UTC),
        nonce=nonce,
        label=LABEL,
        covered_component_ids=covered,
        body=body,
    )
    return {name: fields[name] for name in ("Content-Digest", "Signature-Input", "Signature")}


def verify_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    resolve_secret: Callable[[str], str | None],
    nonces: NonceStore,
    now: float | None = None,
    max_age: int = DEFAULT_MAX_AGE,
    max_future: int = DEFAULT_MAX_FUTURE,
) -> VerifiedRequest:
    """Check a request's signature; raise a `SignatureError` subclass if it fails.

    `url` is the absolute URL the client addressed (behind a trusted proxy:
    rebuilt from its forwarded headers); `resolve_secret` maps a client_id to
    its client secret, or None if there is no such (active) key.
    """
    fields = _combined_fields(headers)
    if "signature" not in fields or "signature-input" not in fields:
        raise MissingSignatureError(
            "The request is not signed: it needs Signature-Input and Signature headers."
        )
    covered, params = _parse_signature(fields["signature-input"], fields["signature"])
    client_id, created, nonce = params["keyid"], params["created"], params["nonce"]

    required: tuple[str, ...] = REQUIRED_COMPONENTS
    if USER_TOKEN_HEADER in fields:
        required += (USER_TOKEN_HEADER,)
    uncovered = [component for component in required if component not in covered]
    if uncovered:
        raise InsufficientCoverageError(
            "The signature must cover " + ", ".join(f'"{c}"' for c in uncovered) + "."
        )
    if "content-digest" not in fields:
        raise DigestMismatchError("The request has no Content-Digest header.")

    secret = resolve_secret(client_id)
    if secret is None:
        raise UnknownKeyError(f'No active key has client_id "{client_id}".')
    _check_signature(method, url, fields, client_id, secret.encode())
    try:
        ContentDigest.verify(fields["content-digest"], body)
    except HTTPMessageSignaturesException as exc:
        raise DigestMismatchError(f"{str(exc).rstrip('.')}.") from None

    if now is None:
        now = time.time()
    if now - created > max_age:
        raise ExpiredSignatureError(
            f"The signature is {now - created:.0f} s old, the limit is {max_age} s;"
            " sign each request as it is sent."
        )
    if "expires" in params and params["expires"] < now:
        raise ExpiredSignatureError("The signature's own expires time has passed.")
    if created - now > max_future:
        raise FutureSignatureError(
            f"The signature was created {created - now:.0f} s in the future; check the"
            " client's clock."
        )
    # Only now, with the signature verified, may the nonce be spent. It can be
    # forgotten once a request this old would be rejected as expired anyway.
    if not nonces.remember(client_id, nonce, created + max_age):
        raise ReplayedRequestError("This nonce has been used before; use a fresh one per request.")
    return VerifiedRequest(client_id, created, nonce, USER_TOKEN_HEADER in covered)


def _combined_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-case the names and join repeated fields with ", " as HTTP does (RFC 9110 §5.3)."""
    fields: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        fields[key] = f"{fields[key]}, {value}" if key in fields else value
    return fields


def _parse_signature(signature_input: str, signature: str) -> tuple[set[str], dict[str, Any]]:
    """Return the plain covered components and the checked parameters of the one signature.

    The library's verifier reports every failure as one exception type; parsing
    here first tells malformed requests apart from forged ones, and lets coverage
    be checked before a key is looked up.
    """
    inputs, values = _parse_dictionary(signature_input), _parse_dictionary(signature)
    if len(inputs) != 1 or inputs.keys() != values.keys():
        raise MalformedSignatureError(
            "Signature-Input and Signature must each hold exactly one signature,"
            " under the same label."
        )
    label = next(iter(inputs))
    (components, params), (signature_value, _) = inputs[label], values[label]
    if not isinstance(components, list) or not isinstance(signature_value, bytes):
        raise MalformedSignatureError(
            "Signature-Input must hold an inner list and Signature a byte sequence."
        )
    if not all(isinstance(component, str) for component, _ in components):
        raise MalformedSignatureError("Covered components must be quoted strings.")

    problems = [f'unknown parameter "{name}"' for name in params.keys() - _KNOWN_PARAMETERS]
    for name, kind in (("keyid", str), ("created", int), ("nonce", str)):
        # `type(...) is`: a Structured Field boolean is a Python bool, a subclass of int.
        if type(params.get(name)) is not kind:
            problems.append(f'"{name}" is missing or not {_TYPE_NAMES[kind]}')
    if "expires" in params and type(params["expires"]) is not int:
        problems.append('"expires" is not an integer')
    if params.get("alg", ALGORITHM) != ALGORITHM:
        problems.append(f'"alg" must be "{ALGORITHM}"')
    if isinstance(params.get("nonce"), str) and not _NONCE.fullmatch(params["nonce"]):
        problems.append('"nonce" must be 22-128 characters from [A-Za-z0-9_-]')
    if problems:
        raise MalformedSignatureError("Signature-Input: " + "; ".join(problems) + ".")
    return {component for component, component_params in components if not component_params}, params


def _parse_dictionary(value: str) -> dict[str, Any]:
    def reject_duplicate(key: str, context: str) -> None:
        if context == "dictionary":
            raise ValueError(f'duplicate label "{key}"')

    try:
        parsed = http_sf.parse(
            value.encode(), tltype="dictionary", on_duplicate_key=reject_duplicate
        )
    except ValueError as exc:
        raise MalformedSignatureError(f"Not a Structured Field dictionary: {exc}.") from None
    return cast(dict[str, Any], parsed)


class _Verifier(HTTPMessageVerifier):
    # The library's time checks read the wall clock (which callers cannot set) and
    # fail with the same exception as a forgery; verify_request checks the time itself.
    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


def _check_signature(
    method: str, url: str, fields: dict[str, str], client_id: str, secret: bytes
) -> None:
    verifier = _Verifier(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={client_id: secret}, private_keys={}),
    )
    message = SimpleNamespace(method=method, url=url, headers=fields)
    try:
        verifier.verify(message, max_age=None)
    except HTTPMessageSignaturesException as exc:
        if isinstance(exc.__cause__, cryptography.exceptions.InvalidSignature):
            reason = "wrong secret, or a signature base other than the one the Console built"
        else:
            reason = str(exc).rstrip(".")
        raise BadSignatureError(f"The signature does not match the request: {reason}.") from None
