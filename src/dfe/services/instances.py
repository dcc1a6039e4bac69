"""Instance records: creation with guest row, server assignments and key; deletion to the archive.

Provisioning the instance's database and storage is the provisioning engine's
job; this module only keeps the control plane's records consistent.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from dfe.models import (
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
from dfe.services.errors import InvalidInput
from dfe.services.keys import create_key
from dfe.services.names import instance_name_problem


def get_instance(session: Session, ref: str | int) -> Instance:
    return get_by_ref(session, Instance, ref, "instance")


def list_instances(session: Session, user: User | None = None) -> list[Instance]:
    query = select(Instance).order_by(Instance.name)
    if user is not None:
        query = query.where(Instance.user_id == user.id)
    return list(session.scalars(query))


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


def instance_public(session: Session, instance: Instance) -> InstancePublic:
    servers = {
        server.id: server.name
        for server in session.scalars(
            select(Server).where(
                Server.id.in_(
                    [instance.db_server_id, instance.web_server_id, instance.app_server_id]
                )
            )
        )
    }
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
