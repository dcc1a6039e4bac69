"""What the Console's admin UI needs beyond the API's services: the overview's
figures, the instances-per-day chart's data, locking instances, retrying jobs,
and service users' logins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, cast, delete, func, select
from sqlalchemy.orm import Session

from dfe.auth.passwords import verify_password
from dfe.config import Settings
from dfe.db.base import utcnow
from dfe.enums import JobKind, JobStatus, OperationalState, ProvisionState
from dfe.models import (
    ARCHIVED_TABLES,
    Cluster,
    Instance,
    Job,
    LoginFailure,
    Mount,
    Server,
    ServiceUser,
    User,
)
from dfe.services import audit, jobs
from dfe.services.errors import Conflict, TooManyRequests, Unauthorized
from dfe.services.instances import get_instance
from dfe.services.logins import BAD_CREDENTIALS, _recent_failures

# Failed jobs stay on the overview until their instance is fine again or gone.
ATTENTION_LIMIT = 20


@dataclass
class Overview:
    clusters: int
    servers: int
    mounts: int
    users: int
    service_users: int
    instances: int
    by_state: dict[str, int]
    failed_jobs: list[Job]
    running_jobs: int


def _count(session: Session, model: Any) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def overview(session: Session) -> Overview:
    """Counts of everything, instances by provisioning state, and the failed jobs whose
    instance is still in an error state (they need an operator)."""
    by_state = {
        str(state): count
        for state, count in session.execute(
            select(Instance.provision_state, func.count()).group_by(Instance.provision_state)
        )
    }
    attention = (
        select(Job)
        .join(Instance, Instance.id == Job.instance_id)
        .where(
            Job.status == JobStatus.FAILED,
            Instance.provision_state.in_(
                [ProvisionState.PROVISIONING_ERROR, ProvisionState.DEPROVISIONING_ERROR]
            ),
        )
        .order_by(Job.id.desc())
        .limit(ATTENTION_LIMIT)
    )
    running = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
    )
    return Overview(
        clusters=_count(session, Cluster),
        servers=_count(session, Server),
        mounts=_count(session, Mount),
        users=_count(session, User),
        service_users=_count(session, ServiceUser),
        instances=sum(by_state.values()),
        by_state=by_state,
        failed_jobs=list(session.scalars(attention)),
        running_jobs=running or 0,
    )


@dataclass
class DayCount:
    day: date
    launched: int
    deprovisioned: int


def _day(value: Any) -> date:
    """A DATE() result as a date (SQLite answers text, the servers a date)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def instances_per_day(session: Session, days: int = 30) -> list[DayCount]:
    """Instances launched (live and archived ones, by creation) and deprovisioned (by
    archiving) on each of the last `days` days, UTC, counted by the database."""
    today = utcnow().date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time()).replace(tzinfo=utcnow().tzinfo)
    archive = ARCHIVED_TABLES[Instance.__table__]  # type: ignore[index]
    live_day = _date_of(session, Instance.created_at)
    archived_created_day = _date_of(session, archive.c.created_at)
    archived_day = _date_of(session, archive.c.archived_at)
    launched: dict[date, int] = {}
    for day, count in session.execute(
        select(live_day, func.count()).where(Instance.created_at >= since).group_by(live_day)
    ):
        launched[_day(day)] = launched.get(_day(day), 0) + count
    for day, count in session.execute(
        select(archived_created_day, func.count())
        .where(archive.c.created_at >= since)
        .group_by(archived_created_day)
    ):
        launched[_day(day)] = launched.get(_day(day), 0) + count
    gone = {
        _day(day): count
        for day, count in session.execute(
            select(archived_day, func.count())
            .where(archive.c.archived_at >= since)
            .group_by(archived_day)
        )
    }
    return [
        DayCount(day, launched.get(day, 0), gone.get(day, 0))
        for day in (first + timedelta(days=offset) for offset in range(days))
    ]


def _date_of(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        return func.date(column)
    return cast(column, Date)


def set_locked(session: Session, ref: str | int, locked: bool) -> Instance:
    """Lock an instance (the web tier stops serving it) or unlock it again."""
    instance = get_instance(session, ref)
    if instance.provision_state is not ProvisionState.PROVISIONED:
        raise Conflict(
            f"instance '{instance.name}' is {instance.provision_state.value.replace('_', ' ')}: "
            "only a provisioned instance can be locked or unlocked"
        )
    wanted = OperationalState.LOCKED if locked else OperationalState.ACTIVATED
    if instance.operational_state is wanted:
        return instance
    before = {"operational_state": instance.operational_state.value}
    instance.operational_state = wanted
    instance.state_changed_at = utcnow()
    audit.record(
        session,
        "instance.lock" if locked else "instance.unlock",
        "instance",
        instance.id,
        instance.name,
        before,
        {"operational_state": wanted.value},
    )
    session.flush()
    return instance


def retry_job(session: Session, job_id: int) -> Job:
    """Queue a failed job again as a new job: a provisioning whose instance is in
    provisioning_error (the failure undid its work), or a deprovisioning."""
    job = jobs.get_job(session, job_id)
    if job.status is not JobStatus.FAILED:
        raise Conflict(f"job {job.id} is {job.status.value}: only a failed job can be retried")
    instance = session.get(Instance, job.instance_id) if job.instance_id else None
    if instance is None:
        raise Conflict(f"job {job.id}'s instance is gone: there is nothing to retry")
    expected = {
        JobKind.PROVISION: ProvisionState.PROVISIONING_ERROR,
        JobKind.DEPROVISION: ProvisionState.DEPROVISIONING_ERROR,
    }.get(job.kind)
    if expected is None or instance.provision_state is not expected:
        raise Conflict(
            f"instance '{instance.name}' is {instance.provision_state.value.replace('_', ' ')}: "
            f"job {job.id} cannot be retried now"
        )
    instance.provision_state = (
        ProvisionState.CREATED if job.kind is JobKind.PROVISION else ProvisionState.DEPROVISIONING
    )
    instance.state_changed_at = utcnow()
    retried = jobs.create_job(session, job.kind, instance)
    audit.record(
        session,
        "job.retry",
        "instance",
        instance.id,
        instance.name,
        {"job": job.id},
        {"job": retried.id, "kind": job.kind.value},
    )
    return retried


def check_service_login(
    session: Session, settings: Settings, email: str, password: str, address: str | None
) -> ServiceUser:
    """A service user's password check, throttled like the Dashboard users' logins
    (failures counted per account and per address in login_failure_t)."""
    email = email.strip().lower()
    window = timedelta(seconds=settings.login_failure_window_seconds)
    if _recent_failures(session, window, email=email) >= settings.login_max_failures_per_account:
        raise TooManyRequests(
            "too many failed logins for this account; try again later",
            settings.login_failure_window_seconds,
        )
    if address and (
        _recent_failures(session, window, address=address)
        >= settings.login_max_failures_per_address
    ):
        raise TooManyRequests(
            "too many failed logins from this address; try again later",
            settings.login_failure_window_seconds,
        )
    person = session.scalar(select(ServiceUser).where(ServiceUser.email == email))
    matches, new_hash = verify_password(password, person.password_hash if person else None)
    if person is None or not matches or not person.is_active:
        session.add(LoginFailure(email=email, address=address))
        session.commit()
        raise Unauthorized(BAD_CREDENTIALS)
    if new_hash:
        person.password_hash = new_hash
    session.execute(delete(LoginFailure).where(LoginFailure.email == email))
    person.last_login_at = utcnow()
    person.last_login_ip = address
    audit.record(session, "service_user.login", "service_user", person.id, person.email)
    return person
