"""Usage metrics: one row per instance per day (UTC) in metrics_t.

Requests are counted by each web-tier process in memory and added here every
minute or so (`add_requests`, a signed call with the web server's key; a
process adds only what it counted since its last report, so any number of
processes add up). Database and storage bytes are measured by `gather` (`dfe
metrics gather`, run daily by the worker): the driver's size of the instance's
database, and the bytes of the files under its storage root.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dfe.db.base import utcnow
from dfe.db.session import Database
from dfe.enums import ProvisionState
from dfe.models import ARCHIVED_TABLES, Instance, Metric
from dfe.provisioning.drivers import driver_for
from dfe.provisioning.errors import DriverError, StorageError
from dfe.provisioning.storage import LocalStorage
from dfe.schemas import MetricPublic, MetricsGathered, RequestCounts
from dfe.services.errors import InvalidInput

MAX_DAYS = 400  # the longest span one listing returns


def today() -> date:
    return datetime.now(UTC).date()


def _ensure_row(session: Session, instance_id: int, name: str, day: date) -> None:
    """Make the (instance, day) row if there is none (a concurrent maker wins quietly)."""
    exists = session.scalar(
        select(Metric.id).where(Metric.instance_id == instance_id, Metric.day == day)
    )
    if exists is not None:
        return
    try:
        with session.begin_nested():
            session.add(Metric(instance_id=instance_id, instance_name=name, day=day, requests=0))
            session.flush()
    except IntegrityError:
        pass


def add_requests(session: Session, data: RequestCounts, web_server_id: int | None = None) -> int:
    """Add a web-tier process's counts; with `web_server_id`, only for instances placed on
    that web server (live or archived since). The number of instances counted."""
    if abs((data.day - today()).days) > 2:
        raise InvalidInput("day: only counts of the last two days are taken")
    wanted = {item.instance_id: item.requests for item in data.items}
    names = _instance_names(session, set(wanted), web_server_id)
    for instance_id, name in names.items():
        _ensure_row(session, instance_id, name, data.day)
        session.execute(
            update(Metric)
            .where(Metric.instance_id == instance_id, Metric.day == data.day)
            .values(requests=Metric.requests + wanted[instance_id], updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
    return len(names)


def _instance_names(session: Session, ids: set[int], web_server_id: int | None) -> dict[int, str]:
    if not ids:
        return {}
    live = select(Instance.id, Instance.name).where(Instance.id.in_(ids))
    archive = ARCHIVED_TABLES[Instance.__table__]  # type: ignore[index]
    gone = select(archive.c.id, archive.c.name).where(archive.c.id.in_(ids))
    if web_server_id is not None:
        live = live.where(Instance.web_server_id == web_server_id)
        gone = gone.where(archive.c.web_server_id == web_server_id)
    found: dict[int, str] = {row[0]: row[1] for row in session.execute(gone)}
    found.update({row[0]: row[1] for row in session.execute(live)})
    return found


def list_metrics(
    session: Session,
    *,
    owner_id: int | None = None,
    instance: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[MetricPublic]:
    """Rows by day then instance; a user (`owner_id`) sees their live instances' only."""
    until = until or today()
    since = since or until - timedelta(days=29)
    if since > until:
        raise InvalidInput("since: after until")
    if (until - since).days >= MAX_DAYS:
        raise InvalidInput(f"at most {MAX_DAYS} days at a time")
    query = select(Metric).where(Metric.day >= since, Metric.day <= until)
    if owner_id is not None:
        owned = select(Instance.id).where(Instance.user_id == owner_id)
        query = query.where(Metric.instance_id.in_(owned))
    if instance is not None:
        query = query.where(Metric.instance_name == instance.strip().lower())
    rows = session.scalars(query.order_by(Metric.day, Metric.instance_name, Metric.id))
    return [
        MetricPublic(
            instance=row.instance_name,
            instance_id=row.instance_id,
            day=row.day,
            requests=row.requests,
            database_bytes=row.database_bytes,
            storage_bytes=row.storage_bytes,
        )
        for row in rows
    ]


# Gathering sizes


@dataclass(frozen=True)
class _Target:
    instance_id: int
    name: str
    driver_config: dict[str, object]
    database_name: str
    storage_root: Path | None


def storage_bytes(root: Path) -> int:
    """Bytes of the regular files under `root` (links are not followed, nor counted)."""
    total = 0
    for directory, _subdirectories, files in os.walk(root, followlinks=False):
        for name in files:
            try:
                status = os.lstat(os.path.join(directory, name))
            except OSError:
                continue  # removed while we walked
            if stat.S_ISREG(status.st_mode):
                total += status.st_size
    return total


def _targets(session: Session) -> list[_Target]:
    rows = session.scalars(
        select(Instance)
        .where(Instance.provision_state == ProvisionState.PROVISIONED)
        .order_by(Instance.id)
    )
    targets = []
    for instance in rows:
        server = instance.db_server
        mount = instance.web_server.mount
        root = None
        if mount is not None:
            try:
                paths = LocalStorage(mount.root_path).paths(
                    instance.user.storage_key, instance.name
                )
                root = paths.instance_root
            except (StorageError, ValueError):
                root = None
        targets.append(
            _Target(
                instance.id,
                instance.name,
                {"host": server.host, **server.config},
                instance.db_name or "",
                root,
            )
        )
    return targets


def gather(database: Database, day: date | None = None) -> MetricsGathered:
    """Measure every provisioned instance's database and storage, and record them for `day`.

    The measuring happens outside any transaction (a slow db server holds no lock here);
    each instance's row is written in a short one.
    """
    day = day or today()
    with database.transaction(actor="metrics") as session:
        targets = _targets(session)
    failures = []
    measured = 0
    for target in targets:
        database_size: int | None = None
        try:
            if target.database_name:
                database_size = driver_for(target.driver_config).size_bytes(target.database_name)
        except (DriverError, ValueError) as error:
            failures.append(f"{target.name}: {error}")
        storage_size = (
            storage_bytes(target.storage_root)
            if target.storage_root is not None and target.storage_root.is_dir()
            else None
        )
        with database.transaction(actor="metrics") as session:
            _ensure_row(session, target.instance_id, target.name, day)
            session.execute(
                update(Metric)
                .where(Metric.instance_id == target.instance_id, Metric.day == day)
                .values(
                    database_bytes=database_size, storage_bytes=storage_size, updated_at=utcnow()
                ),
                execution_options={"synchronize_session": False},
            )
        measured += 1
    return MetricsGathered(day=day, instances=measured, failures=failures)
