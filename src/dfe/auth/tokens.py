"""Short-lived user tokens: what the Console returns for a good login.

The Dashboard holds no credentials of its own for users; after a login it sends
the token in the `DFE-User-Token` header (covered by its request signature) to
act for that user. A token names the user, the key it was issued to, an expiry
and a fingerprint of the user's password hash, so a password change ends every
session. It is HMAC-SHA256 signed with a key derived from the encryption keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from dfe.crypto import active_keyring

_PURPOSE = "dfe user token v1"


@dataclass(frozen=True)
class UserToken:
    user_id: int
    client_id: str
    expires_at: int
    fingerprint: str


def password_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(payload: str) -> str:
    key = active_keyring().derive_key(_PURPOSE)
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def issue(user_id: int, client_id: str, password_hash: str, ttl_seconds: int) -> tuple[str, int]:
    """A token for `user_id`, usable only with the key `client_id`; (token, expires_at)."""
    expires_at = int(time.time()) + ttl_seconds
    claims = {
        "u": user_id,
        "c": client_id,
        "e": expires_at,
        "f": password_fingerprint(password_hash),
    }
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_mac(payload)}", expires_at


def read(token: str, now: float | None = None) -> UserToken | None:
    """The token's claims, or None if it is forged, malformed or expired."""
    payload, _, mac = token.partition(".")
    if not payload or not mac or not hmac.compare_digest(mac, _mac(payload)):
        return None
    try:
        claims = json.loads(_unb64(payload))
        token_claims = UserToken(
            user_id=int(claims["u"]),
            client_id=str(claims["c"]),
            expires_at=int(claims["e"]),
            fingerprint=str(claims["f"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if token_claims.expires_at <= (time.time() if now is None else now):
        return None
    return token_claims
