"""Snapshots: export, import and move requests, the snapshot records, download links, purge.

The work itself (dumping, verifying, loading) runs in jobs (`dfe.snapshots.jobs`);
this module records what was asked and who may see what. A user sees only their
own snapshots: anything else is NotFound, never Forbidden.

Download links are `.../snapshots/{id}/download?expires=<unix time>&sig=<hex>`,
where sig = HMAC-SHA256(key, "<id>:<expires>") and the key is derived from the
Console's encryption keyring (purpose "snapshot download links"). A link alone
is not enough: the route serving it also requires the owner (the Dashboard
forwards the logged-in user's token), so a leaked link is useless to others.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dfe.crypto import active_keyring
from dfe.db.base import utcnow
from dfe.db.session import Database
from dfe.enums import JobKind, JobStatus, ProvisionState
from dfe.models import Instance, Job, Mount, Server, Snapshot, User
from dfe.provisioning.errors import StorageError
from dfe.provisioning.storage import LocalStorage
from dfe.services import audit, infrastructure, jobs
from dfe.services.errors import Conflict, DfeError, Forbidden, InvalidInput, NotFound

log = structlog.get_logger("dfe.snapshots")

LINK_PURPOSE = "snapshot download links"
SNAPSHOT_KINDS = (JobKind.EXPORT, JobKind.IMPORT, JobKind.MOVE)


class Gone(DfeError):
    status = 410
    code = "gone"


# Records


def snapshot_query(owner_id: int | None = None) -> Select[Any]:
    query = select(Snapshot)
    if owner_id is not None:
        query = query.where(Snapshot.user_id == owner_id)
    return query


def get_snapshot(session: Session, snapshot_id: int, owner_id: int | None = None) -> Snapshot:
    """The snapshot; with `owner_id`, only that user's (others: NotFound)."""
    found: Snapshot | None = session.scalar(
        snapshot_query(owner_id).where(Snapshot.id == snapshot_id)
    )
    if found is None:
        raise NotFound(f"snapshot {snapshot_id} does not exist")
    return found


def snapshot_path(session: Session, snapshot: Snapshot) -> Path:
    """Where the archive is (on its mount; refused if the recorded path leaves it)."""
    mount = session.get(Mount, snapshot.mount_id)
    if mount is None:
        raise NotFound(f"the mount of snapshot {snapshot.id} is gone")
    try:
        return LocalStorage(mount.root_path).resolve(snapshot.storage_path)
    except StorageError as error:
        raise Conflict(str(error)) from None


def _remove_file(session: Session, snapshot: Snapshot) -> None:
    try:
        snapshot_path(session, snapshot).unlink(missing_ok=True)
    except (NotFound, Conflict, OSError) as error:
        log.warning("snapshot file not removed", snapshot_id=snapshot.id, error=str(error))


def delete_snapshot(session: Session, snapshot_id: int, owner_id: int | None = None) -> None:
    snapshot = get_snapshot(session, snapshot_id, owner_id)
    _remove_file(session, snapshot)
    audit.record(session, "snapshot.delete", "snapshot", snapshot.id, snapshot.instance_name)
    session.delete(snapshot)


def expiry(ttl_days: int) -> datetime:
    return utcnow() + timedelta(days=ttl_days)


def new_file_name(instance_name: str) -> str:
    stamp = utcnow().strftime("%Y%m%d%H%M%S")
    return f"{stamp}.{instance_name}.{secrets.token_hex(4)}.dfe.tar"


def record_snapshot(
    session: Session,
    *,
    instance: Instance,
    origin: str,
    mount: Mount,
    path: Path,
    size: int,
    sha256: str,
    manifest: dict[str, Any] | None,
    ttl_days: int,
    job_id: int | None = None,
) -> Snapshot:
    relative = path.relative_to(LocalStorage(mount.root_path).root).as_posix()
    summary: dict[str, Any] = {}
    if manifest is not None:
        summary = {
            "tables": len(manifest["tables"]),
            "rows": sum(t["rows"] for t in manifest["tables"]),
            "files": len(manifest["files"]),
            "file_bytes": sum(f["size"] for f in manifest["files"]),
        }
    snapshot = Snapshot(
        user_id=instance.user_id,
        instance_id=instance.id,
        instance_name=instance.name,
        origin=origin,
        mount_id=mount.id,
        storage_path=relative,
        size=size,
        sha256=sha256,
        format_version=manifest["format_version"] if manifest else None,
        source_engine=manifest["source_engine"] if manifest else None,
        job_id=job_id,
        summary=summary,
        expires_at=expiry(ttl_days),
    )
    session.add(snapshot)
    session.flush()
    audit.record(session, f"snapshot.{origin}", "snapshot", snapshot.id, instance.name)
    return snapshot


def instance_mount(session: Session, instance: Instance) -> Mount:
    web_server = session.get_one(Server, instance.web_server_id)
    if web_server.mount is None:
        raise Conflict(f"web server '{web_server.name}' has no mount for snapshots")
    return web_server.mount


def store_upload(
    session: Session,
    instance: Instance,
    chunks: Iterable[bytes],
    *,
    max_bytes: int,
    ttl_days: int,
) -> Snapshot:
    """Keep an uploaded archive in the owner's snapshot area (verified when imported)."""
    mount = instance_mount(session, instance)
    storage = LocalStorage(mount.root_path)
    try:
        directory = storage.snapshot_dir(instance.user.storage_key)
    except StorageError as error:
        raise Conflict(str(error)) from None
    path = directory / new_file_name(instance.name)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidInput(f"the archive is larger than {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise InvalidInput("the uploaded archive is empty")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return record_snapshot(
        session,
        instance=instance,
        origin="upload",
        mount=mount,
        path=path,
        size=size,
        sha256=digest.hexdigest(),
        manifest=None,
        ttl_days=ttl_days,
    )


# Requests (jobs)


def _create_job(
    session: Session, kind: JobKind, instance: Instance, payload: dict[str, Any]
) -> Job:
    busy = session.scalar(
        select(Job.id).where(
            Job.instance_id == instance.id,
            Job.kind.in_(SNAPSHOT_KINDS),
            Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        )
    )
    if busy is not None:
        raise Conflict(f"instance '{instance.name}' has job {busy} running; wait for it")
    job = jobs.create_job(session, kind, instance)
    job.payload = payload
    session.flush()
    return job


def _ready(instance: Instance) -> Instance:
    if instance.provision_state is not ProvisionState.PROVISIONED:
        raise Conflict(
            f"instance '{instance.name}' is {instance.provision_state.value}, not provisioned"
        )
    return instance


def request_export(session: Session, instance: Instance) -> Job:
    _ready(instance)
    audit.record(session, "instance.export", "instance", instance.id, instance.name)
    return _create_job(session, JobKind.EXPORT, instance, {})


def request_import(
    session: Session,
    instance: Instance,
    snapshot: Snapshot,
    *,
    after_job: int | None = None,
) -> Job:
    """Import `snapshot` over `instance` (which `after_job`, its provisioning, may still be
    making). The snapshot must be the instance owner's."""
    if snapshot.user_id != instance.user_id:
        raise NotFound(f"snapshot {snapshot.id} does not exist")
    if after_job is None:
        _ready(instance)
    audit.record(
        session,
        "instance.import",
        "instance",
        instance.id,
        instance.name,
        after={"snapshot_id": snapshot.id},
    )
    payload: dict[str, Any] = {"snapshot_id": snapshot.id}
    if after_job is not None:
        payload["after_job"] = after_job
    return _create_job(session, JobKind.IMPORT, instance, payload)


def request_import_named(
    session: Session, name: str, snapshot: Snapshot, cluster: str
) -> list[int]:
    """Import `snapshot` into the instance `name`: its owner's instance, or a new one
    launched for the snapshot's owner. The job ids to dispatch, in order."""
    from dfe.provisioning import engine  # the engine builds on the services

    instance = session.scalar(select(Instance).where(Instance.name == name.strip().lower()))
    if instance is not None:
        if instance.user_id != snapshot.user_id:
            raise Conflict(f"an instance named '{name}' exists and is not yours")
        return [request_import(session, instance, snapshot).id]
    if snapshot.user_id is None:
        raise Conflict(f"snapshot {snapshot.id} has no owner to launch an instance for")
    owner = session.get_one(User, snapshot.user_id)
    cluster_id = infrastructure.get_cluster(session, cluster).id
    instance, provision = engine.launch(session, owner, name, cluster_id)
    return [provision.id, request_import(session, instance, snapshot, after_job=provision.id).id]


def import_upload(
    session: Session,
    user_id: int,
    name: str,
    chunks: Iterable[bytes],
    *,
    cluster: str,
    max_bytes: int,
    ttl_days: int,
) -> list[int]:
    """Keep an uploaded archive as a snapshot of `user_id`'s and import it into `name`
    (launched first if missing). The job ids to dispatch, in order."""
    from dfe.provisioning import engine

    owner = session.get_one(User, user_id)
    instance = session.scalar(select(Instance).where(Instance.name == name.strip().lower()))
    provision: Job | None = None
    if instance is None:
        cluster_id = infrastructure.get_cluster(session, cluster).id
        instance, provision = engine.launch(session, owner, name, cluster_id)
    elif instance.user_id != user_id:
        raise Conflict(f"an instance named '{name}' exists and is not yours")
    snapshot = store_upload(session, instance, chunks, max_bytes=max_bytes, ttl_days=ttl_days)
    after = provision.id if provision is not None else None
    job = request_import(session, instance, snapshot, after_job=after)
    return [*([after] if after is not None else []), job.id]


def request_move(session: Session, instance: Instance, db_server_name: str) -> Job:
    _ready(instance)
    target = session.scalar(select(Server).where(Server.name == db_server_name.strip().lower()))
    if target is None or target.server_type.value != "db":
        raise NotFound(f"db server '{db_server_name}' does not exist")
    if target.id == instance.db_server_id:
        raise InvalidInput(f"instance '{instance.name}' is on '{target.name}' already")
    if not target.is_enabled:
        raise Conflict(f"db server '{target.name}' is disabled")
    audit.record(
        session,
        "instance.move",
        "instance",
        instance.id,
        instance.name,
        after={"db_server": target.name},
    )
    return _create_job(session, JobKind.MOVE, instance, {"db_server_id": target.id})


# Download links


def _link_key() -> bytes:
    return active_keyring().derive_key(LINK_PURPOSE)


def link_signature(snapshot_id: int, expires: int) -> str:
    message = f"{snapshot_id}:{expires}".encode()
    return hmac.new(_link_key(), message, hashlib.sha256).hexdigest()


def sign_link(snapshot: Snapshot, ttl_days: int) -> tuple[int, str]:
    """(expires, signature) of a link that works until the snapshot or the TTL ends."""
    until = min(snapshot.expires_at, expiry(ttl_days))
    expires = int(until.timestamp())
    return expires, link_signature(snapshot.id, expires)


def check_link(snapshot: Snapshot, expires: int, signature: str) -> None:
    """Refuse a link with a wrong signature (403) or past its time (410)."""
    if not hmac.compare_digest(link_signature(snapshot.id, expires), signature):
        raise Forbidden("this download link is not valid")
    if expires < time.time() or snapshot.expires_at <= utcnow():
        raise Gone("this download link has expired: ask for a new one")


# Purge


def purge_expired(database: Database, now: datetime | None = None) -> list[int]:
    """Delete the snapshots (files and rows) past their expiry; the daily task runs this.
    Returns the ids purged; each is logged and audited."""
    moment = now or utcnow()
    purged: list[int] = []
    with database.transaction(actor="purge") as session:
        expired = list(session.scalars(select(Snapshot).where(Snapshot.expires_at <= moment)))
        for snapshot in expired:
            _remove_file(session, snapshot)
            audit.record(session, "snapshot.purge", "snapshot", snapshot.id, snapshot.instance_name)
            log.info(
                "snapshot purged",
                snapshot_id=snapshot.id,
                instance=snapshot.instance_name,
                expired_at=snapshot.expires_at.isoformat(),
            )
            purged.append(snapshot.id)
            session.delete(snapshot)
    return purged
