"""Operational records: the audit log, jobs, rate limits, usage metrics, and request-security
state."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from dfe.db.base import Base, Id, JsonDoc, UTCDateTime, utcnow
from dfe.enums import JobKind, JobStatus, LimitPeriod, LimitScope
from dfe.models.common import IdMixin, TimestampMixin, enum_column


class AuditEntry(IdMixin, Base):
    """Who changed what: one row per change, with secrets redacted from before/after."""

    __tablename__ = "audit_t"

    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_type: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[int | None] = mapped_column(Id)
    target_name: Mapped[str | None] = mapped_column(String(255), index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)


class Job(IdMixin, TimestampMixin, Base):
    """An asynchronous operation and its progress; the queue only dispatches job ids.

    `instance_id` is not a foreign key: a job outlives the instance it deprovisioned.
    """

    __tablename__ = "job_t"

    kind: Mapped[JobKind] = enum_column(JobKind, nullable=False)
    status: Mapped[JobStatus] = enum_column(
        JobStatus, default=JobStatus.QUEUED, nullable=False, index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("user_t.id", ondelete="SET NULL"), index=True
    )
    instance_id: Mapped[int | None] = mapped_column(Id, index=True)
    instance_name: Mapped[str | None] = mapped_column(String(63), index=True)
    step: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    message: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # A running job's worker renews this; past it, `dfe reconcile` takes the job over.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Limit(IdMixin, TimestampMixin, Base):
    """A request rate limit for each instance of a cluster, one instance, or one key."""

    __tablename__ = "limit_t"
    __table_args__ = (  # type: ignore[assignment]
        CheckConstraint("max_requests >= 0", name="max_requests_not_negative"),
        {"sqlite_autoincrement": True},
    )

    label: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    scope: Mapped[LimitScope] = enum_column(LimitScope, nullable=False)
    cluster_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("cluster_t.id", ondelete="CASCADE"), index=True
    )
    instance_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("instance_t.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str | None] = mapped_column(String(64), index=True)
    period: Mapped[LimitPeriod] = enum_column(LimitPeriod, nullable=False)
    max_requests: Mapped[int] = mapped_column(Integer, nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    # Part of every counter's key: raising it starts the limit's counters from zero, in
    # every web-tier process, on Redis and in memory alike (`dfe limit reset`).
    reset_generation: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", nullable=False
    )


class Metric(IdMixin, TimestampMixin, Base):
    """One instance's usage on one day (UTC): requests served, database and storage bytes.

    `instance_id` is not a foreign key: the history outlives a deleted instance.
    """

    __tablename__ = "metrics_t"
    __table_args__ = (  # type: ignore[assignment]
        UniqueConstraint("instance_id", "day"),
        CheckConstraint("requests >= 0", name="requests_not_negative"),
        {"sqlite_autoincrement": True},
    )

    instance_id: Mapped[int] = mapped_column(Id, nullable=False)
    instance_name: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    day: Mapped[date] = mapped_column(Date, nullable=False, index=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    database_bytes: Mapped[int | None] = mapped_column(BigInteger)
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger)


class DailyRun(IdMixin, Base):
    """A daily task's run on one day (UTC): the unique row is how one worker, of any
    number, claims it (`dfe.jobs.daily`)."""

    __tablename__ = "daily_run_t"
    __table_args__ = (  # type: ignore[assignment]
        UniqueConstraint("task", "day"),
        {"sqlite_autoincrement": True},
    )

    task: Mapped[str] = mapped_column(String(64), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    succeeded: Mapped[bool | None] = mapped_column(Boolean)
    message: Mapped[str | None] = mapped_column(Text)


class SeenNonce(Base):
    """Signature nonces seen within the replay window (when no Redis is configured)."""

    __tablename__ = "nonce_t"
    __table_args__ = (UniqueConstraint("client_id", "nonce"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    nonce: Mapped[str] = mapped_column(String(128), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class LoginFailure(Base):
    """A failed password check, counted per account and per address to throttle guessing."""

    __tablename__ = "login_failure_t"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(192), nullable=False, index=True)
    address: Mapped[str | None] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
