"""`ConsoleClient`: the blocking ops client (httpx2.Client)."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx2
from pydantic import SecretStr

from dfe.client import calls
from dfe.client._base import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    HEADERS,
    Outcome,
    RetryPolicy,
    api_root,
    client_repr,
    finish,
    next_delay,
    read_key_file,
)
from dfe.client.calls import Call, Ref
from dfe.client.models import ArchiveKind, Health, LoginResponse, Page, Readiness
from dfe.client.signing import AppKeyAuth
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


class ConsoleClient:
    """A client of the Console API that signs every request with an app key.

    >>> with ConsoleClient.from_key_file("var/console.key") as console:
    ...     for cluster in console.iterate(console.list_clusters):
    ...         print(cluster.name)

    Idempotent calls (GET, PUT, DELETE) are retried `retries` times on connection
    failures and 502/503/504, each retry signed afresh; POST and PATCH never are.
    Failures raise `dfe.client.errors` exceptions: `ConsoleError` subclasses for
    error answers, `ConsoleUnavailable` when the Console cannot be reached.
    For custom TLS settings or proxies, pass an `httpx2.HTTPTransport` as `transport`.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        user_token: str | None = None,
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        transport: httpx2.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._root = api_root(base_url)
        self._auth = AppKeyAuth(client_id, client_secret, user_token)
        self._policy = RetryPolicy(retries, backoff)
        self._sleep = sleep
        self._http = httpx2.Client(timeout=timeout, transport=transport, headers=HEADERS)
        self._owns_http = True

    @classmethod
    def from_key_file(
        cls, path: str | os.PathLike[str], *, base_url: str | None = None, **options: Any
    ) -> Self:
        """A client for the key in a JSON key file (`dfe setup` writes console.key and
        dashboard.key); `base_url` defaults to the file's console_url."""
        client_id, client_secret, console_url = read_key_file(path)
        url = base_url or console_url
        if not url:
            raise ValueError(f"{os.fspath(path)}: the key file has no console_url; pass base_url")
        return cls(url, client_id, client_secret, **options)

    def with_user_token(self, user_token: str) -> Self:
        """A client acting for the user the token (from `login`) names.

        It shares this client's connections: close this one, not the derived one.
        """
        clone = copy.copy(self)
        clone._auth = self._auth.for_user(user_token)
        clone._owns_http = False
        return clone

    @property
    def base_url(self) -> str:
        """The API root, ending in /api/v1."""
        return self._root

    @property
    def client_id(self) -> str:
        return self._auth.client_id

    @property
    def acting_for_user(self) -> bool:
        return self._auth.user_token is not None

    def __repr__(self) -> str:
        return client_repr(type(self).__name__, self._root, self.client_id, self._auth.user_token)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def iterate(
        self, list_method: Callable[..., Page[T]], /, *args: Any, **params: Any
    ) -> Iterator[T]:
        """Every item of a list, page after page: `iterate(client.list_mounts, limit=100)`."""
        cursor = params.pop("cursor", None)
        while True:
            page = list_method(*args, cursor=cursor, **params)
            yield from page.items
            if not page.next_cursor or not page.items or page.next_cursor == cursor:
                return
            cursor = page.next_cursor

    def call(self, call: Call[T]) -> T:
        """Send one call (see dfe.client.calls), retrying it when that is safe."""
        attempt = 0
        while True:
            outcome = self._attempt(call)
            delay = next_delay(self._policy, call, attempt, outcome)
            if delay is None:
                return finish(call, outcome, self._root, attempt + 1)
            self._sleep(delay)
            attempt += 1

    def _attempt(self, call: Call[Any]) -> Outcome:
        request = self._http.build_request(
            call.method,
            self._root + call.path,
            params=call.params or None,
            content=call.body,
            headers={"Content-Type": "application/json"} if call.body is not None else None,
        )
        try:
            return self._http.send(request, auth=self._auth if call.signed else None)
        except httpx2.TransportError as error:
            return error

    # Health

    def health(self) -> Health:
        """The Console process is up (unsigned)."""
        return self.call(calls.health())

    def ready(self) -> Readiness:
        """The Console's database answers and its schema is current (unsigned)."""
        return self.call(calls.ready())

    # Mounts

    def list_mounts(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[MountPublic]:
        return self.call(calls.list_mounts(q=q, sort=sort, limit=limit, cursor=cursor))

    def create_mount(self, data: MountCreate) -> MountPublic:
        return self.call(calls.create_mount(data))

    def get_mount(self, ref: Ref) -> MountPublic:
        return self.call(calls.get_mount(ref))

    def update_mount(self, ref: Ref, data: MountUpdate) -> MountPublic:
        return self.call(calls.update_mount(ref, data))

    def delete_mount(self, ref: Ref) -> None:
        return self.call(calls.delete_mount(ref))

    # Servers

    def list_servers(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[ServerPublic]:
        return self.call(calls.list_servers(q=q, sort=sort, limit=limit, cursor=cursor))

    def create_server(self, data: ServerCreate) -> ServerPublic:
        return self.call(calls.create_server(data))

    def get_server(self, ref: Ref) -> ServerPublic:
        return self.call(calls.get_server(ref))

    def update_server(self, ref: Ref, data: ServerUpdate) -> ServerPublic:
        return self.call(calls.update_server(ref, data))

    def delete_server(self, ref: Ref) -> None:
        """Archive a server (refused while instances use it)."""
        return self.call(calls.delete_server(ref))

    # Clusters

    def list_clusters(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[ClusterPublic]:
        return self.call(calls.list_clusters(q=q, sort=sort, limit=limit, cursor=cursor))

    def create_cluster(self, data: ClusterCreate) -> ClusterPublic:
        return self.call(calls.create_cluster(data))

    def get_cluster(self, ref: Ref) -> ClusterPublic:
        return self.call(calls.get_cluster(ref))

    def update_cluster(self, ref: Ref, data: ClusterUpdate) -> ClusterPublic:
        return self.call(calls.update_cluster(ref, data))

    def delete_cluster(self, ref: Ref) -> None:
        """Archive a cluster and its memberships (refused while it has instances)."""
        return self.call(calls.delete_cluster(ref))

    def list_cluster_servers(self, cluster: Ref) -> Page[ServerPublic]:
        """The servers in a cluster (one page holds them all)."""
        return self.call(calls.list_cluster_servers(cluster))

    def assign_server(self, cluster: Ref, server: Ref) -> None:
        """Put a server in a cluster."""
        return self.call(calls.assign_server(cluster, server))

    def unassign_server(self, cluster: Ref, server: Ref) -> None:
        """Take a server out of a cluster."""
        return self.call(calls.unassign_server(cluster, server))

    # Users and logins

    def register_user(self, data: UserCreate) -> UserPublic:
        """Register a user (the Dashboard's key may, too)."""
        return self.call(calls.register_user(data))

    def list_users(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[UserPublic]:
        return self.call(calls.list_users(q=q, sort=sort, limit=limit, cursor=cursor))

    def get_user(self, ref: Ref) -> UserPublic:
        return self.call(calls.get_user(ref))

    def update_user(self, ref: Ref, data: UserUpdate) -> UserPublic:
        return self.call(calls.update_user(ref, data))

    def delete_user(self, ref: Ref) -> None:
        return self.call(calls.delete_user(ref))

    def login(
        self, email: str, password: str | SecretStr, *, address: str | None = None
    ) -> LoginResponse:
        """Check a user's password (Dashboard key); `address` is the end user's IP, for
        throttling. Act for the user with `with_user_token(response.token)`."""
        return self.call(calls.login(email, password, address))

    def account(self) -> UserPublic:
        """The acting user's own account (a user key, or a client `with_user_token`)."""
        return self.call(calls.account())

    def request_password_reset(
        self, email: str, *, address: str | None = None
    ) -> PasswordResetAccepted:
        """Ask the Console to mail a reset link (Dashboard key); the same answer whether
        or not the account exists. `address` is the end user's IP, for throttling."""
        return self.call(calls.request_password_reset(email, address))

    def confirm_password_reset(
        self, token: str | SecretStr, password: str | SecretStr
    ) -> UserPublic:
        """Set a new password with a reset link's token (Dashboard key); it works once."""
        return self.call(calls.confirm_password_reset(token, password))

    def change_password(
        self,
        current_password: str | SecretStr,
        password: str | SecretStr,
        *,
        address: str | None = None,
    ) -> LoginResponse:
        """Change the acting user's password; the answer's token replaces this client's
        (every other session of the user ends)."""
        return self.call(calls.change_password(current_password, password, address))

    # Service users

    def list_service_users(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[ServiceUserPublic]:
        return self.call(calls.list_service_users(q=q, sort=sort, limit=limit, cursor=cursor))

    def create_service_user(self, data: ServiceUserCreate) -> ServiceUserPublic:
        return self.call(calls.create_service_user(data))

    def get_service_user(self, ref: Ref) -> ServiceUserPublic:
        return self.call(calls.get_service_user(ref))

    def update_service_user(self, ref: Ref, data: ServiceUserUpdate) -> ServiceUserPublic:
        return self.call(calls.update_service_user(ref, data))

    def delete_service_user(self, ref: Ref) -> None:
        return self.call(calls.delete_service_user(ref))

    # App keys

    def list_keys(
        self,
        *,
        owner_type: OwnerType | str | None = None,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[KeyPublic]:
        """Keys, never with their secrets."""
        return self.call(
            calls.list_keys(owner_type=owner_type, q=q, sort=sort, limit=limit, cursor=cursor)
        )

    def create_key(self, data: KeyCreate) -> KeyWithSecret:
        """A new key; its secret is in the answer, and never again."""
        return self.call(calls.create_key(data))

    def get_key(self, client_id: str) -> KeyPublic:
        return self.call(calls.get_key(client_id))

    def revoke_key(self, client_id: str) -> None:
        return self.call(calls.revoke_key(client_id))

    def rotate_key(self, client_id: str, *, grace_hours: int | None = None) -> KeyWithSecret:
        """A successor key; the old one ends at the new one's first use or after the grace."""
        return self.call(calls.rotate_key(client_id, grace_hours))

    # Instances and jobs

    def list_instances(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[InstancePublic]:
        """Instances (a user sees their own)."""
        return self.call(calls.list_instances(q=q, sort=sort, limit=limit, cursor=cursor))

    def get_instance(self, name: str) -> InstancePublic:
        return self.call(calls.get_instance(name))

    def get_instance_config(self, name: str) -> InstanceConfig:
        """What the web tier needs to serve an instance (web servers' keys, administrators);
        its `database_url` holds the instance's database password."""
        return self.call(calls.get_instance_config(name))

    def list_instance_changes(self, since: str | None = None) -> InstanceChanges:
        """Instances whose config changed since the cursor of the previous answer."""
        return self.call(calls.list_instance_changes(since))

    def get_instance_api_key(self, name: str) -> InstanceApiKey:
        """The key of an instance's runtime API (its owner and administrators)."""
        return self.call(calls.get_instance_api_key(name))

    def launch_instance(self, data: InstanceCreate) -> InstanceLaunched:
        """Launch an instance; 202: the returned job provisions it (follow with get_job)."""
        return self.call(calls.launch_instance(data))

    def delete_instance(self, name: str) -> InstanceLaunched:
        """Delete an instance; the returned job drops its data and archives its records."""
        return self.call(calls.delete_instance(name))

    def list_jobs(
        self,
        *,
        q: str | None = None,
        status: JobStatus | None = None,
        kind: JobKind | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[JobPublic]:
        """Jobs, newest first by default (a user sees their own); `q` searches instance
        names, `status` and `kind` keep the jobs in that state, of that kind."""
        call = calls.list_jobs(q=q, status=status, kind=kind, sort=sort, limit=limit, cursor=cursor)
        return self.call(call)

    def get_job(self, job_id: int) -> JobPublic:
        return self.call(calls.get_job(job_id))

    # Snapshots

    def export_instance(self, name: str) -> SnapshotJob:
        """Export an instance to a snapshot; 202: follow the job with get_job."""
        return self.call(calls.export_instance(name))

    def import_snapshot(self, name: str, data: ImportRequest) -> SnapshotJob:
        """Import one of your snapshots into `name` (launched first if it does not exist)."""
        return self.call(calls.import_snapshot(name, data))

    def upload_snapshot(
        self,
        name: str,
        archive: bytes,
        cluster: str | None = None,
        owner: str | None = None,
    ) -> SnapshotJob:
        """Upload an archive and import it into `name` (verified by the job before use)."""
        return self.call(calls.upload_snapshot(name, archive, cluster, owner))

    def move_instance(self, name: str, data: MoveRequest) -> SnapshotJob:
        """Move an instance's database to another db server (administrators)."""
        return self.call(calls.move_instance(name, data))

    def list_snapshots(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[SnapshotPublic]:
        return self.call(calls.list_snapshots(q=q, sort=sort, limit=limit, cursor=cursor))

    def get_snapshot(self, snapshot_id: int) -> SnapshotPublic:
        return self.call(calls.get_snapshot(snapshot_id))

    def delete_snapshot(self, snapshot_id: int) -> None:
        return self.call(calls.delete_snapshot(snapshot_id))

    def snapshot_link(self, snapshot_id: int) -> SnapshotLink:
        """A signed download link (it works for the snapshot's owner only)."""
        return self.call(calls.snapshot_link(snapshot_id))

    def download_snapshot(self, snapshot_id: int, expires: int, signature: str) -> bytes:
        return self.call(calls.download_snapshot(snapshot_id, expires, signature))

    # The archive

    def list_archived(
        self,
        kind: ArchiveKind | str,
        *,
        q: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[ArchivedPublic]:
        """Archived clusters, servers or instances, newest first; `q` matches the name."""
        return self.call(calls.list_archived(kind, q=q, limit=limit, cursor=cursor))

    def get_archived(self, kind: ArchiveKind | str, ref: Ref) -> ArchivedPublic:
        """The most recent archived row of a name or id."""
        return self.call(calls.get_archived(kind, ref))

    def restore_archived(self, kind: ArchiveKind | str, ref: Ref) -> ArchivedPublic:
        """Bring back the most recent archived batch of a name or id."""
        return self.call(calls.restore_archived(kind, ref))

    # Limits

    def list_limits(
        self,
        *,
        q: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[LimitPublic]:
        return self.call(calls.list_limits(q=q, sort=sort, limit=limit, cursor=cursor))

    def create_limit(self, data: LimitCreate) -> LimitPublic:
        return self.call(calls.create_limit(data))

    def get_limit(self, ref: Ref) -> LimitPublic:
        return self.call(calls.get_limit(ref))

    def update_limit(self, ref: Ref, data: LimitUpdate) -> LimitPublic:
        return self.call(calls.update_limit(ref, data))

    def delete_limit(self, ref: Ref) -> None:
        return self.call(calls.delete_limit(ref))

    def reset_limit(self, ref: Ref) -> LimitsReset:
        """Start the limit's counters from zero, in every web-tier process."""
        return self.call(calls.reset_limit(ref))

    # Usage metrics

    def list_metrics(
        self, *, instance: str | None = None, since: date | None = None, until: date | None = None
    ) -> MetricsPage:
        """Usage per instance per day (an administrator: all; a user: their own instances)."""
        return self.call(calls.list_metrics(instance=instance, since=since, until=until))

    def report_requests(self, data: RequestCounts) -> None:
        """Add a web-tier process's request counts to metrics_t (web servers' keys)."""
        return self.call(calls.report_requests(data))

    # The audit log

    def list_audit(
        self,
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
    ) -> Page[AuditPublic]:
        """The audit log, newest first by default; `actor` matches part of the actor,
        `target` a target's name, `action` exactly (e.g. "cluster.delete")."""
        return self.call(
            calls.list_audit(
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
        )
