"""The embedded queue's transport polls every 20 ms while jobs come, every second when idle."""

from __future__ import annotations

from queue import Empty

import pytest
from kombu import Connection

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


def test_an_idle_worker_polls_every_second_and_a_busy_one_every_20_ms(
    clock: Clock, transport: SqliteQueueTransport
) -> None:
    transport.cycle = Cycle([False, False, True, False, True])
    transport.drain_events(None)  # idle: nothing came yet
    assert clock.slept == [1.0, 1.0]
    clock.slept.clear()
    transport.drain_events(None)  # a message came just now: busy
    assert clock.slept == [0.02]


def test_polling_slows_down_once_messages_stop_coming(
    clock: Clock, transport: SqliteQueueTransport
) -> None:
    transport.cycle = Cycle([True] + [False] * 101 + [True])
    transport.drain_events(None)
    transport.drain_events(None)
    # 2 s of 20 ms polls after the last message, then once a second.
    assert clock.slept[:100] == [0.02] * 100
    assert clock.slept[100:] == [1.0]


def test_a_drain_with_a_timeout_ends_in_timeouterror_without_oversleeping(
    clock: Clock, transport: SqliteQueueTransport
) -> None:
    transport.cycle = Cycle([False] * 10)
    with pytest.raises(TimeoutError):
        transport.drain_events(None, timeout=0.3)
    assert sum(clock.slept) == pytest.approx(0.3)
