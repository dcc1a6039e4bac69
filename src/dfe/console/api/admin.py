"""App keys, the archive, rate limits and the audit log: the operators' tools."""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from dfe.auth.permissions import Action
from dfe.console.api.crud import ListResponse, Resource, crud_router
from dfe.console.api.deps import SessionDep, SettingsDep, list_query, requires
from dfe.enums import OwnerType
from dfe.models import AppKey, AuditEntry, Limit
from dfe.schemas import (
    ArchivedPublic,
    AuditPublic,
    KeyCreate,
    KeyPublic,
    KeyWithSecret,
    LimitCreate,
    LimitPublic,
    LimitsReset,
    LimitUpdate,
)
from dfe.services import archive, audit, keys, limits
from dfe.services.listing import ListQuery, next_cursor, offset_of, paginate

router = APIRouter()
KEY_SORTS = {"created_at": AppKey.created_at, "client_id": AppKey.client_id}
AUDIT_SORTS = {"at": AuditEntry.at}


# App keys


@router.get("/keys", response_model=ListResponse[KeyPublic], tags=["keys"], summary="List keys")
def list_keys(
    session: SessionDep,
    query: ListQuery = list_query(KEY_SORTS),
    owner_type: OwnerType | None = None,
    _: Any = requires(Action.KEYS_READ),
) -> Any:
    selection = select(AppKey)
    if owner_type is not None:
        selection = selection.where(AppKey.owner_type == owner_type)
    page = paginate(
        session,
        selection,
        query,
        sortable=KEY_SORTS,
        searchable=[AppKey.client_id, AppKey.label],
        default_sort="created_at",
        tie_breaker=AppKey.id,
    )
    return ListResponse[KeyPublic](
        items=[keys.public(key) for key in page.items],
        total=page.total,
        next_cursor=page.next_cursor,
    )


@router.post(
    "/keys",
    response_model=KeyWithSecret,
    status_code=201,
    tags=["keys"],
    summary="Create a key (its secret is returned this once)",
)
def create_key(data: KeyCreate, session: SessionDep, _: Any = requires(Action.KEYS_WRITE)) -> Any:
    owner_id = keys.resolve_owner(session, data.owner_type, data.owner)
    key = keys.create_key(
        session, data.owner_type, owner_id, label=data.label, expires_at=data.expires_at
    )
    session.commit()
    return key


@router.get("/keys/{client_id}", response_model=KeyPublic, tags=["keys"], summary="Show a key")
def show_key(client_id: str, session: SessionDep, _: Any = requires(Action.KEYS_READ)) -> Any:
    return keys.public(keys.get_key(session, client_id))


@router.delete("/keys/{client_id}", status_code=204, tags=["keys"], summary="Revoke a key")
def revoke_key(
    client_id: str, session: SessionDep, _: Any = requires(Action.KEYS_WRITE)
) -> Response:
    keys.revoke_key(session, client_id)
    session.commit()
    return Response(status_code=204)


class RotateRequest(BaseModel):
    grace_hours: int | None = Field(default=None, ge=0, le=24 * 365)


@router.post(
    "/keys/{client_id}/rotate",
    response_model=KeyWithSecret,
    status_code=201,
    tags=["keys"],
    summary="Make a successor key; the old one ends at the new one's first use",
)
def rotate_key(
    client_id: str,
    data: RotateRequest,
    session: SessionDep,
    settings: SettingsDep,
    _: Any = requires(Action.KEYS_WRITE),
) -> Any:
    hours = settings.key_rotation_grace_hours if data.grace_hours is None else data.grace_hours
    key = keys.rotate_key(session, client_id, timedelta(hours=hours))
    session.commit()
    return key


# The archive


class ArchiveKind(StrEnum):
    CLUSTERS = "clusters"
    SERVERS = "servers"
    INSTANCES = "instances"

    @property
    def kind(self) -> str:
        return self.value.removesuffix("s")


@router.get(
    "/archive/{kind}",
    response_model=ListResponse[ArchivedPublic],
    tags=["archive"],
    summary="List archived rows, newest first",
)
def list_archived(
    kind: ArchiveKind,
    session: SessionDep,
    query: ListQuery = list_query({}),
    _: Any = requires(Action.ARCHIVE_READ),
) -> Any:
    offset = offset_of(query.cursor)
    rows, total = archive.list_archived(
        session, kind.kind, name=query.q, limit=query.limit, offset=offset
    )
    return ListResponse[ArchivedPublic](
        items=rows, total=total, next_cursor=next_cursor(offset, len(rows), total)
    )


@router.get(
    "/archive/{kind}/{ref}",
    response_model=ArchivedPublic,
    tags=["archive"],
    summary="The most recent archived row of a name or id",
)
def show_archived(
    kind: ArchiveKind, ref: str, session: SessionDep, _: Any = requires(Action.ARCHIVE_READ)
) -> Any:
    return archive.show_archived(session, kind.kind, ref)


@router.post(
    "/archive/{kind}/{ref}/restore",
    response_model=ArchivedPublic,
    tags=["archive"],
    summary="Restore the most recent archived batch of a name or id",
)
def restore(
    kind: ArchiveKind, ref: str, session: SessionDep, _: Any = requires(Action.ARCHIVE_WRITE)
) -> Any:
    restored = archive.restore(session, kind.kind, ref)
    session.commit()
    return restored


# The audit log


@router.get(
    "/audit", response_model=ListResponse[AuditPublic], tags=["audit"], summary="The audit log"
)
def audit_log(
    session: SessionDep,
    query: ListQuery = list_query(AUDIT_SORTS),
    actor: Annotated[str | None, Query(max_length=255)] = None,
    target: Annotated[str | None, Query(max_length=255, description="Target name.")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    _: Any = requires(Action.AUDIT_READ),
) -> Any:
    entries = audit.entry_query(actor=actor, target=target, action=action, since=since, until=until)
    page = paginate(
        session,
        entries,
        query,
        sortable=AUDIT_SORTS,
        searchable=[AuditEntry.target_name, AuditEntry.action],
        default_sort="-at",
        tie_breaker=AuditEntry.id,
    )
    return ListResponse[AuditPublic](
        items=[AuditPublic.model_validate(entry) for entry in page.items],
        total=page.total,
        next_cursor=page.next_cursor,
    )


limits_resource = Resource(
    path="limits",
    noun="limit",
    public=LimitPublic,
    create_schema=LimitCreate,
    update_schema=LimitUpdate,
    query=lambda: select(Limit),
    to_public=limits.limit_publics,
    get=limits.get_limit,
    create=limits.create_limit,
    update=limits.update_limit,
    delete=limits.delete_limit,
    read=Action.LIMITS_READ,
    write=Action.LIMITS_WRITE,
    sortable={"label": Limit.label, "created_at": Limit.created_at},
    searchable=[Limit.label],
    default_sort="label",
    tie_breaker=Limit.id,
)


# Declared before the generic limit routes: /limits/{ref}/reset is its own operation.
@router.post(
    "/limits/{ref}/reset",
    response_model=LimitsReset,
    tags=["limits"],
    summary="Start a limit's counters from zero, in every web-tier process",
)
def reset_limit(
    ref: str,
    session: SessionDep,
    settings: SettingsDep,
    _: Any = requires(Action.LIMITS_WRITE),
) -> Any:
    found = limits.reset_limits(session, [ref], settings.redis_url, settings.redis_namespace)
    session.commit()
    return LimitsReset(limits=limits.limit_publics(session, found))


routers = [router, crud_router(limits_resource)]
