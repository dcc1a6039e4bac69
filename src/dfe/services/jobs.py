"""Jobs: asynchronous operations and their progress, in job_t.

The queue carries job ids only; this table is the truth about a job. A running
job holds a lease that its worker renews at every step; `dfe reconcile` takes
over jobs whose lease ran out (their worker died).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from dfe.db.base import utcnow
from dfe.db.session import execute_prebuilt
from dfe.enums import JobKind, JobStatus
from dfe.models import Instance, Job
from dfe.schemas import JobPublic
from dfe.services.base import add_inserted, insert_row, new_row
from dfe.services.errors import NotFound

# A statement, not the ORM's flush: a launch records its job while it holds the
# database's write lock.
_INSERT_JOB = insert(Job)


def create_job(session: Session, kind: JobKind, instance: Instance) -> Job:
    row = new_row(
        Job,
        kind=kind,
        status=JobStatus.QUEUED,
        user_id=instance.user_id,
        instance_id=instance.id,
        instance_name=instance.name,
        step="queued",
        progress=0,
    )
    job_id = insert_row(session, _INSERT_JOB, row)
    return add_inserted(session, Job(id=job_id, **row))


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


# A job's public view and its owner, as plain columns (no job object is loaded).
_VIEW = select(Job.user_id, *(getattr(Job, field) for field in JobPublic.model_fields)).where(
    Job.id == bindparam("p_job")
)


def job_public(session: Session, job_id: int, owner_id: int | None = None) -> JobPublic:
    """A job's progress; NotFound if there is no such job or, with `owner_id`, if it
    belongs to someone else (its existence is not revealed)."""
    row = execute_prebuilt(session, _VIEW, {"p_job": job_id}).first()
    if row is None or (owner_id is not None and row.user_id != owner_id):
        raise NotFound(f"job {job_id} does not exist")
    return JobPublic.model_validate(row)


def list_jobs(
    session: Session,
    *,
    limit: int = 50,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return list(session.scalars(query))


# The worker's statements, built once (they run several times per job).
_CLAIM = (
    update(Job)
    .where(
        Job.id == bindparam("p_job"),
        or_(
            Job.status == JobStatus.QUEUED,
            and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < bindparam("p_now")),
        ),
    )
    .values(
        status=JobStatus.RUNNING,
        step=bindparam("p_step"),
        progress=bindparam("p_progress"),
        attempts=Job.attempts + 1,
        started_at=func.coalesce(Job.started_at, bindparam("p_now")),
        lease_expires_at=bindparam("p_until"),
        message=None,
        updated_at=bindparam("p_now"),
    )
    .execution_options(synchronize_session=False)
)
_ADVANCE = (
    update(Job)
    .where(Job.id == bindparam("p_job"))
    .values(
        step=bindparam("p_step"),
        progress=bindparam("p_progress"),
        lease_expires_at=bindparam("p_until"),
        updated_at=bindparam("p_now"),
    )
    .execution_options(synchronize_session=False)
)
_FINISH = (
    update(Job)
    .where(Job.id == bindparam("p_job"))
    .values(
        status=bindparam("p_status"),
        step=bindparam("p_step"),
        progress=bindparam("p_progress"),
        message=bindparam("p_message"),
        finished_at=bindparam("p_now"),
        lease_expires_at=None,
        updated_at=bindparam("p_now"),
    )
    .execution_options(synchronize_session=False)
)


def claim(
    session: Session, job_id: int, lease: timedelta, *, step: str = "started", progress: int = 0
) -> bool:
    """Take a job to run, at its first `step`: atomically, so two workers (or a worker
    and `dfe reconcile`) never run one job at once. Only a queued job, or a running one
    whose lease ran out, can be taken. True if this caller has it now."""
    now = utcnow()
    values = {"p_job": job_id, "p_now": now, "p_until": now + lease}
    taken = execute_prebuilt(session, _CLAIM, {**values, "p_step": step, "p_progress": progress})
    return bool(taken.rowcount)


def advance(session: Session, job_id: int, step: str, progress: int, lease: timedelta) -> None:
    """Record a running job's step and renew its lease (one UPDATE)."""
    now = utcnow()
    execute_prebuilt(
        session,
        _ADVANCE,
        {
            "p_job": job_id,
            "p_step": step,
            "p_progress": progress,
            "p_until": now + lease,
            "p_now": now,
        },
    )


def finish(
    session: Session,
    job_id: int,
    status: JobStatus,
    message: str | None = None,
    *,
    step: str = "done",
    progress: int = 100,
) -> None:
    """End a job (one UPDATE): succeeded (step "done", progress 100), or failed with
    `message` at the `step` and `progress` where it stopped. Every job ends here."""
    execute_prebuilt(
        session,
        _FINISH,
        {
            "p_job": job_id,
            "p_status": status,
            "p_step": step,
            "p_progress": progress,
            "p_message": message,
            "p_now": utcnow(),
        },
    )


def stale_jobs(session: Session) -> list[Job]:
    """Running jobs whose worker stopped renewing the lease."""
    return list(
        session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < utcnow())
        )
    )


def waiting_jobs(session: Session, older_than: timedelta) -> list[Job]:
    """Queued jobs nobody picked up (the queue lost them, or it was down)."""
    return list(
        session.scalars(
            select(Job).where(
                Job.status == JobStatus.QUEUED, Job.created_at < utcnow() - older_than
            )
        )
    )


def public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job)
