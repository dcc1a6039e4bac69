"""Password hashing: argon2id for new hashes; legacy bcrypt hashes verify and get upgraded."""

from __future__ import annotations

from functools import lru_cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from dfe.config import get_settings

# A valid hash of a random password: verifying against it costs the same as a real
# check, so a login for an unknown email takes as long as one for a known email.
_DUMMY_PASSWORD = "dfe-timing-equaliser-not-a-password"  # noqa: S105


@lru_cache(maxsize=1)
def _hasher() -> PasswordHash:
    settings = get_settings()
    return PasswordHash(
        (
            Argon2Hasher(
                time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_cost
            ),
        )
    )


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(matches, new hash when the stored one should be upgraded)."""
    if password_hash is None:
        _hasher().verify(password, _dummy_hash())
        return False, None
    return _hasher().verify_and_update(password, password_hash)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash(_DUMMY_PASSWORD)


def reset_password_hashing() -> None:
    """Forget the cached hasher (after the settings changed, in tests)."""
    _hasher.cache_clear()
    _dummy_hash.cache_clear()
