"""Replay caches for signature nonces: the database by default, Redis when configured."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from dfe.auth.signatures import NonceStore
from dfe.db.session import Database
from dfe.models import SeenNonce

PURGE_EVERY = 1000


class DatabaseNonceStore:
    """`nonce_t` with a unique (client_id, nonce): the insert itself is the atomic check."""

    _INSERT = insert(SeenNonce)

    def __init__(self, database: Database) -> None:
        self._database = database
        self._inserts = 0
        self._lock = threading.Lock()

    def remember(self, client_id: str, nonce: str, expires_at: float) -> bool:
        expiry = datetime.fromtimestamp(expires_at, UTC)
        values = {"client_id": client_id, "nonce": nonce, "expires_at": expiry}
        try:
            with self._database.engine.begin() as connection:
                connection.execute(self._INSERT, values)
        except IntegrityError:
            return False
        with self._lock:
            self._inserts += 1
            purge = self._inserts % PURGE_EVERY == 0
        if purge:
            self.purge()
        return True

    def purge(self) -> None:
        with self._database.engine.begin() as connection:
            connection.execute(delete(SeenNonce).where(SeenNonce.expires_at < datetime.now(UTC)))


class RedisNonceStore:
    """SET NX with an absolute expiry: shared by every Console process."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url)

    def remember(self, client_id: str, nonce: str, expires_at: float) -> bool:
        return bool(
            self._redis.set(f"dfe:nonce:{client_id}:{nonce}", 1, nx=True, exat=int(expires_at) + 1)
        )


def nonce_store(database: Database, redis_url: str | None) -> NonceStore:
    return RedisNonceStore(redis_url) if redis_url else DatabaseNonceStore(database)
