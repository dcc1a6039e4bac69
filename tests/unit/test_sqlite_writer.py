"""The writer lock: held exactly while a connection writes, and writers queue on it."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dfe.db.sqlite_writer import WriterLock, connection_class, writer_lock


def connect(path: Path, timeout: float = 30) -> sqlite3.Connection:
    lock = writer_lock(str(path), timeout)
    connection = sqlite3.connect(path, timeout=timeout, factory=connection_class(lock))
    connection.execute("PRAGMA journal_mode=WAL")
    return connection


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "test.db"
    with connect(path) as connection:
        connection.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
        connection.execute("INSERT INTO counter VALUES (0)")
    return path


def locked_by_someone(path: Path) -> bool:
    """Whether another open file description holds the flock."""
    fd = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_held_from_the_first_write_to_commit_or_rollback(database: Path) -> None:
    connection = connect(database)
    connection.execute("SELECT n FROM counter").fetchall()
    assert not locked_by_someone(database)  # reading takes nothing
    connection.execute("UPDATE counter SET n = n + 1")
    assert locked_by_someone(database)
    connection.commit()
    assert not locked_by_someone(database)
    connection.execute("  update counter SET n = n + 1")
    assert locked_by_someone(database)
    connection.rollback()
    assert not locked_by_someone(database)
    connection.close()


def test_released_when_no_transaction_stays_open(database: Path) -> None:
    connection = connect(database)
    with pytest.raises(sqlite3.OperationalError):
        connection.execute("INSERT INTO missing VALUES (1)")
    assert not locked_by_someone(database)
    connection.isolation_level = None  # autocommit: each write ends at once
    connection.execute("UPDATE counter SET n = n + 1")
    assert not locked_by_someone(database)
    connection.close()


def test_released_when_a_writing_connection_closes(database: Path) -> None:
    connection = connect(database)
    connection.execute("UPDATE counter SET n = n + 1")
    connection.close()
    assert not locked_by_someone(database)
    with connect(database) as other:
        assert other.execute("SELECT n FROM counter").fetchone() == (0,)


ADD_MANY = """
import sqlite3, sys
from dfe.db.sqlite_writer import connection_class, writer_lock

def add_many(path, times):
    lock = writer_lock(path, 30)
    connection = sqlite3.connect(path, timeout=30, factory=connection_class(lock))
    for _ in range(times):
        connection.execute("UPDATE counter SET n = n + 1")
        connection.commit()
    connection.close()

if __name__ == "__main__":
    add_many(sys.argv[1], int(sys.argv[2]))
"""


def test_threads_and_processes_writing_at_once_lose_nothing(database: Path) -> None:
    namespace: dict[str, object] = {}
    exec(ADD_MANY, namespace)
    processes = [
        subprocess.Popen([sys.executable, "-c", ADD_MANY, str(database), "150"]) for _ in range(2)
    ]
    threads = [
        threading.Thread(target=namespace["add_many"], args=(str(database), 150))  # type: ignore[arg-type]
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        assert process.wait(timeout=120) == 0
    with connect(database) as connection:
        assert connection.execute("SELECT n FROM counter").fetchone() == (750,)


def test_a_second_connection_of_the_same_thread_is_left_to_sqlite(database: Path) -> None:
    """No wait on ourselves: SQLite's busy handler times out, as it did without the lock."""
    first = connect(database, timeout=0.2)
    second = connect(database, timeout=0.2)
    first.execute("UPDATE counter SET n = n + 1")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        second.execute("UPDATE counter SET n = n + 1")
    first.commit()
    second.execute("UPDATE counter SET n = n + 1")
    second.commit()
    assert second.execute("SELECT n FROM counter").fetchone() == (2,)
    first.close()
    second.close()


def test_a_wait_that_outlasts_the_timeout_gives_up(tmp_path: Path) -> None:
    lock = WriterLock(str(tmp_path / "x.db"), timeout=0.05)
    fd = os.open(lock.path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process, as far as flock can tell
    try:
        assert lock.acquire() is False
    finally:
        os.close(fd)
    assert lock.acquire() is True
    lock.release()
