"""The embedded queue's transport polls every 5 ms while jobs come, every 250 ms when idle."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection
from sqlalchemy.exc import SADeprecationWarning
from sqlalchemy.orm import configure_mappers

from dfe.jobs import queue
from dfe.jobs.queue import SqliteQueueTransport


class Clock:
    """monotonic() and sleep() for the transport: sleeping moves the clock on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now = round(self.now + seconds, 6)  # no drift over a hundred naps


class Cycle:
    """The transport's queue cycle: a message (True) or none (False) per look."""

    def __init__(self, looks: list[bool]) -> None:
        self.looks = looks

    def get(self, deliver: object, timeout: float | None = None) -> None:
        if not self.looks.pop(0):
            raise Empty


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(queue.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(queue.time, "sleep", fake.sleep)
    return fake


@pytest.fixture
def transport() -> SqliteQueueTransport:
    made = Connection("sqlite:///:memory:", transport=SqliteQueueTransport).transport
    assert isinstance(made, SqliteQueueTransport)
    return made


def test_an_idle_worker_polls_every_250_ms_and_a_busy_one_every_5_ms(
    clock: Clock, transport: SqliteQueueTransport
) -> None:
    transport.cycle = Cycle([False, False, True, False, True])
    transport.drain_events(None)  # idle: nothing came yet
    assert clock.slept == [0.25, 0.25]
    clock.slept.clear()
    transport.drain_events(None)  # a message came just now: busy
    assert clock.slept == [0.005]


def test_polling_slows_down_once_messages_stop_coming(
    clock: Clock, transport: SqliteQueueTransport
) -> None:
    transport.cycle = Cycle([True] + [False] * 401 + [True])
    transport.drain_events(None)
    transport.drain_events(None)
    # 2 s of 5 ms polls after the last message, then every 250 ms.
    assert clock.slept[:400] == [0.005] * 400
    assert clock.slept[400:] == [0.25]


def test_a_drain_with_a_timeout_ends_in_timeouterror_without_oversleeping(
    clock: Clock, transport: SqliteQueueTransport
) -> None:
    transport.cycle = Cycle([False] * 10)
    with pytest.raises(TimeoutError):
        transport.drain_events(None, timeout=0.3)
    assert sum(clock.slept) == pytest.approx(0.3)


@pytest.fixture
def kombu_models() -> Iterator[None]:
    """kombu's SQLAlchemy models use lazy="noload", which SQLAlchemy 2.1 deprecates when
    the mappers are next configured: configured here, so no other test sees the warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The ``noload``", SADeprecationWarning)
        yield
        configure_mappers()


def test_the_queue_file_keeps_no_message_once_taken(kombu_models: None, tmp_path: Path) -> None:
    """Kombu's SQL transport keeps every message it has delivered; DFE's deletes them."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with Connection(url, transport=SqliteQueueTransport) as connection:
        jobs = connection.SimpleQueue("jobs")
        for job_id in (1, 2, 3):
            jobs.put({"job": job_id})
        taken = [jobs.get(timeout=5) for _ in range(3)]
        for message in taken:
            message.ack()
        jobs.close()
    assert [message.payload["job"] for message in taken] == [1, 2, 3]
    with sqlite3.connect(tmp_path / "queue.db") as queue_file:
        assert queue_file.execute("SELECT count(*) FROM kombu_message").fetchone() == (0,)
        assert queue_file.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_messages_kombus_own_transport_took_and_kept_go_with_the_next_one(
    kombu_models: None, tmp_path: Path
) -> None:
    """A queue file an earlier release used holds every message its worker took."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with Connection(f"sqla+{url}") as earlier:  # kombu's own SQL transport
        jobs = earlier.SimpleQueue("jobs")
        jobs.put({"job": 1})
        jobs.get(timeout=5).ack()
        jobs.close()
    with sqlite3.connect(tmp_path / "queue.db") as queue_file:
        assert queue_file.execute("SELECT count(*) FROM kombu_message").fetchone() == (1,)
    with Connection(url, transport=SqliteQueueTransport) as connection:
        jobs = connection.SimpleQueue("jobs")
        jobs.put({"job": 2})
        taken = jobs.get(timeout=5)
        taken.ack()
        jobs.close()
    assert taken.payload == {"job": 2}
    with sqlite3.connect(tmp_path / "queue.db") as queue_file:
        assert queue_file.execute("SELECT count(*) FROM kombu_message").fetchone() == (0,)
