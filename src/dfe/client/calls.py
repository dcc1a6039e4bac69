"""Every Console API route as a `Call`: method, path, query, body and how to read the answer.

Both clients (sync and async) are thin shells over these builders, so a route
is described once. Paths are relative to `/api/v1`; path parameters are
percent-encoded here (an email or a name with a dot stays one path segment).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx2
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic_core import to_jsonable_python

from dfe.client.models import (
    ArchiveKind,
    Health,
    LoginResponse,
    Page,
    Readiness,
)
from dfe.enums import JobKind, JobStatus, OwnerType
from dfe.schemas import (
    ArchivedPublic,
    AuditPublic,
    ClusterCreate,
    ClusterPublic,
    ClusterUpdate,
    ImportRequest,
    InstanceApiKey,
    InstanceChanges,
    InstanceConfig,
    InstanceCreate,
    InstanceLaunched,
    InstancePublic,
    JobPublic,
    KeyCreate,
    KeyPublic,
    KeyWithSecret,
    LimitCreate,
    LimitPublic,
    LimitsReset,
    LimitUpdate,
    MetricsPage,
    MountCreate,
    MountPublic,
    MountUpdate,
    MoveRequest,
    PasswordResetAccepted,
    RequestCounts,
    ServerCreate,
    ServerPublic,
    ServerUpdate,
    ServiceUserCreate,
    ServiceUserPublic,
    ServiceUserUpdate,
    SnapshotJob,
    SnapshotLink,
    SnapshotPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Ref = str | int
"""A name (or email, for people) or a numeric id."""

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class ResponseShapeError(ValueError):
    """A success response whose body is not what the call expects (no input values quoted)."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request, ready to sign and send, and the parser of its success response."""

    method: str
    path: str
    parse: Callable[[httpx2.Response], T]
    params: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    signed: bool = True
    # Error statuses that are an answer for this call (not retried, not raised).
    accept: frozenset[int] = frozenset()

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT_METHODS


# Building blocks


def path(template: str, **parts: Ref) -> str:
    return template.format(**{name: _segment(value) for name, value in parts.items()})


def _segment(value: Ref) -> str:
    """One path segment, percent-encoded; "." and ".." too, which URLs would resolve away."""
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in {".", ".."} else text


def query(**values: Any) -> tuple[tuple[str, str], ...]:
    """Query parameters in order, without the ones left out (None)."""
    return tuple((name, _query_value(value)) for name, value in values.items() if value is not None)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            # The Console keeps UTC; a naive time could be anyone's local time.
            raise ValueError(f"{value!r} has no time zone: use an aware datetime (e.g. in UTC)")
        return value.isoformat()
    return str(value)


def body(data: BaseModel | dict[str, Any], *, exclude_unset: bool = False) -> bytes:
    """JSON for a request body; secrets (passwords) are sent in clear, as the API needs them."""
    if isinstance(data, BaseModel):
        document: Any = data.model_dump(mode="python", exclude_unset=exclude_unset)
    else:
        document = data
    return json.dumps(to_jsonable_python(_reveal(document)), separators=(",", ":")).encode()


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(item) for item in value]
    return value


def model(cls: type[M]) -> Callable[[httpx2.Response], M]:
    def parse(response: httpx2.Response) -> M:
        return _validate(cls, response)

    return parse


def page(cls: type[M]) -> Callable[[httpx2.Response], Page[M]]:
    def parse(response: httpx2.Response) -> Page[M]:
        return _validate(Page[cls], response)  # type: ignore[valid-type]

    return parse


def nothing(_response: httpx2.Response) -> None:
    return None


def _validate(cls: type[M], response: httpx2.Response) -> M:
    try:
        document = response.json()
    except ValueError:
        raise ResponseShapeError(f"the body is not JSON; expected {cls.__name__}") from None
    try:
        return cls.model_validate(document)
    except ValidationError as error:
        # Name the places only: the input values may be secrets (a new key's secret).
        places = sorted(
            {".".join(str(part) for part in e["loc"]) or "body" for e in error.errors()}
        )
        raise ResponseShapeError(
            f"the body is not a valid {cls.__name__}: check {', '.join(places)}"
        ) from None


def _get(template: str, parse: Callable[[httpx2.Response], T], **parts: Ref) -> Call[T]:
    return Call("GET", path(template, **parts), parse)


def _list(template: str, cls: type[M], /, **values: Any) -> Call[Page[M]]:
    parts = {name: values.pop(name) for name in list(values) if "{" + name + "}" in template}
    return Call("GET", path(template, **parts), page(cls), params=query(**values))


def _delete(template: str, **parts: Ref) -> Call[None]:
    return Call("DELETE", path(template, **parts), nothing)


def _create(template: str, data: BaseModel, cls: type[M]) -> Call[M]:
    return Call("POST", template, model(cls), body=body(data))


def _update(template: str, ref: Ref, data: BaseModel, cls: type[M]) -> Call[M]:
    # Only the fields the caller set: PATCH leaves the others as they are.
    return Call("PATCH", path(template, ref=ref), model(cls), body=body(data, exclude_unset=True))


# Health


def health() -> Call[Health]:
    return Call("GET", "/health", model(Health), signed=False)


def ready() -> Call[Readiness]:
    return Call("GET", "/ready", model(Readiness), signed=False, accept=frozenset({503}))


# Mounts, servers, clusters


def list_mounts(
    *,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[MountPublic]]:
    return _list("/mounts", MountPublic, q=q, sort=sort, limit=limit, cursor=cursor)


def create_mount(data: MountCreate) -> Call[MountPublic]:
    return _create("/mounts", data, MountPublic)


def get_mount(ref: Ref) -> Call[MountPublic]:
    return _get("/mounts/{ref}", model(MountPublic), ref=ref)


def update_mount(ref: Ref, data: MountUpdate) -> Call[MountPublic]:
    return _update("/mounts/{ref}", ref, data, MountPublic)


def delete_mount(ref: Ref) -> Call[None]:
    return _delete("/mounts/{ref}", ref=ref)


def list_servers(
    *,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[ServerPublic]]:
    return _list("/servers", ServerPublic, q=q, sort=sort, limit=limit, cursor=cursor)


def create_server(data: ServerCreate) -> Call[ServerPublic]:
    return _create("/servers", data, ServerPublic)


def get_server(ref: Ref) -> Call[ServerPublic]:
    return _get("/servers/{ref}", model(ServerPublic), ref=ref)


def update_server(ref: Ref, data: ServerUpdate) -> Call[ServerPublic]:
    return _update("/servers/{ref}", ref, data, ServerPublic)


def delete_server(ref: Ref) -> Call[None]:
    return _delete("/servers/{ref}", ref=ref)


def list_clusters(
    *,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[ClusterPublic]]:
    return _list("/clusters", ClusterPublic, q=q, sort=sort, limit=limit, cursor=cursor)


def create_cluster(data: ClusterCreate) -> Call[ClusterPublic]:
    return _create("/clusters", data, ClusterPublic)


def get_cluster(ref: Ref) -> Call[ClusterPublic]:
    return _get("/clusters/{ref}", model(ClusterPublic), ref=ref)


def update_cluster(ref: Ref, data: ClusterUpdate) -> Call[ClusterPublic]:
    return _update("/clusters/{ref}", ref, data, ClusterPublic)


def delete_cluster(ref: Ref) -> Call[None]:
    return _delete("/clusters/{ref}", ref=ref)


def list_cluster_servers(cluster: Ref) -> Call[Page[ServerPublic]]:
    return _list("/clusters/{cluster}/servers", ServerPublic, cluster=cluster)


def assign_server(cluster: Ref, server: Ref) -> Call[None]:
    return Call(
        "PUT", path("/clusters/{cluster}/servers/{server}", cluster=cluster, server=server), nothing
    )


def unassign_server(cluster: Ref, server: Ref) -> Call[None]:
    return _delete("/clusters/{cluster}/servers/{server}", cluster=cluster, server=server)


# Users, logins, service users


def register_user(data: UserCreate) -> Call[UserPublic]:
    return _create("/users", data, UserPublic)


def list_users(
    *,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[UserPublic]]:
    return _list("/users", UserPublic, q=q, sort=sort, limit=limit, cursor=cursor)


def get_user(ref: Ref) -> Call[UserPublic]:
    return _get("/users/{ref}", model(UserPublic), ref=ref)


def update_user(ref: Ref, data: UserUpdate) -> Call[UserPublic]:
    return _update("/users/{ref}", ref, data, UserPublic)


def delete_user(ref: Ref) -> Call[None]:
    return _delete("/users/{ref}", ref=ref)


def login(email: str, password: str | SecretStr, address: str | None = None) -> Call[LoginResponse]:
    document: dict[str, Any] = {"email": email, "password": password}
    if address is not None:
        document["address"] = address
    return Call("POST", "/logins", model(LoginResponse), body=body(document))


def account() -> Call[UserPublic]:
    return _get("/account", model(UserPublic))


def request_password_reset(email: str, address: str | None = None) -> Call[PasswordResetAccepted]:
    document: dict[str, Any] = {"email": email}
    if address is not None:
        document["address"] = address
    return Call("POST", "/password-resets", model(PasswordResetAccepted), body=body(document))


def confirm_password_reset(token: str | SecretStr, password: str | SecretStr) -> Call[UserPublic]:
    document = {"token": token, "password": password}
    return Call("POST", "/password-resets/confirm", model(UserPublic), body=body(document))


def change_password(
    current_password: str | SecretStr, password: str | SecretStr, address: str | None = None
) -> Call[LoginResponse]:
    document: dict[str, Any] = {"current_password": current_password, "password": password}
    if address is not None:
        document["address"] = address
    return Call("POST", "/account/password", model(LoginResponse), body=body(document))


def list_service_users(
    *,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[ServiceUserPublic]]:
    return _list("/service-users", ServiceUserPublic, q=q, sort=sort, limit=limit, cursor=cursor)


def create_service_user(data: ServiceUserCreate) -> Call[ServiceUserPublic]:
    return _create("/service-users", data, ServiceUserPublic)


def get_service_user(ref: Ref) -> Call[ServiceUserPublic]:
    return _get("/service-users/{ref}", model(ServiceUserPublic), ref=ref)


def update_service_user(ref: Ref, data: ServiceUserUpdate) -> Call[ServiceUserPublic]:
    return _update("/service-users/{ref}", ref, data, ServiceUserPublic)


def delete_service_user(ref: Ref) -> Call[None]:
    return _delete("/service-users/{ref}", ref=ref)


# App keys


def list_keys(
    *,
    owner_type: OwnerType | str | None = None,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[KeyPublic]]:
    return _list(
        "/keys", KeyPublic, owner_type=owner_type, q=q, sort=sort, limit=limit, cursor=cursor
    )


def create_key(data: KeyCreate) -> Call[KeyWithSecret]:
    return _create("/keys", data, KeyWithSecret)


def get_key(client_id: str) -> Call[KeyPublic]:
    return _get("/keys/{client_id}", model(KeyPublic), client_id=client_id)


def revoke_key(client_id: str) -> Call[None]:
    return _delete("/keys/{client_id}", client_id=client_id)


def rotate_key(client_id: str, grace_hours: int | None = None) -> Call[KeyWithSecret]:
    document = {} if grace_hours is None else {"grace_hours": grace_hours}
    return Call(
        "POST",
        path("/keys/{client_id}/rotate", client_id=client_id),
        model(KeyWithSecret),
        body=body(document),
    )


# Instances and jobs


def list_instances(
    *,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[InstancePublic]]:
    return _list("/instances", InstancePublic, q=q, sort=sort, limit=limit, cursor=cursor)


def get_instance(name: str) -> Call[InstancePublic]:
    return _get("/instances/{name}", model(InstancePublic), name=name)


def get_instance_config(name: str) -> Call[InstanceConfig]:
    return _get("/instances/{name}/config", model(InstanceConfig), name=name)


def list_instance_changes(since: str | None = None) -> Call[InstanceChanges]:
    return Call("GET", "/instances/changes", model(InstanceChanges), params=query(since=since))


def get_instance_api_key(name: str) -> Call[InstanceApiKey]:
    return _get("/instances/{name}/api-key", model(InstanceApiKey), name=name)


def launch_instance(data: InstanceCreate) -> Call[InstanceLaunched]:
    return _create("/instances", data, InstanceLaunched)


def delete_instance(name: str) -> Call[InstanceLaunched]:
    return Call("DELETE", path("/instances/{name}", name=name), model(InstanceLaunched))


def list_jobs(
    *,
    q: str | None = None,
    status: JobStatus | None = None,
    kind: JobKind | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[JobPublic]]:
    return _list(
        "/jobs", JobPublic, q=q, status=status, kind=kind, sort=sort, limit=limit, cursor=cursor
    )


def get_job(job_id: int) -> Call[JobPublic]:
    return _get("/jobs/{job_id}", model(JobPublic), job_id=job_id)


# Snapshots


def export_instance(name: str) -> Call[SnapshotJob]:
    return Call("POST", path("/instances/{name}/exports", name=name), model(SnapshotJob))


def import_snapshot(name: str, data: ImportRequest) -> Call[SnapshotJob]:
    return Call(
        "POST", path("/instances/{name}/imports", name=name), model(SnapshotJob), body=body(data)
    )


def upload_snapshot(
    name: str, archive: bytes, cluster: str | None = None, owner: str | None = None
) -> Call[SnapshotJob]:
    """Upload an archive (read whole: the signature covers its digest) and import it;
    administrators name the `owner` (email), users import for themselves."""
    return Call(
        "POST",
        path("/instances/{name}/imports/archive", name=name),
        model(SnapshotJob),
        params=query(cluster=cluster, owner=owner),
        body=archive,
    )


def move_instance(name: str, data: MoveRequest) -> Call[SnapshotJob]:
    return Call(
        "POST", path("/instances/{name}/moves", name=name), model(SnapshotJob), body=body(data)
    )


def list_snapshots(
    *,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[SnapshotPublic]]:
    return _list("/snapshots", SnapshotPublic, q=q, sort=sort, limit=limit, cursor=cursor)


def get_snapshot(snapshot_id: int) -> Call[SnapshotPublic]:
    return _get("/snapshots/{snapshot_id}", model(SnapshotPublic), snapshot_id=snapshot_id)


def delete_snapshot(snapshot_id: int) -> Call[None]:
    return _delete("/snapshots/{snapshot_id}", snapshot_id=snapshot_id)


def snapshot_link(snapshot_id: int) -> Call[SnapshotLink]:
    return Call(
        "POST",
        path("/snapshots/{snapshot_id}/links", snapshot_id=snapshot_id),
        model(SnapshotLink),
    )


def _content(response: httpx2.Response) -> bytes:
    return response.content


def download_snapshot(snapshot_id: int, expires: int, signature: str) -> Call[bytes]:
    return Call(
        "GET",
        path("/snapshots/{snapshot_id}/download", snapshot_id=snapshot_id),
        _content,
        params=query(expires=expires, sig=signature),
    )


# The archive


def list_archived(
    kind: ArchiveKind | str,
    *,
    q: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[ArchivedPublic]]:
    return _list(
        "/archive/{kind}", ArchivedPublic, kind=ArchiveKind(kind), q=q, limit=limit, cursor=cursor
    )


def get_archived(kind: ArchiveKind | str, ref: Ref) -> Call[ArchivedPublic]:
    return _get("/archive/{kind}/{ref}", model(ArchivedPublic), kind=ArchiveKind(kind), ref=ref)


def restore_archived(kind: ArchiveKind | str, ref: Ref) -> Call[ArchivedPublic]:
    return Call(
        "POST",
        path("/archive/{kind}/{ref}/restore", kind=ArchiveKind(kind), ref=ref),
        model(ArchivedPublic),
    )


# Limits


def list_limits(
    *,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[LimitPublic]]:
    return _list("/limits", LimitPublic, q=q, sort=sort, limit=limit, cursor=cursor)


def create_limit(data: LimitCreate) -> Call[LimitPublic]:
    return _create("/limits", data, LimitPublic)


def get_limit(ref: Ref) -> Call[LimitPublic]:
    return _get("/limits/{ref}", model(LimitPublic), ref=ref)


def update_limit(ref: Ref, data: LimitUpdate) -> Call[LimitPublic]:
    return _update("/limits/{ref}", ref, data, LimitPublic)


def delete_limit(ref: Ref) -> Call[None]:
    return _delete("/limits/{ref}", ref=ref)


def reset_limit(ref: Ref) -> Call[LimitsReset]:
    return Call("POST", path("/limits/{ref}/reset", ref=ref), model(LimitsReset))


# Usage metrics


def list_metrics(
    *, instance: str | None = None, since: date | None = None, until: date | None = None
) -> Call[MetricsPage]:
    params = query(instance=instance, since=since, until=until)
    return Call("GET", "/metrics", model(MetricsPage), params=params)


def report_requests(data: RequestCounts) -> Call[None]:
    return Call("POST", "/metrics/requests", nothing, body=body(data))


# The audit log


def list_audit(
    *,
    actor: str | None = None,
    target: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[AuditPublic]]:
    return _list(
        "/audit",
        AuditPublic,
        actor=actor,
        target=target,
        action=action,
        since=since,
        until=until,
        q=q,
        sort=sort,
        limit=limit,
        cursor=cursor,
    )
