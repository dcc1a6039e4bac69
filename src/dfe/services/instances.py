"""Instance records: creation with guest row, server assignments and key; deletion to the archive.

Provisioning the instance's database and storage is the provisioning engine's
job; this module only keeps the control plane's records consistent.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Protocol

from sqlalchemy import Row, Select, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dfe.db.base import utcnow
from dfe.db.session import execute_prebuilt
from dfe.enums import ProvisionState
from dfe.models import (
    ARCHIVED_TABLES,
    AppKey,
    Cluster,
    GuestLocation,
    Instance,
    InstanceGuest,
    InstanceServer,
    OwnerType,
    Server,
    ServerType,
    User,
)
from dfe.provisioning.drivers import InstanceDatabase, driver_for
from dfe.provisioning.errors import StorageError
from dfe.provisioning.names import generate_password
from dfe.provisioning.storage import LocalStorage
from dfe.schemas import (
    InstanceApiKey,
    InstanceAppKey,
    InstanceChange,
    InstanceChanges,
    InstanceConfig,
    InstancePublic,
)
from dfe.services import audit
from dfe.services.base import add_inserted, get_by_ref, insert_row, new_row, snapshot
from dfe.services.errors import Conflict, InvalidInput, NotFound
from dfe.services.keys import create_key, expired
from dfe.services.names import instance_name_problem


def get_instance(session: Session, ref: str | int) -> Instance:
    return get_by_ref(session, Instance, ref, "instance")


def list_instances(session: Session, user: User | None = None) -> list[Instance]:
    query = instance_query(owner_id=user.id if user is not None else None)
    return list(session.scalars(query.order_by(Instance.name)))


def instance_query(owner_id: int | None = None, only_id: int | None = None) -> Select[Any]:
    """Instances a caller may see: all, one user's (`owner_id`), or one (`only_id`)."""
    query = select(Instance)
    if owner_id is not None:
        query = query.where(Instance.user_id == owner_id)
    if only_id is not None:
        query = query.where(Instance.id == only_id)
    return query


# An instance's public view as plain columns, labelled as InstancePublic's fields (and the
# cluster's subdomain, for the host): no instance, owner or cluster object is loaded.
_VIEW = (
    select(
        Instance.id,
        Instance.name,
        Cluster.subdomain,
        User.email.label("owner"),
        Cluster.name.label("cluster"),
        *(
            select(Server.name).where(Server.id == column).scalar_subquery().label(label)
            for label, column in (
                ("db_server", Instance.db_server_id),
                ("web_server", Instance.web_server_id),
                ("app_server", Instance.app_server_id),
            )
        ),
        Instance.provision_state,
        Instance.ready_state,
        Instance.operational_state,
        Instance.state_changed_at,
        Instance.created_at,
        Instance.updated_at,
    )
    .select_from(Instance)
    .join(User, User.id == Instance.user_id)
    .join(Cluster, Cluster.id == Instance.cluster_id)
)


def _view_public(row: Row[Any]) -> InstancePublic:
    view = dict(row._mapping)
    view["host"] = instance_host(view["name"], view.pop("subdomain"))
    return InstancePublic(**view)


@cache
def _live_view(by_owner: bool, by_id: bool) -> Select[Any]:
    """`find_instance`'s query of live instances, built once per scope (building and
    keying it cost as much as running it)."""
    query = _VIEW.where(Instance.name == bindparam("p_name"))
    if by_owner:
        query = query.where(Instance.user_id == bindparam("p_owner"))
    if by_id:
        query = query.where(Instance.id == bindparam("p_only"))
    return query


def find_instance(
    session: Session, name: str, owner_id: int | None = None, only_id: int | None = None
) -> InstancePublic:
    """The status of a live or archived instance the caller may see; NotFound otherwise
    (also for someone else's instance: its existence is not revealed)."""
    name = name.strip().lower()
    scope = {"p_name": name, "p_owner": owner_id, "p_only": only_id}
    query = _live_view(owner_id is not None, only_id is not None)
    live = execute_prebuilt(session, query, scope).first()
    if live is not None:
        return _view_public(live)
    archive = ARCHIVED_TABLES[Instance.__table__]  # type: ignore[index]
    # The names of its owner, cluster and servers, which may be archived too (then "#id").
    names = [
        select(column).where(model.id == archive.c[ref]).scalar_subquery().label(label)
        for label, (model, column, ref) in _ARCHIVED_NAMES.items()
    ]
    query = select(archive, *names).where(archive.c.name == name)
    if owner_id is not None:
        query = query.where(archive.c.user_id == owner_id)
    if only_id is not None:
        query = query.where(archive.c.id == only_id)
    row = session.execute(query.order_by(archive.c.archive_id.desc()).limit(1)).first()
    if row is None:
        raise NotFound(f"instance '{name}' does not exist")
    return _archived_public(row._mapping)


_ARCHIVED_NAMES: dict[str, tuple[Any, Any, str]] = {
    "owner": (User, User.email, "user_id"),
    "cluster": (Cluster, Cluster.name, "cluster_id"),
    "db_server": (Server, Server.name, "db_server_id"),
    "web_server": (Server, Server.name, "web_server_id"),
    "app_server": (Server, Server.name, "app_server_id"),
}


def _archived_public(row: Any) -> InstancePublic:
    names = {
        label: row[label] if row[label] is not None else f"#{row[ref]}"
        for label, (_, _, ref) in _ARCHIVED_NAMES.items()
    }
    return InstancePublic(
        id=row["id"],
        name=row["name"],
        host="",
        **names,
        provision_state=row["provision_state"],
        ready_state=row["ready_state"],
        operational_state=row["operational_state"],
        state_changed_at=row["state_changed_at"],
        created_at=row["created_at"],
        updated_at=row["archived_at"],
        archived=True,
    )


class ClusterRef(Protocol):
    """A cluster as placement hands it over (a `Cluster` row will do)."""

    @property
    def id(self) -> int: ...
    @property
    def subdomain(self) -> str: ...


class ServerRef(Protocol):
    """A server as placement hands it over (a `Server` row will do)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def server_type(self) -> ServerType: ...


# A launch's rows, inserted as statements: a launch holds the database's write lock
# while they go, and through the ORM's flushes they took three times as long.
_INSERT_INSTANCE = insert(Instance)
_INSERT_GUEST = insert(InstanceGuest)
_INSERT_ASSIGNMENT = insert(InstanceServer)


def create_instance_record(
    session: Session,
    name: str,
    user: User,
    cluster: ClusterRef,
    servers: Mapping[ServerType, ServerRef],
) -> Instance:
    """Insert an instance placed on `servers`, with its guest row, assignments and key."""
    problem = instance_name_problem(name)
    if problem:
        raise InvalidInput(f"instance name '{name}' {problem}")
    if set(servers) != set(ServerType):
        raise InvalidInput("an instance needs a db, a web and an app server")
    for server_type, server in servers.items():
        if server.server_type != server_type:
            raise InvalidInput(f"server '{server.name}' is not a {server_type.value} server")
    row = new_row(
        Instance,
        name=name,
        user_id=user.id,
        owner_type=OwnerType.USER.value,
        owner_id=user.id,
        cluster_id=cluster.id,
        db_server_id=servers[ServerType.DB].id,
        web_server_id=servers[ServerType.WEB].id,
        app_server_id=servers[ServerType.APP].id,
        storage_key=secrets.token_hex(16),
        api_key=new_api_key(),
        db_password=generate_password(),
    )
    try:
        instance_id = insert_row(session, _INSERT_INSTANCE, row)
    except IntegrityError:  # a launch of the same name won the race
        raise Conflict(f"an instance named '{name}' already exists") from None
    instance = add_inserted(session, Instance(id=instance_id, **row))
    execute_prebuilt(
        session,
        _INSERT_GUEST,
        {
            "instance_id": instance.id,
            "location": GuestLocation.DFE_CLUSTER,
            "public_host": instance_host(name, cluster.subdomain),
        },
    )
    execute_prebuilt(
        session,
        _INSERT_ASSIGNMENT,
        [
            {"instance_id": instance.id, "server_id": server_id}
            for server_id in sorted({server.id for server in servers.values()})
        ],
    )
    # The instance is new, so the web tier learns of it (and of its key) through its
    # own row: no need to announce the key.
    create_key(session, OwnerType.INSTANCE, instance.id, label=f"instance {name}", announce=False)
    audit.record(
        session, "instance.create", "instance", instance.id, name, after=snapshot(instance)
    )
    return instance


def delete_instance_record(session: Session, ref: str | int) -> None:
    """Archive an instance with its guest rows and assignments; its keys are destroyed."""
    instance = get_instance(session, ref)
    audit.record(
        session,
        "instance.delete",
        "instance",
        instance.id,
        instance.name,
        before=snapshot(instance),
    )
    session.delete(instance)
    session.flush()


def instance_host(name: str, subdomain: str) -> str:
    """Where an instance answers: `<name>.<cluster subdomain>`."""
    return f"{name}.{subdomain}"


def host_of(instance: Instance) -> str:
    return instance_host(instance.name, instance.cluster.subdomain)


def instance_publics(session: Session, rows: Sequence[Instance]) -> list[InstancePublic]:
    """Public views of many instances, in one query."""
    if not rows:
        return []
    query = _VIEW.where(Instance.id.in_([instance.id for instance in rows]))
    views = {row.id: _view_public(row) for row in session.execute(query)}
    return [views[instance.id] for instance in rows]


def instance_public(session: Session, instance: Instance) -> InstancePublic:
    return instance_publics(session, [instance])[0]


# The web tier's view: an instance's config, the change feed, the runtime API key

API_KEY_PREFIX = "dfei_"
# How far back each change-feed cursor reaches: a row whose commit lagged its updated_at
# (or whose writer's clock is a little behind) is still seen; the web tier skips repeats.
CHANGES_OVERLAP = timedelta(seconds=15)
MAX_CHANGES = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_CURSOR = (datetime(9999, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


def new_api_key() -> str:
    """256 random bits: an instance runtime's API key."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_digest(api_key: str) -> str:
    """What the web tier holds and compares (a hash suffices: the key is 256 random bits)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def _live(
    session: Session, name: str, *, web_server_id: int | None = None, owner_id: int | None = None
) -> Instance:
    name = name.strip().lower()
    query = instance_query(owner_id).where(Instance.name == name)
    if web_server_id is not None:
        query = query.where(Instance.web_server_id == web_server_id)
    instance: Instance | None = session.scalar(query)
    if instance is None:
        raise NotFound(f"instance '{name}' does not exist")
    return instance


def instance_config(
    session: Session, name: str, web_server_id: int | None = None
) -> InstanceConfig:
    """What the web tier needs to serve a live instance; with `web_server_id`, only an
    instance placed on that web server (others: NotFound)."""
    from dfe.services.limits import limits_for_instance  # limits refers to instances

    instance = _live(session, name, web_server_id=web_server_id)
    config = InstanceConfig(
        id=instance.id,
        name=instance.name,
        host=host_of(instance),
        cluster=instance.cluster.name,
        provision_state=instance.provision_state,
        ready_state=instance.ready_state,
        operational_state=instance.operational_state,
        database_url=_database_url(instance),
        storage_root=_storage_root(instance),
        api_key_sha256=api_key_digest(instance.api_key) if instance.api_key else None,
        app_keys=_app_keys(session, instance),
        limits=limits_for_instance(session, instance),
        read_only=bool((instance.data or {}).get("read_only")),
        version="",
        changed_at=instance.updated_at,
    )
    document = config.model_dump(mode="json", exclude={"version", "changed_at"})
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    return config.model_copy(update={"version": digest[:16]})


def _app_keys(session: Session, instance: Instance) -> list[InstanceAppKey]:
    """The instance's unexpired app keys, as hashes of their secrets."""
    rows = session.scalars(
        select(AppKey)
        .where(AppKey.owner_type == OwnerType.INSTANCE, AppKey.instance_id == instance.id)
        .order_by(AppKey.id)
    )
    return [
        InstanceAppKey(
            client_id=key.client_id,
            secret_sha256=api_key_digest(key.client_secret),
            expires_at=key.expires_at,
        )
        for key in rows
        if not expired(key.expires_at)
    ]


def _database_url(instance: Instance) -> str | None:
    """The instance's own database URL, once provisioning has recorded its credentials."""
    if instance.provision_state is not ProvisionState.PROVISIONED or not instance.db_name:
        return None
    server = instance.db_server
    try:
        driver = driver_for({"host": server.host, **server.config})
    except ValueError:
        return None  # a db server without a usable driver: the web tier answers 503
    database = InstanceDatabase(
        driver.kind,
        instance.db_name,
        instance.db_user or "",
        instance.db_password or "",
        host=instance.db_host,
        port=instance.db_port,
    )
    return driver.url_for(database)


def _storage_root(instance: Instance) -> str | None:
    mount = instance.web_server.mount
    if mount is None:
        return None
    try:
        paths = LocalStorage(mount.root_path).paths(instance.user.storage_key, instance.name)
    except (StorageError, ValueError):
        return None
    return str(paths.instance_root)


def encode_cursor(at: datetime) -> str:
    return str((at - _EPOCH) // timedelta(microseconds=1))


def decode_cursor(cursor: str) -> datetime:
    if not cursor.isdigit() or len(cursor) > 19 or int(cursor) > _LAST_CURSOR:
        raise InvalidInput("since: not a cursor from this feed")
    return _EPOCH + timedelta(microseconds=int(cursor))


def instance_changes(
    session: Session, since: str | None, web_server_id: int | None = None
) -> InstanceChanges:
    """Instances (on one web server, or all) whose row changed, or that were archived,
    since the cursor; without one, only a cursor to start from."""
    cursor = encode_cursor(utcnow() - CHANGES_OVERLAP)
    if since is None:
        return InstanceChanges(cursor=cursor, changes=[])
    start = decode_cursor(since)
    live = select(Instance.id, Instance.name, Instance.updated_at).where(
        Instance.updated_at >= start
    )
    archive = ARCHIVED_TABLES[Instance.__table__]  # type: ignore[index]
    gone = select(archive.c.id, archive.c.name, archive.c.archived_at).where(
        archive.c.archived_at >= start
    )
    if web_server_id is not None:
        live = live.where(Instance.web_server_id == web_server_id)
        gone = gone.where(archive.c.web_server_id == web_server_id)
    changes = [
        InstanceChange(id=row[0], name=row[1], changed_at=row[2])
        for row in session.execute(live.order_by(Instance.updated_at).limit(MAX_CHANGES + 1))
    ]
    changes += [
        InstanceChange(id=row[0], name=row[1], changed_at=row[2], archived=True)
        for row in session.execute(gone.order_by(archive.c.archived_at).limit(MAX_CHANGES + 1))
    ]
    if len(changes) > MAX_CHANGES:
        return InstanceChanges(cursor=cursor, changes=[], reset=True)
    return InstanceChanges(cursor=cursor, changes=changes)


def instance_api_key(session: Session, name: str, owner_id: int | None = None) -> InstanceApiKey:
    """A live instance's runtime API key (made now for an instance that has none)."""
    instance = _live(session, name, owner_id=owner_id)
    if instance.api_key is None:
        instance.api_key = new_api_key()
        audit.record(session, "instance.api_key", "instance", instance.id, instance.name)
        session.flush()
    return InstanceApiKey(name=instance.name, api_key=instance.api_key)
