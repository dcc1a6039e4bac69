"""The export, import and move jobs, run by the provisioning JobRunner.

    export: dump -> archive in the owner's snapshot area -> snapshot_t row
    import: (wait for the new instance's provisioning) -> verify the archive into a
            staging directory -> replace the instance's tables and files -> read back
    move:   read-only flag -> create the database and role on the target server ->
            copy the tables -> verify against the source -> switch the instance over
            -> drop the old database and role -> flag off

A failed import changes nothing it has not verified; a failed move leaves the
instance on its old server, with its data, and writable again.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dfe.db.base import utcnow
from dfe.enums import JobKind, JobStatus
from dfe.models import Instance, InstanceServer, Server
from dfe.provisioning.drivers import DatabaseDriver, InstanceDatabase, driver_for
from dfe.provisioning.drivers.base import describe
from dfe.provisioning.errors import ProvisioningError
from dfe.provisioning.names import generate_password, instance_database_names
from dfe.provisioning.storage import LocalStorage
from dfe.services import jobs, snapshots
from dfe.snapshots.archive import apply_staged, stage_snapshot, write_snapshot
from dfe.snapshots.dump import (
    checksum_database,
    create_indexes,
    describe_database,
    dump_chunks,
    engine_kind,
    load_table,
    open_engine,
    replace_schema,
)
from dfe.snapshots.errors import SnapshotError

if TYPE_CHECKING:
    from dfe.provisioning.engine import JobRunner

log = structlog.get_logger("dfe.snapshots")

READ_ONLY = "read_only"  # key in instance_t.data while a move runs (the web tier honours it)
MOVE_ATTEMPTS = 3
PROVISION_WAIT_SECONDS = 600


def run(runner: JobRunner, kind: JobKind, job_id: int) -> None:
    {JobKind.EXPORT: run_export, JobKind.IMPORT: run_import, JobKind.MOVE: run_move}[kind](
        runner, job_id
    )


def undo(runner: JobRunner, kind: JobKind, job_id: int) -> None:
    """After a failure: a move gives the instance back its writes."""
    if kind is JobKind.MOVE:
        with runner.database.transaction(actor=f"worker:job {job_id}") as session:
            instance = session.get(Instance, jobs.get_job(session, job_id).instance_id)
            if instance is not None:
                set_read_only(instance, False)


def set_read_only(instance: Instance, flag: bool) -> None:
    data = dict(instance.data or {})
    if flag:
        data[READ_ONLY] = True
    else:
        data.pop(READ_ONLY, None)
    instance.data = data
    instance.updated_at = utcnow()  # the change feed tells the web tier


@dataclass
class _Where:
    """An instance's database (with its own credentials) and files."""

    name: str
    database_url: str
    storage: LocalStorage
    owner_key: str
    files_root: Path


def _database(session: Session, instance: Instance) -> tuple[DatabaseDriver, InstanceDatabase]:
    server = session.get_one(Server, instance.db_server_id)
    driver = driver_for({"host": server.host, **server.config})
    if not instance.db_name:
        raise SnapshotError(f"instance '{instance.name}' has no database yet")
    database = InstanceDatabase(
        driver.kind,
        instance.db_name,
        instance.db_user or "",
        instance.db_password or "",
        host=instance.db_host,
        port=instance.db_port,
    )
    return driver, database


def _where(session: Session, instance: Instance) -> _Where:
    driver, database = _database(session, instance)
    mount = snapshots.instance_mount(session, instance)
    storage = LocalStorage(mount.root_path)
    return _Where(
        name=instance.name,
        database_url=driver.url_for(database),
        storage=storage,
        owner_key=instance.user.storage_key,
        files_root=storage.paths(instance.user.storage_key, instance.name).instance_root,
    )


def _progress(runner: JobRunner, job_id: int) -> Any:
    return lambda step, percent: runner.step(job_id, step[:64], percent)


# Export


def run_export(runner: JobRunner, job_id: int) -> None:
    with runner.database.transaction(actor=f"worker:job {job_id}") as session:
        instance = session.get_one(Instance, jobs.get_job(session, job_id).instance_id)
        where = _where(session, instance)
    directory = where.storage.snapshot_dir(where.owner_key)
    engine = open_engine(where.database_url)
    try:
        written = write_snapshot(
            directory / snapshots.new_file_name(where.name),
            instance_name=where.name,
            engine=engine,
            files_root=where.files_root,
            progress=_progress(runner, job_id),
        )
    finally:
        engine.dispose()
    runner.step(job_id, "record", 95)
    try:
        with runner.database.transaction(actor=f"worker:job {job_id}") as session:
            job = jobs.get_job(session, job_id)
            exported = session.get(Instance, job.instance_id)
            if exported is None:
                raise SnapshotError("the instance was deleted during the export")
            snapshot = snapshots.record_snapshot(
                session,
                instance=exported,
                origin="export",
                mount=snapshots.instance_mount(session, exported),
                path=written.path,
                size=written.size,
                sha256=written.sha256,
                manifest=written.manifest,
                ttl_days=runner.settings.snapshot_ttl_days,
                job_id=job_id,
            )
            job.payload = {**job.payload, "snapshot_id": snapshot.id}
            jobs.finish(session, job.id, JobStatus.SUCCEEDED)
    except BaseException:
        written.path.unlink(missing_ok=True)
        raise
    log.info("snapshot exported", job_id=job_id, instance=where.name, size=written.size)


# Import


def _wait_for(runner: JobRunner, job_id: int, after: int) -> None:
    """The new instance's provisioning: run it here if nobody has, else wait for it."""
    runner.run(after)
    deadline = time.monotonic() + PROVISION_WAIT_SECONDS
    while True:
        with runner.database.session() as session:
            job = jobs.get_job(session, after)
            status, message = job.status, job.message
        if status is JobStatus.SUCCEEDED:
            return
        if status is JobStatus.FAILED:
            raise SnapshotError(f"the new instance could not be provisioned: {message}")
        if time.monotonic() > deadline:
            raise SnapshotError("the new instance's provisioning did not finish in time")
        runner.step(job_id, "waiting for provisioning", 5)
        time.sleep(0.5)


def run_import(runner: JobRunner, job_id: int) -> None:
    with runner.database.session() as session:
        payload = dict(jobs.get_job(session, job_id).payload)
    if payload.get("after_job"):
        _wait_for(runner, job_id, int(payload["after_job"]))
    with runner.database.transaction(actor=f"worker:job {job_id}") as session:
        instance = session.get_one(Instance, jobs.get_job(session, job_id).instance_id)
        snapshot = snapshots.get_snapshot(session, int(payload["snapshot_id"]), instance.user_id)
        archive = snapshots.snapshot_path(session, snapshot)
        where = _where(session, instance)
    staging = where.storage.snapshot_dir(where.owner_key) / (
        f".staging-{job_id}-{secrets.token_hex(4)}"
    )
    runner.step(job_id, "verify", 10)
    try:
        fd = os.open(archive, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        raise SnapshotError(f"the snapshot's file cannot be read: {error.strerror}") from None
    with os.fdopen(fd, "rb") as source:
        staged = stage_snapshot(source, staging)
    try:
        engine = open_engine(where.database_url)
        try:
            apply_staged(staged, engine, where.files_root, _progress(runner, job_id))
        finally:
            engine.dispose()
        where.storage.create_instance_tree(where.owner_key, where.name)
    finally:
        staged.remove()
    with runner.database.transaction(actor=f"worker:job {job_id}") as session:
        job = jobs.get_job(session, job_id)
        instance = session.get_one(Instance, job.instance_id)
        instance.updated_at = utcnow()  # the web tier drops what it cached of the old data
        jobs.finish(session, job.id, JobStatus.SUCCEEDED)
    log.info("snapshot imported", job_id=job_id, instance=where.name)


# Move


def _location(server: Server) -> tuple[Any, ...]:
    config = server.config
    return (
        config.get("driver"),
        server.host,
        config.get("port"),
        os.path.abspath(str(config["path"])) if config.get("path") else None,
    )


def copy_database(source: Engine, target: Engine) -> list[dict[str, Any]]:
    """Every table of `source` into `target` (whose tables are replaced)."""
    try:
        with source.connect() as reading, target.begin() as writing:
            if engine_kind(source) in ("postgresql", "mysql"):
                reading = reading.execution_options(isolation_level="REPEATABLE READ")
            tables = describe_database(reading)
            built = replace_schema(writing, tables)
            for description in tables:
                load_table(
                    writing,
                    built[description["name"]],
                    description,
                    (chunk for chunk, _ in dump_chunks(reading, description)),
                )
            create_indexes(writing, built)
    except SQLAlchemyError as error:
        raise SnapshotError(f"cannot copy the database: {describe(error)}") from None
    return tables


def run_move(runner: JobRunner, job_id: int) -> None:
    with runner.database.transaction(actor=f"worker:job {job_id}") as session:
        job = jobs.get_job(session, job_id)
        instance = session.get_one(Instance, job.instance_id)
        target = session.get_one(Server, int(job.payload["db_server_id"]))
        old_server = session.get_one(Server, instance.db_server_id)
        if _location(target) == _location(old_server):
            raise SnapshotError(f"db server '{target.name}' is the instance's own server")
        old_driver, old_database = _database(session, instance)
        new_driver = driver_for({"host": target.host, **target.config})
        database_name, user_name = instance_database_names(instance.name, instance.id)
        password = generate_password()
        set_read_only(instance, True)
        name, target_id, old_id = instance.name, target.id, old_server.id
    # Give the web tier time to see the flag (it polls the change feed).
    runner.step(job_id, "read-only", 10)
    time.sleep(min(30.0, 2 * runner.settings.host_poll_seconds + 1))
    runner.step(job_id, "create", 20)
    created = new_driver.create(database_name, user_name, password)
    source = open_engine(old_driver.url_for(old_database))
    target_engine = open_engine(new_driver.url_for(created))
    try:
        for attempt in range(1, MOVE_ATTEMPTS + 1):
            runner.step(job_id, f"copy (attempt {attempt})", 30)
            tables = copy_database(source, target_engine)
            runner.step(job_id, "verify", 70)
            # Read the source after the copy: a write that slipped in meanwhile shows here.
            _, after = checksum_database(source)
            _, copied = checksum_database(target_engine, tables)
            if after == copied:
                break
        else:
            raise SnapshotError("the source kept changing during the move; try again later")
    except BaseException:
        source.dispose()
        target_engine.dispose()
        new_driver.drop(database_name, user_name)
        raise
    source.dispose()
    target_engine.dispose()
    runner.step(job_id, "switch", 85)
    with runner.database.transaction(actor=f"worker:job {job_id}") as session:
        job = jobs.get_job(session, job_id)
        instance = session.get_one(Instance, job.instance_id)
        instance.db_server_id = target_id
        instance.db_host = created.host
        instance.db_port = created.port
        instance.db_name = created.database_name
        instance.db_user = created.user_name
        instance.db_password = password
        set_read_only(instance, False)
        session.execute(
            update(InstanceServer)
            .where(InstanceServer.instance_id == instance.id, InstanceServer.server_id == old_id)
            .values(server_id=target_id)
        )
        for server_id, change in ((old_id, -1), (target_id, 1)):
            session.execute(
                update(Server)
                .where(Server.id == server_id)
                .values(instance_count=Server.instance_count + change)
            )
    runner.step(job_id, "drop old database", 95)
    try:
        old_driver.drop(old_database.database_name, old_database.user_name)
    except ProvisioningError as error:
        log.warning("old database not dropped", job_id=job_id, error=str(error))
    with runner.database.transaction(actor=f"worker:job {job_id}") as session:
        jobs.finish(session, job_id, JobStatus.SUCCEEDED)
    log.info("instance moved", job_id=job_id, instance=name)
