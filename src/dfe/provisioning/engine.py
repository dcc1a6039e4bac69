"""The provisioning state machine: launch, provision, deprovision, and recovery.

A launch inserts the instance (state CREATED, servers claimed) and a job in one
transaction; a worker then runs the job's steps, each idempotent and recorded
in job_t, so a job can be run again from the start after a crash:

    provision:   database -> storage -> activate            CREATED -> PROVISIONED
                 (on failure: drop the database, remove the storage) -> PROVISIONING_ERROR
    deprovision: database -> storage -> archive              -> archived, keys destroyed
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from dfe.config import Settings
from dfe.db.base import utcnow
from dfe.db.session import Database
from dfe.enums import JobKind, JobStatus, OperationalState, ProvisionState, ReadyState
from dfe.models import Instance, Job, Server, User
from dfe.provisioning.drivers import DatabaseDriver, driver_for
from dfe.provisioning.errors import ProvisioningError
from dfe.provisioning.names import (
    DEFAULT_PREFIX,
    generate_password,
    instance_database_names,
    instance_id_from_name,
)
from dfe.provisioning.placement import place
from dfe.provisioning.storage import LocalStorage, owner_hash
from dfe.services import audit, instance_limits, jobs, keys, notifications
from dfe.services.base import flush_or_conflict
from dfe.services.errors import Conflict, DfeError, InvalidInput
from dfe.services.instances import create_instance_record, get_instance, new_api_key
from dfe.services.names import instance_name_problem

log = structlog.get_logger("dfe.provisioning")

ACTIVE_STATES = (ProvisionState.CREATED, ProvisionState.PROVISIONING)


# Launch and deprovision requests (in the caller's transaction)


def launch(session: Session, user: User, name: str, cluster_id: int) -> tuple[Instance, Job]:
    """Place and record a new instance and queue its provisioning job."""
    name = name.strip()
    problem = instance_name_problem(name)
    if problem:
        raise InvalidInput(f"instance name '{name}' {problem}")
    if session.scalar(select(Instance.id).where(Instance.name == name)) is not None:
        raise Conflict(f"an instance named '{name}' already exists")
    instance_limits.check_instance_limit(session, user)  # first lock: the owner's row
    placement = place(session, cluster_id)
    instance = create_instance_record(session, name, user, placement.cluster, placement.servers)
    job = jobs.create_job(session, JobKind.PROVISION, instance)
    flush_or_conflict(session, f"an instance named '{name}' already exists")
    return instance, job


def request_deprovision(session: Session, ref: str | int) -> Job:
    instance = get_instance(session, ref)
    if instance.provision_state is ProvisionState.DEPROVISIONING:
        running = session.scalar(
            select(Job).where(
                Job.instance_id == instance.id,
                Job.kind == JobKind.DEPROVISION,
                Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
            )
        )
        if running is not None:
            return running
    if instance.provision_state in ACTIVE_STATES:
        raise Conflict(f"instance '{instance.name}' is still being provisioned; wait for it")
    instance.provision_state = ProvisionState.DEPROVISIONING
    instance.state_changed_at = utcnow()
    audit.record(session, "instance.deprovision", "instance", instance.id, instance.name)
    return jobs.create_job(session, JobKind.DEPROVISION, instance)


# Running jobs (in the worker, one short transaction per step)


@dataclass
class Resources:
    """Where an instance's database and files live."""

    driver: DatabaseDriver
    database_name: str
    user_name: str
    storage: LocalStorage
    owner_key: str

    @classmethod
    def of(cls, session: Session, instance: Instance) -> Resources:
        db_server = session.get_one(Server, instance.db_server_id)
        web_server = session.get_one(Server, instance.web_server_id)
        if web_server.mount is None:
            raise ProvisioningError(f"web server '{web_server.name}' has no mount for storage")
        database_name, user_name = instance_database_names(instance.name, instance.id)
        return cls(
            driver=driver_for({"host": db_server.host, **db_server.config}),
            database_name=database_name,
            user_name=user_name,
            storage=LocalStorage(web_server.mount.root_path),
            owner_key=instance.user.storage_key,
        )


@dataclass
class JobRunner:
    """Runs provisioning jobs against a database; `steps` may be observed (tests kill here)."""

    database: Database
    settings: Settings
    on_step: Callable[[str], None] = field(default=lambda _step: None)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.job_lease_seconds)

    def run(self, job_id: int) -> JobStatus:
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            if not jobs.claim(session, job_id, self.lease):
                # Done already, or another worker holds a live lease on it.
                return jobs.get_job(session, job_id).status
            kind = jobs.get_job(session, job_id).kind
        log.info("job started", job_id=job_id, kind=kind.value)
        try:
            if kind is JobKind.PROVISION:
                self._provision(job_id)
            elif kind is JobKind.DEPROVISION:
                self._deprovision(job_id)
            elif kind in (JobKind.EXPORT, JobKind.IMPORT, JobKind.MOVE):
                from dfe.snapshots import jobs as snapshot_jobs  # needs the services

                snapshot_jobs.run(self, kind, job_id)
            else:
                raise ProvisioningError(f"jobs of kind {kind.value} are not supported yet")
        except Exception as error:
            known = isinstance(error, ProvisioningError | DfeError)
            message = str(error) if known else type(error).__name__
            log.warning("job failed", job_id=job_id, error=message)
            self._fail(job_id, kind, message)
            return JobStatus.FAILED
        finally:
            notifications.job_finished(self.database, self.settings, job_id)  # never raises
        log.info("job succeeded", job_id=job_id)
        return JobStatus.SUCCEEDED

    def step(self, job_id: int, step: str, progress: int) -> None:
        """Record a job's step and progress (and renew its lease)."""
        self._step(job_id, step, progress)

    def _step(self, job_id: int, step: str, progress: int) -> None:
        self.on_step(step)
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            jobs.advance(jobs.get_job(session, job_id), step, progress, self.lease)

    def _provision(self, job_id: int) -> None:
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            job = jobs.get_job(session, job_id)
            instance = session.get_one(Instance, job.instance_id)
            instance.provision_state = ProvisionState.PROVISIONING
            instance.state_changed_at = utcnow()
            if instance.db_password is None:
                instance.db_password = generate_password()
            if instance.api_key is None:  # an instance recorded before keys existed
                instance.api_key = new_api_key()
            resources = Resources.of(session, instance)
            password, name = instance.db_password, instance.name
        self._step(job_id, "database", 20)
        created = resources.driver.create(resources.database_name, resources.user_name, password)
        self._step(job_id, "storage", 60)
        resources.storage.create_instance_tree(resources.owner_key, name)
        self._step(job_id, "activate", 90)
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            instance = session.get_one(Instance, jobs.get_job(session, job_id).instance_id)
            instance.db_host = created.host
            instance.db_port = created.port
            instance.db_name = created.database_name
            instance.db_user = created.user_name
            instance.provision_state = ProvisionState.PROVISIONED
            instance.ready_state = ReadyState.READY
            instance.operational_state = OperationalState.ACTIVATED
            instance.state_changed_at = utcnow()
            jobs.finish(jobs.get_job(session, job_id), JobStatus.SUCCEEDED)

    def _deprovision(self, job_id: int) -> None:
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            instance = session.get(Instance, jobs.get_job(session, job_id).instance_id)
            if instance is None:  # archived already, by an earlier run of this job
                jobs.finish(jobs.get_job(session, job_id), JobStatus.SUCCEEDED)
                return
            resources = Resources.of(session, instance)
            name = instance.name
        self._step(job_id, "database", 30)
        resources.driver.drop(resources.database_name, resources.user_name)
        self._step(job_id, "storage", 60)
        resources.storage.remove_instance_tree(resources.owner_key, name)
        self._step(job_id, "archive", 90)
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            job = jobs.get_job(session, job_id)
            instance = session.get(Instance, job.instance_id)
            if instance is not None:
                instance.provision_state = ProvisionState.DEPROVISIONED
                instance.state_changed_at = utcnow()
                session.flush()  # the archived row says how it ended
                audit.record(session, "instance.archive", "instance", instance.id, instance.name)
                session.delete(instance)
            jobs.finish(job, JobStatus.SUCCEEDED)

    def _fail(self, job_id: int, kind: JobKind, message: str) -> None:
        """End a failed job; a failed provisioning is undone so nothing is left behind."""
        undo_error = None
        if kind is JobKind.PROVISION:
            try:
                self._undo_provisioning(job_id)
            except Exception as error:
                undo_error = str(error) if isinstance(error, ProvisioningError) else repr(error)
        elif kind is JobKind.MOVE:
            from dfe.snapshots import jobs as snapshot_jobs

            snapshot_jobs.undo(self, kind, job_id)
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            job = jobs.get_job(session, job_id)
            instance = session.get(Instance, job.instance_id) if job.instance_id else None
            if instance is not None and kind in (JobKind.PROVISION, JobKind.DEPROVISION):
                instance.provision_state = (
                    ProvisionState.PROVISIONING_ERROR
                    if kind is JobKind.PROVISION
                    else ProvisionState.DEPROVISIONING_ERROR
                )
                instance.state_changed_at = utcnow()
            detail = message if undo_error is None else f"{message}; undo failed: {undo_error}"
            jobs.finish(job, JobStatus.FAILED, detail)

    def _undo_provisioning(self, job_id: int) -> None:
        with self.database.session() as session:
            job = jobs.get_job(session, job_id)
            instance = session.get(Instance, job.instance_id)
            if instance is None:
                return
            resources = Resources.of(session, instance)
            name = instance.name
        resources.driver.drop(resources.database_name, resources.user_name)
        resources.storage.remove_instance_tree(resources.owner_key, name)


# Recovery


@dataclass
class Orphan:
    kind: str  # "database", "user", "storage"
    server: str
    name: str


@dataclass
class ReconcileReport:
    resumed_jobs: list[int] = field(default_factory=list)
    requeued_jobs: list[int] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    removed: list[Orphan] = field(default_factory=list)
    purged_keys: list[str] = field(default_factory=list)


def stale_job_ids(database: Database, settings: Settings) -> tuple[list[int], list[int]]:
    """(running jobs whose worker died, queued jobs nobody took)."""
    with database.session() as session:
        stale = [job.id for job in jobs.stale_jobs(session)]
        waiting = [
            job.id
            for job in jobs.waiting_jobs(session, timedelta(seconds=settings.job_lease_seconds))
        ]
    return stale, waiting


def find_orphans(database: Database) -> list[Orphan]:
    """Databases, users and storage trees that belong to no live instance."""
    orphans: list[Orphan] = []
    with database.session() as session:
        live = {
            row.id: row
            for row in session.execute(
                select(Instance.id, Instance.name, User.storage_key).join(
                    User, User.id == Instance.user_id
                )
            )
        }
        servers = list(session.scalars(select(Server)))
        owned_trees = {(owner_hash(row.storage_key), row.name) for row in live.values()}
    for server in servers:
        if server.server_type.value == "db" and "driver" in server.config:
            try:
                driver = driver_for({"host": server.host, **server.config})
                databases = driver.list_databases(DEFAULT_PREFIX)
                users = driver.list_users(DEFAULT_PREFIX)
            except (ProvisioningError, ValueError) as error:
                log.warning("cannot scan db server", server=server.name, error=str(error))
                continue
            for kind, names in (("database", databases), ("user", users)):
                for found in sorted(names):
                    if instance_id_from_name(found) not in live:
                        orphans.append(Orphan(kind, server.name, found))
        if server.server_type.value == "web" and server.mount is not None:
            storage = LocalStorage(server.mount.root_path)
            for tree in sorted(storage.list_instance_trees() - owned_trees):
                orphans.append(Orphan("storage", server.name, "/".join(tree)))
    return orphans


def reconcile(database: Database, settings: Settings, *, fix: bool) -> ReconcileReport:
    """Finish what dead workers left, destroy expired keys, then find (and with `fix`,
    remove) orphans.

    A running job whose lease ran out is run again from the start here (its steps
    are idempotent); so is a queued job nobody took within the lease period.
    """
    report = ReconcileReport()
    stale, waiting = stale_job_ids(database, settings)
    runner = JobRunner(database, settings)
    for job_id in stale:
        runner.run(job_id)
        report.resumed_jobs.append(job_id)
    for job_id in waiting:
        runner.run(job_id)
        report.requeued_jobs.append(job_id)
    with database.transaction(actor="reconcile") as session:
        report.purged_keys = keys.purge_expired(session)
    report.orphans = find_orphans(database)
    if fix:
        for orphan in report.orphans:
            _remove_orphan(database, orphan)
            report.removed.append(orphan)
    return report


def _remove_orphan(database: Database, orphan: Orphan) -> None:
    with database.session() as session:
        server = session.scalars(select(Server).where(Server.name == orphan.server)).one()
        config, host = server.config, server.host
        root = server.mount.root_path if server.mount else None
    if orphan.kind == "storage" and root is not None:
        digest, name = orphan.name.split("/")
        LocalStorage(root).remove_tree(digest, name)
    elif orphan.kind in ("database", "user"):
        # Only one of the pair was found: dropping "both" by that name is idempotent.
        driver_for({"host": host, **config}).drop(orphan.name, orphan.name)
    log.info("orphan removed", kind=orphan.kind, name=orphan.name, server=orphan.server)
