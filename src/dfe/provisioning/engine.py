"""The provisioning state machine: launch, provision, deprovision, and recovery.

A launch inserts the instance (state CREATED, servers claimed) and a job in one
transaction; a worker then runs the job's steps, each idempotent and recorded
in job_t, so a job can be run again from the start after a crash:

    provision:   database -> storage -> activate            CREATED -> PROVISIONED
                 (on failure: drop the database, remove the storage) -> PROVISIONING_ERROR
    deprovision: database -> storage -> archive              -> archived, keys destroyed
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from dfe.config import Settings
from dfe.db.base import utcnow
from dfe.db.session import Database, execute_prebuilt
from dfe.enums import JobKind, JobStatus, OperationalState, ProvisionState, ReadyState
from dfe.models import Instance, Job, Mount, Server, User
from dfe.provisioning.drivers import DatabaseDriver, driver_for, server_driver
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
from dfe.services.errors import Conflict, DfeError, InvalidInput
from dfe.services.instances import create_instance_record, get_instance, host_of, new_api_key
from dfe.services.names import instance_name_problem

log = structlog.get_logger("dfe.provisioning")

ACTIVE_STATES = (ProvisionState.CREATED, ProvisionState.PROVISIONING)


# Launch and deprovision requests (in the caller's transaction)

_NAME_TAKEN = select(Instance.id).where(Instance.name == bindparam("p_name"))


def launch(session: Session, user: User, name: str, cluster_id: int) -> tuple[Instance, Job]:
    """Place and record a new instance and queue its provisioning job."""
    name = name.strip()
    problem = instance_name_problem(name)
    if problem:
        raise InvalidInput(f"instance name '{name}' {problem}")
    if execute_prebuilt(session, _NAME_TAKEN, {"p_name": name}).first() is not None:
        raise Conflict(f"an instance named '{name}' already exists")
    instance_limits.check_instance_limit(session, user)  # first lock: the owner's row
    placement = place(session, cluster_id)
    instance = create_instance_record(session, name, user, placement.cluster, placement.servers)
    job = jobs.create_job(session, JobKind.PROVISION, instance)
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


# Running jobs (in the worker: three short transactions per job)


# Where a claimed job's database and files go: its two servers' columns, no objects.
_SERVERS = (
    select(Server.id, Server.name, Server.host, Server.config, Mount.root_path)
    .outerjoin(Mount, Mount.id == Server.mount_id)
    .where(Server.id.in_(bindparam("p_ids", expanding=True)))
)


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
        wanted = {"p_ids": [instance.db_server_id, instance.web_server_id]}
        servers = {row.id: row for row in execute_prebuilt(session, _SERVERS, wanted)}
        db_server, web_server = servers[instance.db_server_id], servers[instance.web_server_id]
        if web_server.root_path is None:
            raise ProvisioningError(f"web server '{web_server.name}' has no mount for storage")
        database_name, user_name = instance_database_names(instance.name, instance.id)
        try:
            driver = server_driver(db_server.host, db_server.config)
        except ValueError as error:  # a config naming no known driver, or a bad setting
            raise ProvisioningError(f"db server '{db_server.name}': {error}") from None
        return cls(
            driver=driver,
            database_name=database_name,
            user_name=user_name,
            storage=LocalStorage(web_server.root_path),
            owner_key=instance.user.storage_key,
        )


@dataclass
class _Work:
    """What a claimed job needs after its first transaction."""

    kind: JobKind
    instance_id: int | None
    name: str = ""
    owner_email: str = ""  # for the mail that says how a provisioning ended
    host: str = ""
    password: str = ""
    resources: Resources | None = None
    problem: Exception | None = None  # the preparation failed: the job fails at once
    step: str = "queued"  # where the job is (recorded or not), and how far
    progress: int = 0
    recorded_at: float = field(default_factory=time.monotonic)  # when a step was last recorded


@dataclass(frozen=True)
class Claimed:
    """A job claimed in the transaction that recorded it (`JobRunner.claim_in`)."""

    job_id: int
    work: _Work


RECORD_STEP_AFTER = 0.5  # seconds since the last recorded step before the next one is recorded
FIRST_STEP = ("database", 20)  # of provisioning and deprovisioning alike; set by the claim
SNAPSHOT_KINDS = (JobKind.EXPORT, JobKind.IMPORT, JobKind.MOVE)


# An instance's new provisioning state: a claimed provisioning's (its object is not read
# again in that transaction), a failed job's, and the one an archived instance keeps.
_SET_STATE = (
    update(Instance)
    .where(Instance.id == bindparam("p_instance"))
    .values(provision_state=bindparam("p_state"), state_changed_at=bindparam("p_now"))
    .execution_options(synchronize_session=False)
)

# The last step of a provisioning, built once: where the database is, and live.
_ACTIVATE = (
    update(Instance)
    .where(Instance.id == bindparam("p_instance"))
    .values(
        db_host=bindparam("p_host"),
        db_port=bindparam("p_port"),
        db_name=bindparam("p_database"),
        db_user=bindparam("p_user"),
        provision_state=ProvisionState.PROVISIONED,
        ready_state=ReadyState.READY,
        operational_state=OperationalState.ACTIVATED,
        state_changed_at=bindparam("p_now"),
    )
    .execution_options(synchronize_session=False)
)

# The end of a deprovisioning: the row's removal (the archive triggers copy it).
_ARCHIVE = (
    delete(Instance)
    .where(Instance.id == bindparam("p_instance"))
    .execution_options(synchronize_session=False)
)


def _set_state(session: Session, instance_id: int | None, state: ProvisionState) -> bool:
    """Record an instance's provisioning state; False if the instance is gone."""
    changed = execute_prebuilt(
        session, _SET_STATE, {"p_instance": instance_id, "p_state": state, "p_now": utcnow()}
    )
    return bool(changed.rowcount)


@dataclass
class JobRunner:
    """Runs provisioning jobs against a database; `on_step` is told each step before it
    starts (tests kill the process there).

    A job is two or three transactions: (1) claim it at its first step and prepare (the
    instance's state, its password, where its parts go); (2) record the middle step, when
    the first took a while; (3) finish: the instance's end state and the job's, together.
    The claim can also ride in the transaction that records the job (`claim_in`).
    Each step is idempotent, so a job whose worker died is run again from the start
    (`reconcile`).
    """

    database: Database
    settings: Settings
    on_step: Callable[[str], None] = field(default=lambda _step: None)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.job_lease_seconds)

    def claim_in(self, session: Session, job: Job) -> Claimed | None:
        """Claim `job` in the (uncommitted) transaction that records it, for a process
        that runs the job itself once that commits (the inline queue): the job needs no
        claiming transaction of its own. If the process dies before running it, the
        lease runs out and `reconcile` runs it, as any job of a dead worker."""
        if not self._take(session, job.id):
            return None
        instance = session.get(Instance, job.instance_id) if job.instance_id else None
        return Claimed(job.id, self._prepare(session, job, instance))

    def _take(self, session: Session, job_id: int) -> bool:
        """Claim the job at its first step with a fresh lease (`jobs.claim`)."""
        step, progress = FIRST_STEP
        return jobs.claim(session, job_id, self.lease, step=step, progress=progress)

    def run(self, job_id: int, claimed: Claimed | None = None) -> JobStatus:
        """Run a job: claimed here, or already by `claim_in` (then `claimed`)."""
        if claimed is not None:
            work = claimed.work
        else:
            with self.database.transaction(actor=f"worker:job {job_id}") as session:
                if not self._take(session, job_id):
                    # Done already, or another worker holds a live lease on it.
                    return jobs.get_job(session, job_id).status
                job, instance = session.execute(
                    select(Job, Instance)
                    .outerjoin(Instance, Instance.id == Job.instance_id)
                    .where(Job.id == job_id)
                ).one()
                work = self._prepare(session, job, instance)
        log.info("job started", job_id=job_id, kind=work.kind.value)
        try:
            if work.problem is not None:
                raise work.problem
            if work.kind is JobKind.PROVISION:
                self._provision(job_id, work)
            elif work.kind is JobKind.DEPROVISION:
                self._deprovision(job_id, work)
            else:
                from dfe.snapshots import jobs as snapshot_jobs  # needs the services

                snapshot_jobs.run(self, work.kind, job_id)
        except Exception as error:
            known = isinstance(error, ProvisioningError | DfeError)
            message = str(error) if known else type(error).__name__
            log.warning("job failed", job_id=job_id, error=message)
            failure: str | None = self._fail(job_id, work, message)
        else:
            log.info("job succeeded", job_id=job_id)
            failure = None
        # The one place where every run of a job that ended (either way) passes.
        if work.kind is JobKind.PROVISION and work.owner_email:
            notifications.instance_finished(  # never raises
                self.settings, to=work.owner_email, name=work.name, host=work.host, error=failure
            )
        return JobStatus.SUCCEEDED if failure is None else JobStatus.FAILED

    def step(self, job_id: int, step: str, progress: int) -> None:
        """Record a step of a job run outside this class (snapshots: export, import,
        move) and renew its lease; always recorded, since those steps take a while."""
        self.on_step(step)
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            jobs.advance(session, job_id, step, progress, self.lease)

    def _prepare(self, session: Session, job: Job, instance: Instance | None) -> _Work:
        """In the claiming transaction: read what the job needs and mark the instance.
        A failure here is kept for `run` to fail the job with."""
        work = _Work(job.kind, job.instance_id, step=FIRST_STEP[0], progress=FIRST_STEP[1])
        if job.kind in SNAPSHOT_KINDS:
            return work  # `dfe.snapshots.jobs` reads what it needs itself
        try:
            if job.kind not in (JobKind.PROVISION, JobKind.DEPROVISION):
                raise ProvisioningError(f"jobs of kind {job.kind.value} are not supported yet")
            if instance is None:
                if job.kind is JobKind.PROVISION:
                    raise ProvisioningError(f"instance {job.instance_name!r} no longer exists")
                return work  # deprovision: archived already, by an earlier run of this job
            work.name = instance.name
            if job.kind is JobKind.PROVISION:  # user and cluster come joined with the instance
                work.owner_email = instance.user.email
                work.host = host_of(instance)
            work.resources = Resources.of(session, instance)
        except Exception as error:
            work.problem = error
            return work
        if job.kind is JobKind.PROVISION:
            _set_state(session, instance.id, ProvisionState.PROVISIONING)
            if instance.db_password is None:  # recorded before passwords came at insert
                instance.db_password = generate_password()
            if instance.api_key is None:  # an instance recorded before keys existed
                instance.api_key = new_api_key()
            work.password = instance.db_password
        return work

    def _step(self, job_id: int, work: _Work, step: str, progress: int) -> None:
        """Start a middle step. It is recorded (progress shown, lease renewed) only when
        the steps before took a while: a step that ends within moments cannot be watched,
        and the lease taken at the claim still runs."""
        self.on_step(step)
        work.step, work.progress = step, progress
        if time.monotonic() - work.recorded_at < RECORD_STEP_AFTER:
            return
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            jobs.advance(session, job_id, step, progress, self.lease)
        work.recorded_at = time.monotonic()

    def _provision(self, job_id: int, work: _Work) -> None:
        resources = work.resources
        assert resources is not None  # _prepare found the instance
        self.on_step("database")
        created = resources.driver.create(
            resources.database_name, resources.user_name, work.password
        )
        self._step(job_id, work, "storage", 60)
        resources.storage.create_instance_tree(resources.owner_key, work.name)
        self.on_step("activate")
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            execute_prebuilt(
                session,
                _ACTIVATE,
                {
                    "p_instance": work.instance_id,
                    "p_host": created.host,
                    "p_port": created.port,
                    "p_database": created.database_name,
                    "p_user": created.user_name,
                    "p_now": utcnow(),
                },
            )
            jobs.finish(session, job_id, JobStatus.SUCCEEDED)

    def _deprovision(self, job_id: int, work: _Work) -> None:
        resources = work.resources
        if resources is not None:
            self.on_step("database")
            resources.driver.drop(resources.database_name, resources.user_name)
            self._step(job_id, work, "storage", 60)
            resources.storage.remove_instance_tree(resources.owner_key, work.name)
            self.on_step("archive")
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            # Statements, not the ORM: the archive triggers copy the rows as the DELETE
            # goes, with the end state set just before (the archived row says how it ended).
            ended = _set_state(session, work.instance_id, ProvisionState.DEPROVISIONED)
            if ended:  # else archived by an earlier run
                audit.record(session, "instance.archive", "instance", work.instance_id, work.name)
                session.execute(_ARCHIVE, {"p_instance": work.instance_id})
            jobs.finish(session, job_id, JobStatus.SUCCEEDED)

    def _fail(self, job_id: int, work: _Work, message: str) -> str:
        """End a failed job; a failed provisioning is undone so nothing is left behind.
        Returns the job's message."""
        undo_error = None
        if work.kind is JobKind.PROVISION and work.resources is not None:
            resources = work.resources
            try:
                resources.driver.drop(resources.database_name, resources.user_name)
                resources.storage.remove_instance_tree(resources.owner_key, work.name)
            except Exception as error:
                undo_error = str(error) if isinstance(error, ProvisioningError) else repr(error)
        elif work.kind is JobKind.MOVE:
            from dfe.snapshots import jobs as snapshot_jobs

            snapshot_jobs.undo(self, work.kind, job_id)
        with self.database.transaction(actor=f"worker:job {job_id}") as session:
            if work.kind in SNAPSHOT_KINDS:  # their steps were recorded by `step`
                recorded = jobs.get_job(session, job_id)
                work.step, work.progress = recorded.step or work.step, recorded.progress
            if work.instance_id is not None and work.kind not in SNAPSHOT_KINDS:
                failed = (
                    ProvisionState.PROVISIONING_ERROR
                    if work.kind is JobKind.PROVISION
                    else ProvisionState.DEPROVISIONING_ERROR
                )
                _set_state(session, work.instance_id, failed)
            detail = message if undo_error is None else f"{message}; undo failed: {undo_error}"
            jobs.finish(
                session, job_id, JobStatus.FAILED, detail, step=work.step, progress=work.progress
            )
        return detail


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
