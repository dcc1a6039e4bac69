"""Waiting for SQLite's one write lock without its busy handler's naps.

SQLite lets one connection write at a time. A writer that finds the lock taken
calls the busy handler, which sleeps 1, 2, 5, 10, ... ms between tries: under
steady writes from several threads or Console processes most of the time goes
to those naps, not to writing. So each connection first takes a lock of ours,
held from its first write statement to its commit or rollback (the span SQLite
holds its own lock): threads of a process queue on a `threading.Lock`, which
hands over at once; processes on an flock of `<database>-writer.lock`, polled
every 0.1 to 1 ms.

SQLite's own lock still decides who writes; this one only orders the waiting.
A statement it does not recognise as a write (or a second connection of the
same thread) simply goes to SQLite's busy handler, as before.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from typing import Any

_WRITES = ("insert", "update", "delete", "replace")
_LONGEST_NAP = 0.001


class WriterLock:
    """One per database file and process."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = f"{path}-writer.lock"
        self.timeout = timeout
        self._threads = threading.Lock()
        self._owner: int | None = None
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Wait for the lock; False (not taken) when this thread holds it already, through
        another connection, or when the wait outlasts the timeout (SQLite then decides)."""
        me = threading.get_ident()
        if self._owner == me:
            return False
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            return False
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            nap = 0.0001
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        self._threads.release()
                        return False
                    time.sleep(nap)
                    nap = min(nap * 2, _LONGEST_NAP)
        except BaseException:
            self._threads.release()
            raise
        self._owner = me
        return True

    def release(self) -> None:
        self._owner = None
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


_locks: dict[str, WriterLock] = {}
_locks_guard = threading.Lock()


def writer_lock(path: str, timeout: float) -> WriterLock:
    with _locks_guard:
        return _locks.setdefault(os.path.realpath(path), WriterLock(path, timeout))


def connection_class(lock: WriterLock) -> type[sqlite3.Connection]:
    """A `sqlite3.connect(factory=...)` whose connections take `lock` around their writes."""

    class Connection(sqlite3.Connection):
        _holds = False

        def cursor(self, factory: Any = None) -> Any:
            return super().cursor(factory or Cursor)

        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            return self.cursor().execute(sql, parameters)

        def executemany(self, sql: str, parameters: Any, /) -> Any:
            return self.cursor().executemany(sql, parameters)

        def before(self, statement: str) -> None:
            if (
                not self._holds
                and not self.in_transaction
                and statement.lstrip()[:7].lower().startswith(_WRITES)
            ):
                self._holds = lock.acquire()

        def after(self) -> None:
            """Release once no transaction is open (autocommit, a failed BEGIN, the end)."""
            if self._holds and not self.in_transaction:
                self._let_go()

        def _let_go(self) -> None:
            self._holds = False
            lock.release()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                self.after()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.after()

        def __exit__(self, *exc_info: Any) -> Any:  # commits or rolls back, in C
            try:
                return super().__exit__(*exc_info)
            finally:
                self.after()

        def close(self) -> None:
            try:
                super().close()
            finally:
                if self._holds:  # closed: in_transaction can no longer be asked
                    self._let_go()

    class Cursor(sqlite3.Cursor):
        connection: Connection

        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            self.connection.before(sql)
            try:
                return super().execute(sql, parameters)
            finally:
                self.connection.after()

        def executemany(self, sql: str, parameters: Any, /) -> Any:
            self.connection.before(sql)
            try:
                return super().executemany(sql, parameters)
            finally:
                self.connection.after()

    return Connection
