"""Instance records: creation with guest row, server assignments and key; deletion to the archive.

Provisioning the instance's database and storage is the provisioning engine's
job; this module only keeps the control plane's records consistent.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dfe.models import (
    ARCHIVED_TABLES,
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
from dfe.schemas import InstancePublic
from dfe.services import audit
from dfe.services.base import flush_or_conflict, get_by_ref, snapshot
from dfe.services.errors import InvalidInput, NotFound
from dfe.services.keys import create_key
from dfe.services.names import instance_name_problem


def get_instance(session: Session, ref: str | int) -> Instance:
    return get_by_ref(session, Instance, ref, "instance")


def list_instances(session: Session, user: User | None = None) -> list[Instance]:
    query = select(Instance).order_by(Instance.name)
    if user is not None:
        query = query.where(Instance.user_id == user.id)
    return list(session.scalars(query))


def instance_query(owner_id: int | None = None, only_id: int | None = None) -> Select[Any]:
    """Instances a caller may see: all, one user's (`owner_id`), or one (`only_id`)."""
    query = select(Instance)
    if owner_id is not None:
        query = query.where(Instance.user_id == owner_id)
    if only_id is not None:
        query = query.where(Instance.id == only_id)
    return query


def find_instance(
    session: Session, name: str, owner_id: int | None = None, only_id: int | None = None
) -> InstancePublic:
    """The status of a live or archived instance the caller may see; NotFound otherwise
    (also for someone else's instance: its existence is not revealed)."""
    name = name.strip().lower()
    live = session.scalar(instance_query(owner_id, only_id).where(Instance.name == name))
    if live is not None:
        return instance_public(session, live)
    archive = ARCHIVED_TABLES[Instance.__table__]  # type: ignore[index]
    query = select(archive).where(archive.c.name == name)
    if owner_id is not None:
        query = query.where(archive.c.user_id == owner_id)
    if only_id is not None:
        query = query.where(archive.c.id == only_id)
    row = session.execute(query.order_by(archive.c.archive_id.desc()).limit(1)).first()
    if row is None:
        raise NotFound(f"instance '{name}' does not exist")
    return _archived_public(session, row._mapping)


def _archived_public(session: Session, row: Any) -> InstancePublic:
    def name_of(model: Any, row_id: int, column: Any) -> str:
        found = session.scalar(select(column).where(model.id == row_id))
        return str(found) if found is not None else f"#{row_id}"

    return InstancePublic(
        id=row["id"],
        name=row["name"],
        host="",
        owner=name_of(User, row["user_id"], User.email),
        cluster=name_of(Cluster, row["cluster_id"], Cluster.name),
        db_server=name_of(Server, row["db_server_id"], Server.name),
        web_server=name_of(Server, row["web_server_id"], Server.name),
        app_server=name_of(Server, row["app_server_id"], Server.name),
        provision_state=row["provision_state"],
        ready_state=row["ready_state"],
        operational_state=row["operational_state"],
        state_changed_at=row["state_changed_at"],
        created_at=row["created_at"],
        updated_at=row["archived_at"],
        archived=True,
    )


def create_instance_record(
    session: Session,
    name: str,
    user: User,
    cluster: Cluster,
    servers: dict[ServerType, Server],
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
    instance = Instance(
        name=name,
        user_id=user.id,
        owner_type=OwnerType.USER.value,
        owner_id=user.id,
        cluster_id=cluster.id,
        db_server_id=servers[ServerType.DB].id,
        web_server_id=servers[ServerType.WEB].id,
        app_server_id=servers[ServerType.APP].id,
        storage_key=secrets.token_hex(16),
    )
    session.add(instance)
    flush_or_conflict(session, f"an instance named '{name}' already exists")
    session.add(
        InstanceGuest(
            instance_id=instance.id,
            location=GuestLocation.DFE_CLUSTER,
            public_host=f"{name}.{cluster.subdomain}",
        )
    )
    for server_id in {server.id for server in servers.values()}:
        session.add(InstanceServer(instance_id=instance.id, server_id=server_id))
    session.flush()
    create_key(session, OwnerType.INSTANCE, instance.id, label=f"instance {name}")
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


def host_of(instance: Instance) -> str:
    return f"{instance.name}.{instance.cluster.subdomain}"


def instance_publics(session: Session, rows: Sequence[Instance]) -> list[InstancePublic]:
    """Public views of many instances, their servers' names fetched in one query."""
    ids = {i.db_server_id for i in rows} | {i.web_server_id for i in rows}
    ids |= {i.app_server_id for i in rows}
    names = dict(session.execute(select(Server.id, Server.name).where(Server.id.in_(ids))).all())
    return [_public(instance, names) for instance in rows]


def instance_public(session: Session, instance: Instance) -> InstancePublic:
    return instance_publics(session, [instance])[0]


def _public(instance: Instance, servers: dict[int, str]) -> InstancePublic:
    return InstancePublic(
        id=instance.id,
        name=instance.name,
        host=host_of(instance),
        owner=instance.user.email,
        cluster=instance.cluster.name,
        db_server=servers[instance.db_server_id],
        web_server=servers[instance.web_server_id],
        app_server=servers[instance.app_server_id],
        provision_state=instance.provision_state,
        ready_state=instance.ready_state,
        operational_state=instance.operational_state,
        state_changed_at=instance.state_changed_at,
        created_at=instance.created_at,
        updated_at=instance.updated_at,
    )
