"""Queue wiring: how a job id reaches a worker, and the worker itself.

Celery is dispatch only (no result backend): the broker is SQLite in the data
directory by default (one worker), or Redis or RabbitMQ by URL for many
workers on many machines. With `queue_eager` the job runs at once in the
process that asked (tests, debugging).
"""

from __future__ import annotations

import time
from functools import cached_property, lru_cache
from pathlib import Path
from queue import Empty
from typing import Any, Protocol

import structlog
from celery import Celery
from kombu.transport import sqlalchemy as kombu_sql
from kombu.utils.json import dumps, loads
from sqlalchemy import bindparam, delete, event, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dfe.config import Settings, get_settings
from dfe.db.session import Database, open_database, sqlite_pragmas
from dfe.logs import configure_logging
from dfe.models import Job
from dfe.provisioning.engine import Claimed, JobRunner

TASK_NAME = "dfe.run_job"
log = structlog.get_logger("dfe.jobs")
# Redis and RabbitMQ redeliver (or kill) an unacknowledged task after a while;
# jobs acknowledge when done, so allow them hours.
_REDELIVERY = {"visibility_timeout": 6 * 3600}


class Dispatcher(Protocol):
    def claim(self, session: Session, job: Job) -> Claimed | None:
        """Before the commit that records `job`: claim it in that transaction if this
        process will run it (inline), which spares the job a transaction of its own."""
        ...

    def dispatch(self, job_id: int, claimed: Claimed | None = None) -> None:
        """After that commit: run the job, or send it to a worker."""
        ...


class InlineDispatcher:
    """Runs the job in this process, before returning (queue_eager)."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self._runner = JobRunner(database, settings)

    def claim(self, session: Session, job: Job) -> Claimed | None:
        return self._runner.claim_in(session, job)

    def dispatch(self, job_id: int, claimed: Claimed | None = None) -> None:
        self._runner.run(job_id, claimed)


class QueueDispatcher:
    def __init__(self, settings: Settings) -> None:
        self._app = celery_app(settings)

    def claim(self, session: Session, job: Job) -> Claimed | None:
        return None  # a worker claims it

    def dispatch(self, job_id: int, claimed: Claimed | None = None) -> None:
        """Send the job to the queue. The job is recorded already: if the queue is down
        it stays queued, and a worker's start or `dfe reconcile` runs it later."""
        try:
            self._app.send_task(TASK_NAME, args=[job_id])
        except Exception as error:
            log.warning(
                "queue unavailable; job left queued", job_id=job_id, error=type(error).__name__
            )


def dispatcher_for(database: Database, settings: Settings) -> Dispatcher:
    if settings.queue_eager:
        return InlineDispatcher(database, settings)
    return QueueDispatcher(settings)


_apps: dict[str, Celery] = {}


def celery_app(settings: Settings) -> Celery:
    """The Celery app for the settings' broker (one per broker URL and process)."""
    url = settings.effective_broker_url
    if url not in _apps:
        _apps[url] = _make_app(url)
    return _apps[url]


class SqliteQueueChannel(kombu_sql.Channel):
    """Kombu's SQL channel, made cheaper per message: the queue file in WAL mode without
    an fsync per commit, as the Console's database (kombu's own fsynced twice per job:
    sent, taken), a message sent with one INSERT and taken with one DELETE. A power cut
    may lose the last messages; their jobs are recorded in the Console's database, and
    the next worker start or `dfe reconcile` runs them."""

    @cached_property
    def _queue_ids(self) -> dict[str, int]:
        return {}

    def _engine_from_config(self) -> Any:
        engine = super()._engine_from_config()  # type: ignore[no-untyped-call]
        event.listen(engine, "connect", sqlite_pragmas)
        return engine

    # (kombu's two base classes name the second parameter differently)
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Kombu's looked its queue up and inserted through the ORM at every message: half
        # of what a dispatch cost. One INSERT, built once as the DELETE that takes it.
        try:
            self.session.execute(
                self._send,
                {"queue_id": self._queue_id(queue), "payload": dumps(payload)},  # type: ignore[no-untyped-call]
            )
            self.session.commit()
        except OperationalError:
            self.session.rollback()  # and raise, as kombu's: the publish failed
            raise

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        # Kombu's took the oldest message in a transaction of three statements through
        # the ORM, and kept it, marked taken, for ever: the file grew with every job and
        # a poll of an empty queue read every row (20 ms with 220,000). Nothing reads a
        # taken message again (one left unacknowledged is sent anew): one DELETE takes it.
        row = self.session.execute(self._take, {"queue": self._queue_id(queue)}).first()
        self.session.commit()
        if row is None:
            raise Empty
        return loads(row.payload)  # type: ignore[no-untyped-call]

    def _queue_id(self, queue: str) -> int:
        found = self._queue_ids.get(queue)
        if found is None:
            found = self._get_or_create(queue).id  # type: ignore[no-untyped-call]
            # What kombu's transport took and kept (before this one) goes too.
            table = self.message_cls.__table__
            self.session.execute(delete(table).where(table.c.visible.is_(False)))
            self.session.commit()
            self._queue_ids[queue] = found
        return found

    @cached_property
    def _send(self) -> Any:
        return insert(self.message_cls.__table__)

    @cached_property
    def _take(self) -> Any:
        table = self.message_cls.__table__
        oldest = (
            select(table.c.id)
            .where(table.c.queue_id == bindparam("queue"), table.c.visible.is_(True))
            .order_by(table.c.timestamp, table.c.id)
            .limit(1)
            .scalar_subquery()
        )
        return delete(table).where(table.c.id == oldest).returning(table.c.payload)


class SqliteQueueTransport(kombu_sql.Transport):
    """Kombu's SQL transport for the embedded queue, polling as often as it is busy.

    Kombu's polls the queue table every second whenever it finds no message it may
    take, and a worker whose job slots are all taken finds none: one worker then ran
    about 4 jobs a second, however short they were, and a launch on an idle system
    waited up to a second. This one polls every 5 ms while messages keep coming (for
    2 s after the last), and every 250 ms when idle: an idle worker uses 0.3 % of a
    core, as kombu's did polling once a second (its polls cost more), and 8 % while
    polling quickly.
    """

    Channel = SqliteQueueChannel
    BUSY_POLL = 0.005
    IDLE_POLL = 0.25
    BUSY_FOR = 2.0
    _last_message = 0.0

    def drain_events(self, connection: Any, timeout: float | None = None, **_: Any) -> None:
        started = time.monotonic()
        assert self.cycle is not None  # set when the transport is made
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[no-untyped-call]
            except Empty:
                now = time.monotonic()
                busy = now - self._last_message < self.BUSY_FOR
                interval = self.BUSY_POLL if busy else self.IDLE_POLL
                if timeout is not None:
                    left = started + timeout - now
                    if left <= 0:
                        raise TimeoutError from None  # what kombu raises (socket.timeout)
                    interval = min(interval, left)
                time.sleep(interval)
            else:
                self._last_message = time.monotonic()
                return


def _make_app(broker_url: str) -> Celery:
    transport = None
    if broker_url.startswith("sqla+sqlite:///"):
        # The embedded queue is a file in the data directory, which may not exist yet.
        Path(broker_url.removeprefix("sqla+sqlite:///")).parent.mkdir(
            mode=0o700, parents=True, exist_ok=True
        )
        # Named by class, the transport takes the database URL without kombu's prefix.
        broker_url, transport = broker_url.removeprefix("sqla+"), SqliteQueueTransport
    app = Celery("dfe", broker=broker_url, set_as_current=False)
    app.conf.update(
        broker_transport=transport,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_REDELIVERY if broker_url.startswith("redis") else {},
        worker_send_task_events=False,
    )

    @app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_job(job_id: int) -> str:
        return str(_worker_runner().run(job_id).value)

    return app


@lru_cache(maxsize=1)
def _worker_runner() -> JobRunner:
    """One database (engine pool) per worker process, from the process's settings."""
    settings = get_settings()
    return JobRunner(open_database(settings), settings)


def run_worker(settings: Settings, concurrency: int, extra: list[str] | None = None) -> Any:
    """Run a Celery worker in this process until it is stopped."""
    configure_logging()
    app = celery_app(settings)
    return app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *(extra or []),
        ]
    )
