"""Tasks that run once a day, whichever worker runs them.

Register a task with `@daily_task("name")` (a function of the database and the
settings, returning a one-line summary); the module that defines it must be
imported by `load_tasks`. Each `dfe worker` runs a thread (`DailyScheduler`)
that, at start and then every `CHECK_SECONDS`, runs every registered task not
yet run today (UTC). A task's run is claimed by inserting its (task, day) row in
daily_run_t: with any number of workers, each task runs once a day; the row
records when it ran, whether it succeeded, and its summary or error. A task
that failed is not retried the same day (`dfe metrics gather`, for one, can be
run by hand).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from dfe.config import Settings
from dfe.db.base import utcnow
from dfe.db.session import Database
from dfe.models import DailyRun

log = structlog.get_logger("dfe.daily")

DailyTask = Callable[[Database, Settings], str]
CHECK_SECONDS = 600.0
_TASKS: dict[str, DailyTask] = {}


def daily_task(name: str) -> Callable[[DailyTask], DailyTask]:
    """Register a function as the daily task `name`."""

    def register(function: DailyTask) -> DailyTask:
        if name in _TASKS and _TASKS[name] is not function:
            raise ValueError(f"a daily task named {name!r} is registered already")
        _TASKS[name] = function
        return function

    return register


def registered() -> dict[str, DailyTask]:
    load_tasks()
    return dict(_TASKS)


def load_tasks() -> None:
    """Import the modules that register daily tasks."""
    import dfe.metrics.tasks
    import dfe.snapshots.tasks  # noqa: F401


def claim(database: Database, name: str, day: date) -> bool:
    """Whether this caller gets to run `name` on `day` (the first to ask does)."""
    try:
        with database.transaction(actor="daily") as session:
            session.add(DailyRun(task=name, day=day))
            session.flush()
    except IntegrityError:
        return False
    return True


def _finish(database: Database, name: str, day: date, succeeded: bool, message: str) -> None:
    with database.transaction(actor="daily") as session:
        run = session.scalars(
            select(DailyRun).where(DailyRun.task == name, DailyRun.day == day)
        ).one()
        run.finished_at = utcnow()
        run.succeeded = succeeded
        run.message = message[:2000]


def run_due(database: Database, settings: Settings, day: date | None = None) -> list[str]:
    """Run the tasks not yet run on `day` (default: today, UTC); the names run here."""
    day = day or datetime.now(UTC).date()
    ran = []
    for name, task in registered().items():
        if not claim(database, name, day):
            continue
        ran.append(name)
        try:
            summary = task(database, settings)
        except Exception as error:
            # A daily task's failure is recorded and logged; the worker keeps working.
            log.exception("daily task failed", task=name)
            _finish(database, name, day, False, f"{type(error).__name__}: {error}")
            continue
        log.info("daily task done", task=name, summary=summary)
        _finish(database, name, day, True, summary)
    return ran


class DailyScheduler(threading.Thread):
    """The worker's thread that runs the daily tasks (a daemon: it dies with the worker)."""

    def __init__(
        self, database: Database, settings: Settings, interval: float = CHECK_SECONDS
    ) -> None:
        super().__init__(name="dfe-daily", daemon=True)
        self.database = database
        self.settings = settings
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                run_due(self.database, self.settings)
            except SQLAlchemyError as error:
                log.warning("daily tasks not checked", error=type(error).__name__)
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
