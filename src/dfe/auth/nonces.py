"""Replay caches for signature nonces: the database by default, Redis when configured."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dfe.auth.signatures import NonceStore
from dfe.db.base import utcnow
from dfe.db.session import execute_prebuilt
from dfe.models import SeenNonce

PURGE_EVERY = 1000


class DatabaseNonceStore:
    """`nonce_t` with a unique (client_id, nonce): the insert itself is the atomic check.

    A request's nonce is recorded through its own session (`in_session`): on the
    connection, and in the transaction, that looked up its key, so a signed request
    takes one connection and commits once before its handler runs.
    """

    _INSERT = insert(SeenNonce)
    _PURGE = delete(SeenNonce).where(SeenNonce.expires_at < bindparam("p_now"))

    def __init__(self) -> None:
        self._inserts = 0
        self._lock = threading.Lock()

    def in_session(self, session: Session) -> NonceStore:
        return _SessionNonces(self, session)

    def count_recorded(self) -> bool:
        """Count one recorded nonce; True at every PURGE_EVERY-th: time to delete the
        expired ones."""
        with self._lock:
            self._inserts += 1
            return self._inserts % PURGE_EVERY == 0


@dataclass(frozen=True)
class _SessionNonces:
    store: DatabaseNonceStore
    session: Session

    def remember(self, client_id: str, nonce: str, expires_at: float) -> bool:
        expiry = datetime.fromtimestamp(expires_at, UTC)
        values = {"client_id": client_id, "nonce": nonce, "expires_at": expiry}
        try:
            execute_prebuilt(self.session, DatabaseNonceStore._INSERT, values)
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            return False
        if self.store.count_recorded():
            execute_prebuilt(self.session, DatabaseNonceStore._PURGE, {"p_now": utcnow()})
            self.session.commit()
        return True


class RedisNonceStore:
    """SET NX with an absolute expiry: shared by every Console process."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url)

    def in_session(self, session: Session) -> NonceStore:
        return self

    def remember(self, client_id: str, nonce: str, expires_at: float) -> bool:
        return bool(
            self._redis.set(f"dfe:nonce:{client_id}:{nonce}", 1, nx=True, exat=int(expires_at) + 1)
        )


ConsoleNonceStore = DatabaseNonceStore | RedisNonceStore


def nonce_store(redis_url: str | None) -> ConsoleNonceStore:
    return RedisNonceStore(redis_url) if redis_url else DatabaseNonceStore()
