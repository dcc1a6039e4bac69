"""Snapshots: export, import (a snapshot of yours, or an uploaded archive), move, list,
show, delete, signed download links."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse

from dfe.auth.permissions import Action
from dfe.auth.principals import Principal
from dfe.console.api.crud import ListResponse
from dfe.console.api.deps import SessionDep, SettingsDep, list_query, request_body, requires
from dfe.models import Instance, Snapshot
from dfe.schemas import (
    ImportRequest,
    JobPublic,
    MoveRequest,
    SnapshotJob,
    SnapshotLink,
    SnapshotPublic,
)
from dfe.services import identity, instances, jobs, snapshots
from dfe.services.base import MAX_ID
from dfe.services.errors import InvalidInput
from dfe.services.listing import ListQuery, paginate

router = APIRouter(tags=["snapshots"])
UPLOAD_SUFFIX = "/imports/archive"
SORTS = {"created_at": Snapshot.created_at, "instance_name": Snapshot.instance_name}
SnapshotId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _owner(principal: Principal) -> int | None:
    """Whose snapshots a caller sees: operators all, a user their own."""
    if principal.is_operator:
        return None
    return principal.user_id if principal.user_id is not None else -1


def _instance(session: SessionDep, name: str, principal: Principal) -> Instance:
    found = instances.find_instance(session, name, owner_id=_owner(principal))
    return instances.get_instance(session, found.id)


def _accepted(request: Request, session: SessionDep, *job_ids: int) -> SnapshotJob:
    for job_id in job_ids:
        request.app.state.dispatcher.dispatch(job_id)
    session.expire_all()
    return SnapshotJob(job=JobPublic.model_validate(jobs.get_job(session, job_ids[-1])))


@router.post(
    "/instances/{name}/exports",
    response_model=SnapshotJob,
    status_code=202,
    summary="Export an instance (database and files) to a snapshot, in a job",
)
def export_instance(
    name: str,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.SNAPSHOTS_WRITE)],
) -> Any:
    job = snapshots.request_export(session, _instance(session, name, principal))
    session.commit()
    return _accepted(request, session, job.id)


@router.post(
    "/instances/{name}/imports",
    response_model=SnapshotJob,
    status_code=202,
    summary="Import a snapshot into an instance (made first if it does not exist), in a job",
)
def import_snapshot(
    name: str,
    data: ImportRequest,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, requires(Action.SNAPSHOTS_WRITE)],
) -> Any:
    snapshot = snapshots.get_snapshot(session, data.snapshot_id, _owner(principal))
    cluster = data.cluster or settings.default_cluster
    job_ids = snapshots.request_import_named(session, name, snapshot, cluster)
    session.commit()
    return _accepted(request, session, *job_ids)


@router.post(
    UPLOAD_SUFFIX.join(["/instances/{name}", ""]),
    response_model=SnapshotJob,
    status_code=202,
    summary="Upload a snapshot archive (application/x-tar body) and import it, in a job",
)
def import_archive(
    name: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, requires(Action.SNAPSHOTS_WRITE)],
    body: Annotated[bytes, Depends(request_body)],
    cluster: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[
        str | None, Query(max_length=192, description="Administrators: the owner's email.")
    ] = None,
) -> Any:
    if principal.user_id is not None:
        owner_id = principal.user_id
    elif owner is not None and principal.is_administrator:
        owner_id = identity.get_user(session, owner).id
    else:
        raise InvalidInput("owner: name the user the archive is imported for")
    job_ids = snapshots.import_upload(
        session,
        owner_id,
        name,
        [body],
        cluster=cluster or settings.default_cluster,
        max_bytes=settings.snapshot_max_upload_bytes,
        ttl_days=settings.snapshot_ttl_days,
    )
    session.commit()
    return _accepted(request, session, *job_ids)


@router.post(
    "/instances/{name}/moves",
    response_model=SnapshotJob,
    status_code=202,
    summary="Move an instance's database to another db server (read-only meanwhile), in a job",
)
def move_instance(
    name: str,
    data: MoveRequest,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.INSTANCES_MOVE)],
) -> Any:
    job = snapshots.request_move(session, _instance(session, name, principal), data.db_server)
    session.commit()
    return _accepted(request, session, job.id)


@router.get("/snapshots", response_model=ListResponse[SnapshotPublic], summary="List snapshots")
def list_snapshots(
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.SNAPSHOTS_READ)],
    query: ListQuery = list_query(SORTS),
) -> Any:
    page = paginate(
        session,
        snapshots.snapshot_query(_owner(principal)),
        query,
        sortable=SORTS,
        searchable=[Snapshot.instance_name],
        default_sort="-created_at",
        tie_breaker=Snapshot.id,
    )
    return ListResponse[SnapshotPublic](
        items=[SnapshotPublic.model_validate(s) for s in page.items],
        total=page.total,
        next_cursor=page.next_cursor,
    )


@router.get("/snapshots/{snapshot_id}", response_model=SnapshotPublic, summary="A snapshot")
def show_snapshot(
    snapshot_id: SnapshotId,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.SNAPSHOTS_READ)],
) -> Any:
    return snapshots.get_snapshot(session, snapshot_id, _owner(principal))


@router.delete("/snapshots/{snapshot_id}", status_code=204, summary="Delete a snapshot")
def delete_snapshot(
    snapshot_id: SnapshotId,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.SNAPSHOTS_WRITE)],
) -> None:
    snapshots.delete_snapshot(session, snapshot_id, _owner(principal))
    session.commit()


@router.post(
    "/snapshots/{snapshot_id}/links",
    response_model=SnapshotLink,
    summary="A signed, expiring download link (for the owner, who must still be logged in)",
)
def snapshot_link(
    snapshot_id: SnapshotId,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, requires(Action.SNAPSHOTS_READ)],
) -> Any:
    snapshot = snapshots.get_snapshot(session, snapshot_id, _owner(principal))
    expires, signature = snapshots.sign_link(snapshot, settings.snapshot_ttl_days)
    return SnapshotLink(
        url=f"/snapshots/{snapshot.id}/download?expires={expires}&sig={signature}",
        expires=expires,
        signature=signature,
    )


@router.get(
    "/snapshots/{snapshot_id}/download",
    summary="The archive, streamed (a link's expires and sig, and the owner's token)",
    response_class=FileResponse,
)
def download_snapshot(
    snapshot_id: SnapshotId,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.SNAPSHOTS_READ)],
    expires: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> Any:
    snapshot = snapshots.get_snapshot(session, snapshot_id, _owner(principal))
    snapshots.check_link(snapshot, expires, sig)
    path = snapshots.snapshot_path(session, snapshot)
    if not path.is_file():
        raise snapshots.Gone(f"snapshot {snapshot_id}'s file is gone")
    return FileResponse(
        path,
        media_type="application/x-tar",
        filename=f"{snapshot.instance_name}-{snapshot.id}.dfe.tar",
    )
