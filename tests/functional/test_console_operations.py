"""The services behind the Console's admin UI, on SQLite, PostgreSQL and MariaDB: the
overview's figures, instances per day, locking, retrying jobs, service-user logins."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from dfe.config import Settings
from dfe.db.base import utcnow
from dfe.enums import JobKind, JobStatus, OperationalState, ProvisionState, ServerType
from dfe.models import Instance, Job
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, ServiceUserCreate, UserCreate
from dfe.services import identity, infrastructure, instances, jobs, operations
from dfe.services.errors import Conflict, TooManyRequests, Unauthorized

PASSWORD = "a-long-enough-password"


@pytest.fixture
def estate(db):
    with db.transaction(actor="test") as s:
        ann = identity.create_user(s, UserCreate(email="ann@example.com", password=PASSWORD))
        mount = infrastructure.create_mount(s, MountCreate(name="disk", root_path="/srv/disk"))
        cluster = infrastructure.create_cluster(s, ClusterCreate(name="east", subdomain="e.test"))
        servers = {}
        for kind in ServerType:
            servers[kind] = infrastructure.create_server(
                s, ServerCreate(name=f"{kind}-1", server_type=kind, host="h", mount=mount.name)
            )
            infrastructure.assign_server(s, cluster.id, servers[kind].id)
        for name in ("alpha", "beta", "gamma"):
            instances.create_instance_record(s, name, ann, cluster, servers)
    return db


def test_overview_counts_and_failed_jobs(estate):
    with estate.transaction(actor="test") as s:
        beta = instances.get_instance(s, "beta")
        failed = jobs.create_job(s, JobKind.PROVISION, beta)
        jobs.finish(s, failed.id, JobStatus.FAILED, "no room on db-1")
        beta.provision_state = ProvisionState.PROVISIONING_ERROR
        jobs.create_job(s, JobKind.PROVISION, instances.get_instance(s, "gamma"))
    with estate.session() as s:
        figures = operations.overview(s)
    assert (figures.clusters, figures.servers, figures.mounts, figures.users) == (1, 3, 1, 1)
    assert figures.instances == 3
    assert figures.by_state == {"created": 2, "provisioning_error": 1}
    assert [job.message for job in figures.failed_jobs] == ["no room on db-1"]
    assert figures.running_jobs == 1


def test_instances_per_day(estate):
    now = utcnow()
    with estate.transaction(actor="test") as s:
        s.execute(
            update(Instance)
            .where(Instance.name == "alpha")
            .values(created_at=now - timedelta(days=2))
        )
        s.execute(
            update(Instance)
            .where(Instance.name == "beta")
            .values(created_at=now - timedelta(days=40))
        )
    with estate.transaction(actor="test") as s:
        s.delete(instances.get_instance(s, "gamma"))  # archived today
    with estate.session() as s:
        days = operations.instances_per_day(s, 30)
    assert len(days) == 30
    assert days[-1].day == now.date()
    by_day = {day.day: (day.launched, day.deprovisioned) for day in days}
    assert by_day[now.date()] == (1, 1)  # gamma: launched and archived today
    assert by_day[(now - timedelta(days=2)).date()] == (1, 0)
    assert sum(day.launched for day in days) == 2  # beta is older than the window


def test_lock_and_unlock(estate):
    with estate.transaction(actor="test") as s:
        with pytest.raises(Conflict, match="only a provisioned instance"):
            operations.set_locked(s, "alpha", True)
        instances.get_instance(s, "alpha").provision_state = ProvisionState.PROVISIONED
    with estate.transaction(actor="test") as s:
        assert operations.set_locked(s, "alpha", True).operational_state is (
            OperationalState.LOCKED
        )
    with estate.transaction(actor="test") as s:
        assert operations.set_locked(s, "alpha", False).operational_state is (
            OperationalState.ACTIVATED
        )


def test_retry_a_failed_job(estate):
    with estate.transaction(actor="test") as s:
        alpha = instances.get_instance(s, "alpha")
        first = jobs.create_job(s, JobKind.PROVISION, alpha)
        with pytest.raises(Conflict, match="only a failed job"):
            operations.retry_job(s, first.id)
        jobs.finish(s, first.id, JobStatus.FAILED, "boom")
        s.expire(first)  # finish is one UPDATE statement, past the session's objects
        with pytest.raises(Conflict, match="cannot be retried now"):
            operations.retry_job(s, first.id)  # the instance is not in an error state
        alpha.provision_state = ProvisionState.PROVISIONING_ERROR
        again = operations.retry_job(s, first.id)
        assert again.id != first.id and again.status is JobStatus.QUEUED
        assert alpha.provision_state is ProvisionState.CREATED
    with estate.session() as s:
        assert s.query(Job).filter_by(instance_id=alpha.id).count() == 2


def test_service_user_logins_are_throttled(db):
    settings = Settings(login_max_failures_per_account=3)
    with db.transaction(actor="test") as s:
        identity.create_service_user(
            s, ServiceUserCreate(email="ops@example.com", password=PASSWORD)
        )
    with db.session() as s:
        assert operations.check_service_login(s, settings, "OPS@example.com", PASSWORD, "1.2.3.4")
        s.commit()
        for _ in range(3):
            with pytest.raises(Unauthorized):
                operations.check_service_login(s, settings, "ops@example.com", "wrong", "1.2.3.4")
        with pytest.raises(TooManyRequests):
            operations.check_service_login(s, settings, "ops@example.com", PASSWORD, "1.2.3.4")
        with pytest.raises(Unauthorized):  # users are not service users
            operations.check_service_login(s, settings, "ann@example.com", PASSWORD, None)
