"""What the admin commands do, in one place, whichever way they reach DFE.

`Backend` lists the operations the commands need; `LocalBackend` does them on
this machine's database through the services (one transaction per call),
`RemoteBackend` through the Console API with the ops client (`dfe --remote URL`).
Both answer with the Public models of `dfe.schemas`, so a command prints the
same tables and JSON either way, and both fail with `DfeError`s or the client's
typed errors, which `DfeGroup` turns into one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Protocol, TypeVar

from dfe.cli.common import (
    RemoteTarget,
    database,
    fail,
    reading,
    remote_target,
    settings,
    transaction,
)
from dfe.client import ConsoleClient, Page
from dfe.enums import JobKind, JobStatus, OwnerType, ServerType
from dfe.jobs.queue import dispatcher_for
from dfe.provisioning import engine
from dfe.schemas import (
    ArchivedPublic,
    AuditPublic,
    ClusterCreate,
    ClusterPublic,
    ClusterUpdate,
    InstanceApiKey,
    InstanceCreate,
    InstanceLaunched,
    InstancePublic,
    JobPublic,
    KeyCreate,
    KeyPublic,
    KeyWithSecret,
    LimitCreate,
    LimitPublic,
    LimitUpdate,
    MetricPublic,
    MountCreate,
    MountPublic,
    MountUpdate,
    ServerCreate,
    ServerPublic,
    ServerUpdate,
    ServiceUserCreate,
    ServiceUserPublic,
    ServiceUserUpdate,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from dfe.services import archive, identity, instances, jobs, keys, limits, metrics
from dfe.services import audit as audit_service
from dfe.services import infrastructure as estate
from dfe.services.errors import Conflict, InvalidInput, NotFound

T = TypeVar("T")

KEY_FILE = "console.key"


class Backend(Protocol):
    """The operations of the admin commands. Names are names or emails (or ids)."""

    def close(self) -> None: ...

    # Mounts, servers, clusters

    def create_mount(self, data: MountCreate) -> MountPublic: ...
    def list_mounts(self) -> list[MountPublic]: ...
    def get_mount(self, name: str) -> MountPublic: ...
    def update_mount(self, name: str, data: MountUpdate) -> MountPublic: ...
    def delete_mount(self, name: str) -> None: ...

    def create_server(self, data: ServerCreate) -> ServerPublic: ...
    def list_servers(self, server_type: ServerType | None = None) -> list[ServerPublic]: ...
    def get_server(self, name: str) -> ServerPublic: ...
    def update_server(self, name: str, data: ServerUpdate) -> ServerPublic: ...
    def delete_server(self, name: str) -> None: ...

    def create_cluster(self, data: ClusterCreate) -> ClusterPublic: ...
    def list_clusters(self) -> list[ClusterPublic]: ...
    def get_cluster(self, name: str) -> ClusterPublic: ...
    def update_cluster(self, name: str, data: ClusterUpdate) -> ClusterPublic: ...
    def delete_cluster(self, name: str) -> None: ...
    def assign_server(self, cluster: str, server: str) -> None: ...
    def unassign_server(self, cluster: str, server: str) -> None: ...

    # People

    def create_user(self, data: UserCreate) -> UserPublic: ...
    def list_users(self) -> list[UserPublic]: ...
    def get_user(self, email: str) -> UserPublic: ...
    def update_user(self, email: str, data: UserUpdate) -> UserPublic: ...
    def delete_user(self, email: str) -> None: ...

    def create_service_user(self, data: ServiceUserCreate) -> ServiceUserPublic: ...
    def list_service_users(self) -> list[ServiceUserPublic]: ...
    def get_service_user(self, email: str) -> ServiceUserPublic: ...
    def update_service_user(self, email: str, data: ServiceUserUpdate) -> ServiceUserPublic: ...
    def delete_service_user(self, email: str) -> None: ...

    # App keys

    def create_key(self, data: KeyCreate) -> KeyWithSecret: ...
    def list_keys(
        self, owner_type: OwnerType | None = None, owner: str | None = None
    ) -> list[KeyPublic]: ...
    def revoke_key(self, client_id: str) -> None: ...
    def rotate_key(self, client_id: str, grace_hours: int | None = None) -> KeyWithSecret: ...

    # The archive (kind: "cluster", "server" or "instance")

    def list_archived(
        self, kind: str, *, name: str | None, limit: int
    ) -> tuple[list[ArchivedPublic], int]: ...
    def show_archived(self, kind: str, name: str) -> ArchivedPublic: ...
    def restore(self, kind: str, name: str) -> ArchivedPublic: ...

    # Instances and jobs

    def list_instances(self, owner: str | None = None) -> list[InstancePublic]: ...
    def get_instance(self, name: str) -> InstancePublic: ...
    def provision(self, data: InstanceCreate) -> InstanceLaunched: ...
    def deprovision(self, name: str) -> JobPublic: ...
    def list_jobs(
        self, *, status: JobStatus | None, kind: JobKind | None, limit: int
    ) -> list[JobPublic]: ...
    def get_job(self, job_id: int) -> JobPublic: ...
    def instance_api_key(self, name: str) -> InstanceApiKey: ...

    # Limits and usage metrics

    def create_limit(self, data: LimitCreate) -> LimitPublic: ...
    def list_limits(self) -> list[LimitPublic]: ...
    def get_limit(self, label: str) -> LimitPublic: ...
    def update_limit(self, label: str, data: LimitUpdate) -> LimitPublic: ...
    def delete_limit(self, label: str) -> None: ...
    def reset_limit(self, label: str) -> LimitPublic: ...
    def list_metrics(
        self, *, instance: str | None, since: date | None, until: date | None
    ) -> list[MetricPublic]: ...

    # The audit log

    def audit(
        self, *, actor: str | None, target: str | None, action: str | None, limit: int
    ) -> list[AuditPublic]: ...


_current: Backend | None = None


def backend() -> Backend:
    """The backend of this invocation: remote with `--remote URL`, else local.

    Made on first use; the root command closes it when the command ends.
    """
    global _current
    if _current is None:
        target = remote_target()
        _current = RemoteBackend.open(target) if target else LocalBackend()
    return _current


def close_backend() -> None:
    global _current
    found, _current = _current, None
    if found is not None:
        found.close()


# This machine's database, through the services


class LocalBackend:
    """Each call opens its own transaction (or read session), as one command did."""

    def close(self) -> None:
        return None

    # Mounts

    def create_mount(self, data: MountCreate) -> MountPublic:
        with transaction() as session:
            return estate.mount_public(estate.create_mount(session, data))

    def list_mounts(self) -> list[MountPublic]:
        with reading() as session:
            return [estate.mount_public(m) for m in estate.list_mounts(session)]

    def get_mount(self, name: str) -> MountPublic:
        with reading() as session:
            return estate.mount_public(estate.get_mount(session, name))

    def update_mount(self, name: str, data: MountUpdate) -> MountPublic:
        with transaction() as session:
            return estate.mount_public(estate.update_mount(session, name, data))

    def delete_mount(self, name: str) -> None:
        with transaction() as session:
            estate.delete_mount(session, name)

    # Servers

    def create_server(self, data: ServerCreate) -> ServerPublic:
        with transaction() as session:
            return estate.server_public(estate.create_server(session, data))

    def list_servers(self, server_type: ServerType | None = None) -> list[ServerPublic]:
        with reading() as session:
            return [estate.server_public(s) for s in estate.list_servers(session, server_type)]

    def get_server(self, name: str) -> ServerPublic:
        with reading() as session:
            return estate.server_public(estate.get_server(session, name))

    def update_server(self, name: str, data: ServerUpdate) -> ServerPublic:
        with transaction() as session:
            return estate.server_public(estate.update_server(session, name, data))

    def delete_server(self, name: str) -> None:
        with transaction() as session:
            estate.delete_server(session, name)

    # Clusters

    def create_cluster(self, data: ClusterCreate) -> ClusterPublic:
        with transaction() as session:
            return estate.cluster_public(session, estate.create_cluster(session, data))

    def list_clusters(self) -> list[ClusterPublic]:
        with reading() as session:
            return estate.cluster_publics(session, estate.list_clusters(session))

    def get_cluster(self, name: str) -> ClusterPublic:
        with reading() as session:
            return estate.cluster_public(session, estate.get_cluster(session, name))

    def update_cluster(self, name: str, data: ClusterUpdate) -> ClusterPublic:
        with transaction() as session:
            return estate.cluster_public(session, estate.update_cluster(session, name, data))

    def delete_cluster(self, name: str) -> None:
        with transaction() as session:
            estate.delete_cluster(session, name)

    def assign_server(self, cluster: str, server: str) -> None:
        with transaction() as session:
            estate.assign_server(session, cluster, server)

    def unassign_server(self, cluster: str, server: str) -> None:
        with transaction() as session:
            estate.unassign_server(session, cluster, server)

    # Users

    def create_user(self, data: UserCreate) -> UserPublic:
        with transaction() as session:
            return UserPublic.model_validate(identity.create_user(session, data))

    def list_users(self) -> list[UserPublic]:
        with reading() as session:
            return [UserPublic.model_validate(u) for u in identity.list_users(session)]

    def get_user(self, email: str) -> UserPublic:
        with reading() as session:
            return UserPublic.model_validate(identity.get_user(session, email))

    def update_user(self, email: str, data: UserUpdate) -> UserPublic:
        with transaction() as session:
            return UserPublic.model_validate(identity.update_user(session, email, data))

    def delete_user(self, email: str) -> None:
        with transaction() as session:
            identity.delete_user(session, email)

    # Service users

    def create_service_user(self, data: ServiceUserCreate) -> ServiceUserPublic:
        with transaction() as session:
            return ServiceUserPublic.model_validate(identity.create_service_user(session, data))

    def list_service_users(self) -> list[ServiceUserPublic]:
        with reading() as session:
            people = identity.list_service_users(session)
            return [ServiceUserPublic.model_validate(p) for p in people]

    def get_service_user(self, email: str) -> ServiceUserPublic:
        with reading() as session:
            return ServiceUserPublic.model_validate(identity.get_service_user(session, email))

    def update_service_user(self, email: str, data: ServiceUserUpdate) -> ServiceUserPublic:
        with transaction() as session:
            person = identity.update_service_user(session, email, data)
            return ServiceUserPublic.model_validate(person)

    def delete_service_user(self, email: str) -> None:
        with transaction() as session:
            identity.delete_service_user(session, email)

    # App keys

    def create_key(self, data: KeyCreate) -> KeyWithSecret:
        with transaction() as session:
            owner_id = keys.resolve_owner(session, data.owner_type, data.owner)
            return keys.create_key(
                session, data.owner_type, owner_id, label=data.label, expires_at=data.expires_at
            )

    def list_keys(
        self, owner_type: OwnerType | None = None, owner: str | None = None
    ) -> list[KeyPublic]:
        with reading() as session:
            owner_id = (
                keys.resolve_owner(session, owner_type, owner) if owner_type and owner else None
            )
            return [keys.public(k) for k in keys.list_keys(session, owner_type, owner_id)]

    def revoke_key(self, client_id: str) -> None:
        with transaction() as session:
            keys.revoke_key(session, client_id)

    def rotate_key(self, client_id: str, grace_hours: int | None = None) -> KeyWithSecret:
        hours = settings().key_rotation_grace_hours if grace_hours is None else grace_hours
        with transaction() as session:
            return keys.rotate_key(session, client_id, timedelta(hours=hours))

    # The archive

    def list_archived(
        self, kind: str, *, name: str | None, limit: int
    ) -> tuple[list[ArchivedPublic], int]:
        with reading() as session:
            return archive.list_archived(session, kind, name=name, limit=limit)

    def show_archived(self, kind: str, name: str) -> ArchivedPublic:
        with reading() as session:
            return archive.show_archived(session, kind, name)

    def restore(self, kind: str, name: str) -> ArchivedPublic:
        with transaction() as session:
            return archive.restore(session, kind, name)

    # Instances and jobs

    def list_instances(self, owner: str | None = None) -> list[InstancePublic]:
        with reading() as session:
            user = identity.get_user(session, owner) if owner else None
            return instances.instance_publics(session, instances.list_instances(session, user))

    def get_instance(self, name: str) -> InstancePublic:
        with reading() as session:
            return instances.find_instance(session, name)

    def provision(self, data: InstanceCreate) -> InstanceLaunched:
        if data.owner is None:
            raise InvalidInput("owner: name the user who will own the instance")
        with transaction() as session:
            user = identity.get_user(session, data.owner)
            cluster = estate.get_cluster(session, data.cluster or settings().default_cluster)
            instance, job = engine.launch(session, user, data.name, cluster.id)
            launched = InstanceLaunched(
                instance=instances.instance_public(session, instance), job=jobs.public(job)
            )
        self._dispatch(launched.job.id)
        return launched

    def deprovision(self, name: str) -> JobPublic:
        with transaction() as session:
            job = jobs.public(engine.request_deprovision(session, name))
        self._dispatch(job.id)
        return job

    def instance_api_key(self, name: str) -> InstanceApiKey:
        with transaction() as session:
            return instances.instance_api_key(session, name)

    # Limits and usage metrics

    def create_limit(self, data: LimitCreate) -> LimitPublic:
        with transaction() as session:
            return limits.limit_publics(session, [limits.create_limit(session, data)])[0]

    def list_limits(self) -> list[LimitPublic]:
        with reading() as session:
            return limits.limit_publics(session, limits.list_limits(session))

    def get_limit(self, label: str) -> LimitPublic:
        with reading() as session:
            return limits.limit_publics(session, [limits.get_limit(session, label)])[0]

    def update_limit(self, label: str, data: LimitUpdate) -> LimitPublic:
        with transaction() as session:
            return limits.limit_publics(session, [limits.update_limit(session, label, data)])[0]

    def delete_limit(self, label: str) -> None:
        with transaction() as session:
            limits.delete_limit(session, label)

    def reset_limit(self, label: str) -> LimitPublic:
        with transaction() as session:
            config = settings()
            found = limits.reset_limits(session, [label], config.redis_url, config.redis_namespace)
            return limits.limit_publics(session, found)[0]

    def list_metrics(
        self, *, instance: str | None, since: date | None, until: date | None
    ) -> list[MetricPublic]:
        with reading() as session:
            return metrics.list_metrics(session, instance=instance, since=since, until=until)

    def _dispatch(self, job_id: int) -> None:
        db = database()
        try:
            dispatcher_for(db, settings()).dispatch(job_id)
        finally:
            db.dispose()

    def list_jobs(
        self, *, status: JobStatus | None, kind: JobKind | None, limit: int
    ) -> list[JobPublic]:
        with reading() as session:
            listed = jobs.list_jobs(session, limit=limit, status=status, kind=kind)
            return [jobs.public(job) for job in listed]

    def get_job(self, job_id: int) -> JobPublic:
        with reading() as session:
            return jobs.public(jobs.get_job(session, job_id))

    # The audit log

    def audit(
        self, *, actor: str | None, target: str | None, action: str | None, limit: int
    ) -> list[AuditPublic]:
        with reading() as session:
            entries = audit_service.entries(
                session, actor=actor, target=target, action=action, limit=limit
            )
            return [AuditPublic.model_validate(entry) for entry in entries]


# A Console, through the ops client

PAGE = 500  # the API's largest page


class RemoteBackend:
    """Every call is one or a few signed API requests. Where the API lacks a filter the
    local command has (server type, key owner, job status, instance owner), the
    listing is fetched whole and filtered here."""

    def __init__(self, client: ConsoleClient) -> None:
        self.client = client

    @classmethod
    def open(cls, target: RemoteTarget) -> RemoteBackend:
        path = target.key_file or settings().data_dir / KEY_FILE
        try:
            client = ConsoleClient.from_key_file(path, base_url=target.url)
        except OSError as error:
            fail(
                f"cannot read the key file {path}: {error.strerror or error}; "
                "name the Console's key with --key-file (dfe setup wrote it as console.key)"
            )
        except ValueError as error:
            fail(str(error))
        return cls(client)

    def close(self) -> None:
        self.client.close()

    def _all(self, list_method: Callable[..., Page[T]], **params: object) -> list[T]:
        return list(self.client.iterate(list_method, limit=PAGE, **params))

    # Mounts

    def create_mount(self, data: MountCreate) -> MountPublic:
        return self.client.create_mount(data)

    def list_mounts(self) -> list[MountPublic]:
        return self._all(self.client.list_mounts)

    def get_mount(self, name: str) -> MountPublic:
        return self.client.get_mount(name)

    def update_mount(self, name: str, data: MountUpdate) -> MountPublic:
        return self.client.update_mount(name, data)

    def delete_mount(self, name: str) -> None:
        self.client.delete_mount(name)

    # Servers

    def create_server(self, data: ServerCreate) -> ServerPublic:
        return self.client.create_server(data)

    def list_servers(self, server_type: ServerType | None = None) -> list[ServerPublic]:
        servers = self._all(self.client.list_servers)
        return [s for s in servers if server_type is None or s.server_type is server_type]

    def get_server(self, name: str) -> ServerPublic:
        return self.client.get_server(name)

    def update_server(self, name: str, data: ServerUpdate) -> ServerPublic:
        return self.client.update_server(name, data)

    def delete_server(self, name: str) -> None:
        self.client.delete_server(name)

    # Clusters

    def create_cluster(self, data: ClusterCreate) -> ClusterPublic:
        return self.client.create_cluster(data)

    def list_clusters(self) -> list[ClusterPublic]:
        return self._all(self.client.list_clusters)

    def get_cluster(self, name: str) -> ClusterPublic:
        return self.client.get_cluster(name)

    def update_cluster(self, name: str, data: ClusterUpdate) -> ClusterPublic:
        return self.client.update_cluster(name, data)

    def delete_cluster(self, name: str) -> None:
        self.client.delete_cluster(name)

    def assign_server(self, cluster: str, server: str) -> None:
        # The API's PUT is idempotent; the command refuses a server already there.
        found, member = self.client.get_cluster(cluster), self.client.get_server(server)
        if member.name in found.servers:
            raise Conflict(f"server '{member.name}' is already in cluster '{found.name}'")
        self.client.assign_server(cluster, server)

    def unassign_server(self, cluster: str, server: str) -> None:
        self.client.unassign_server(cluster, server)

    # Users

    def create_user(self, data: UserCreate) -> UserPublic:
        return self.client.register_user(data)

    def list_users(self) -> list[UserPublic]:
        return self._all(self.client.list_users)

    def get_user(self, email: str) -> UserPublic:
        return self.client.get_user(email)

    def update_user(self, email: str, data: UserUpdate) -> UserPublic:
        return self.client.update_user(email, data)

    def delete_user(self, email: str) -> None:
        self.client.delete_user(email)

    # Service users

    def create_service_user(self, data: ServiceUserCreate) -> ServiceUserPublic:
        return self.client.create_service_user(data)

    def list_service_users(self) -> list[ServiceUserPublic]:
        return self._all(self.client.list_service_users)

    def get_service_user(self, email: str) -> ServiceUserPublic:
        return self.client.get_service_user(email)

    def update_service_user(self, email: str, data: ServiceUserUpdate) -> ServiceUserPublic:
        return self.client.update_service_user(email, data)

    def delete_service_user(self, email: str) -> None:
        self.client.delete_service_user(email)

    # App keys

    def create_key(self, data: KeyCreate) -> KeyWithSecret:
        return self.client.create_key(data)

    def list_keys(
        self, owner_type: OwnerType | None = None, owner: str | None = None
    ) -> list[KeyPublic]:
        found = self._all(self.client.list_keys, owner_type=owner_type)
        if owner_type and owner:
            owner_id = self._owner_id(owner_type, owner)
            found = [key for key in found if key.owner_id == owner_id]
        return sorted(found, key=lambda key: key.id)

    def _owner_id(self, owner_type: OwnerType, ref: str) -> int:
        """The id of a key's owner (the API lists keys by owner type only)."""
        lookups: dict[OwnerType, Callable[[str], object]] = {
            OwnerType.USER: self.client.get_user,
            OwnerType.SERVICE_USER: self.client.get_service_user,
            OwnerType.INSTANCE: self._live_instance,
            OwnerType.SERVER: self.client.get_server,
            OwnerType.MOUNT: self.client.get_mount,
            OwnerType.CLUSTER: self.client.get_cluster,
        }
        if owner_type not in lookups:
            raise InvalidInput(f"a {owner_type.value} key belongs to the system and takes no owner")
        owner_id = getattr(lookups[owner_type](ref), "id", None)
        assert isinstance(owner_id, int)
        return owner_id

    def _live_instance(self, name: str) -> InstancePublic:
        instance = self.client.get_instance(name)
        if instance.archived:
            raise NotFound(f"instance '{name}' does not exist")
        return instance

    def revoke_key(self, client_id: str) -> None:
        self.client.revoke_key(client_id)

    def rotate_key(self, client_id: str, grace_hours: int | None = None) -> KeyWithSecret:
        return self.client.rotate_key(client_id, grace_hours=grace_hours)

    # The archive

    def list_archived(
        self, kind: str, *, name: str | None, limit: int
    ) -> tuple[list[ArchivedPublic], int]:
        rows: list[ArchivedPublic] = []
        cursor: str | None = None
        while True:
            page = self.client.list_archived(
                kind + "s", q=name or None, limit=min(PAGE, limit - len(rows)), cursor=cursor
            )
            rows += page.items
            if len(rows) >= limit or not page.items or not page.next_cursor:
                return rows, page.total
            cursor = page.next_cursor

    def show_archived(self, kind: str, name: str) -> ArchivedPublic:
        return self.client.get_archived(kind + "s", name)

    def restore(self, kind: str, name: str) -> ArchivedPublic:
        return self.client.restore_archived(kind + "s", name)

    # Instances and jobs

    def list_instances(self, owner: str | None = None) -> list[InstancePublic]:
        email = self.client.get_user(owner).email if owner else None
        found = self._all(self.client.list_instances)
        return [i for i in found if email is None or i.owner == email]

    def get_instance(self, name: str) -> InstancePublic:
        return self.client.get_instance(name)

    def provision(self, data: InstanceCreate) -> InstanceLaunched:
        return self.client.launch_instance(data)

    def deprovision(self, name: str) -> JobPublic:
        return self.client.delete_instance(name).job

    def list_jobs(
        self, *, status: JobStatus | None, kind: JobKind | None, limit: int
    ) -> list[JobPublic]:
        pages = self.client.iterate(
            self.client.list_jobs,
            status=status,
            kind=kind,
            sort="-created_at",
            limit=min(PAGE, limit + 1),
        )
        return _newest(pages, limit, lambda job: job.created_at, lambda job: job.id)

    def get_job(self, job_id: int) -> JobPublic:
        return self.client.get_job(job_id)

    def instance_api_key(self, name: str) -> InstanceApiKey:
        return self.client.get_instance_api_key(name)

    # Limits and usage metrics

    def create_limit(self, data: LimitCreate) -> LimitPublic:
        return self.client.create_limit(data)

    def list_limits(self) -> list[LimitPublic]:
        return sorted(self._all(self.client.list_limits), key=lambda limit: limit.id)

    def get_limit(self, label: str) -> LimitPublic:
        return self.client.get_limit(label)

    def update_limit(self, label: str, data: LimitUpdate) -> LimitPublic:
        return self.client.update_limit(label, data)

    def delete_limit(self, label: str) -> None:
        self.client.delete_limit(label)

    def reset_limit(self, label: str) -> LimitPublic:
        return self.client.reset_limit(label).limits[0]

    def list_metrics(
        self, *, instance: str | None, since: date | None, until: date | None
    ) -> list[MetricPublic]:
        return self.client.list_metrics(instance=instance, since=since, until=until).items

    # The audit log

    def audit(
        self, *, actor: str | None, target: str | None, action: str | None, limit: int
    ) -> list[AuditPublic]:
        pages = self.client.iterate(
            self.client.list_audit,
            actor=actor,
            target=target,
            action=action,
            sort="-at",
            limit=min(PAGE, limit + 1),
        )
        return _newest(pages, limit, lambda entry: entry.at, lambda entry: entry.id)


def _newest(
    items: Iterable[T], limit: int, when: Callable[[T], datetime], ident: Callable[[T], int]
) -> list[T]:
    """The `limit` newest items, newest (highest id) first, as the local listings give.

    `items` come newest first by time, but the API breaks ties of equal times (one
    transaction's audit entries) by ascending id; read on past the last tie, then
    order by id.
    """
    taken: list[T] = []
    iterator: Iterator[T] = iter(items)
    for item in iterator:
        if len(taken) >= limit and when(item) < when(taken[limit - 1]):
            break
        taken.append(item)
    return sorted(taken, key=ident, reverse=True)[:limit]
