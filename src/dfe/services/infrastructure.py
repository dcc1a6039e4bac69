"""Mounts, servers and clusters, and which servers belong to which cluster."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dfe.models import Cluster, ClusterServer, Instance, Mount, Server, ServerType
from dfe.schemas import (
    ClusterCreate,
    ClusterPublic,
    ClusterUpdate,
    MountCreate,
    MountPublic,
    MountUpdate,
    ServerCreate,
    ServerPublic,
    ServerUpdate,
    mask_secrets,
)
from dfe.services import audit
from dfe.services.base import flush_or_conflict, get_by_ref, snapshot
from dfe.services.errors import Conflict, InvalidInput

# Mounts


def get_mount(session: Session, ref: str | int) -> Mount:
    return get_by_ref(session, Mount, ref, "mount")


def list_mounts(session: Session) -> list[Mount]:
    return list(session.scalars(select(Mount).order_by(Mount.name)))


def create_mount(session: Session, data: MountCreate) -> Mount:
    mount = Mount(**data.model_dump())
    session.add(mount)
    flush_or_conflict(session, f"a mount named '{data.name}' already exists")
    audit.record(session, "mount.create", "mount", mount.id, mount.name, after=snapshot(mount))
    return mount


def update_mount(session: Session, ref: str | int, data: MountUpdate) -> Mount:
    mount = get_mount(session, ref)
    before = snapshot(mount)
    for field, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(mount, field, value)
    session.flush()
    audit.record(session, "mount.update", "mount", mount.id, mount.name, before, snapshot(mount))
    return mount


def delete_mount(session: Session, ref: str | int) -> None:
    mount = get_mount(session, ref)
    users = session.scalars(select(Server.name).where(Server.mount_id == mount.id)).all()
    if users:
        raise Conflict(f"mount '{mount.name}' is used by server(s) {', '.join(users)}")
    audit.record(session, "mount.delete", "mount", mount.id, mount.name, before=snapshot(mount))
    session.delete(mount)
    session.flush()


def mount_public(mount: Mount) -> MountPublic:
    return MountPublic.model_validate(mount)


# Servers


def get_server(session: Session, ref: str | int) -> Server:
    return get_by_ref(session, Server, ref, "server")


def list_servers(session: Session, server_type: ServerType | None = None) -> list[Server]:
    query = select(Server).order_by(Server.name)
    if server_type is not None:
        query = query.where(Server.server_type == server_type)
    return list(session.scalars(query))


def create_server(session: Session, data: ServerCreate) -> Server:
    values = data.model_dump(exclude={"mount"})
    server = Server(**values, mount_id=_mount_id(session, data.mount))
    session.add(server)
    flush_or_conflict(session, f"a server named '{data.name}' already exists")
    audit.record(session, "server.create", "server", server.id, server.name, after=snapshot(server))
    return server


def update_server(session: Session, ref: str | int, data: ServerUpdate) -> Server:
    server = get_server(session, ref)
    before = snapshot(server)
    changes = data.model_dump(exclude_unset=True)
    if "mount" in changes:
        server.mount_id = _mount_id(session, changes.pop("mount"))
    for field, value in changes.items():
        if value is not None or field == "max_instances":
            setattr(server, field, value)
    session.flush()
    audit.record(
        session, "server.update", "server", server.id, server.name, before, snapshot(server)
    )
    return server


def delete_server(session: Session, ref: str | int) -> None:
    """Archive a server (and its cluster memberships); refused while instances use it."""
    server = get_server(session, ref)
    in_use = session.scalar(
        select(func.count())
        .select_from(Instance)
        .where(
            or_(
                Instance.db_server_id == server.id,
                Instance.web_server_id == server.id,
                Instance.app_server_id == server.id,
            )
        )
    )
    if in_use:
        raise Conflict(f"server '{server.name}' still hosts {in_use} instance(s)")
    audit.record(
        session, "server.delete", "server", server.id, server.name, before=snapshot(server)
    )
    session.delete(server)
    session.flush()


def _mount_id(session: Session, ref: str | None) -> int | None:
    return get_mount(session, ref).id if ref else None


def server_public(server: Server) -> ServerPublic:
    return ServerPublic(
        id=server.id,
        name=server.name,
        server_type=server.server_type,
        host=server.host,
        mount=server.mount.name if server.mount else None,
        config=mask_secrets(server.config),
        max_instances=server.max_instances,
        is_enabled=server.is_enabled,
        created_at=server.created_at,
        updated_at=server.updated_at,
    )


# Clusters


def get_cluster(session: Session, ref: str | int) -> Cluster:
    return get_by_ref(session, Cluster, ref, "cluster")


def list_clusters(session: Session) -> list[Cluster]:
    return list(session.scalars(select(Cluster).order_by(Cluster.name)))


def create_cluster(session: Session, data: ClusterCreate) -> Cluster:
    cluster = Cluster(**data.model_dump())
    session.add(cluster)
    flush_or_conflict(session, f"a cluster named '{data.name}' already exists")
    audit.record(
        session, "cluster.create", "cluster", cluster.id, cluster.name, after=snapshot(cluster)
    )
    return cluster


def update_cluster(session: Session, ref: str | int, data: ClusterUpdate) -> Cluster:
    cluster = get_cluster(session, ref)
    before = snapshot(cluster)
    for field, value in data.model_dump(exclude_unset=True).items():
        if value is not None or field == "max_instances":
            setattr(cluster, field, value)
    session.flush()
    audit.record(
        session, "cluster.update", "cluster", cluster.id, cluster.name, before, snapshot(cluster)
    )
    return cluster


def delete_cluster(session: Session, ref: str | int) -> None:
    """Archive a cluster (and its server memberships); refused while it has instances."""
    cluster = get_cluster(session, ref)
    count = session.scalar(
        select(func.count()).select_from(Instance).where(Instance.cluster_id == cluster.id)
    )
    if count:
        raise Conflict(f"cluster '{cluster.name}' still has {count} instance(s)")
    audit.record(
        session, "cluster.delete", "cluster", cluster.id, cluster.name, before=snapshot(cluster)
    )
    session.delete(cluster)
    session.flush()


def assign_server(
    session: Session, cluster_ref: str | int, server_ref: str | int, *, exist_ok: bool = False
) -> None:
    """Put a server in a cluster; with `exist_ok`, a server already there is fine."""
    cluster, server = get_cluster(session, cluster_ref), get_server(session, server_ref)
    if session.get(ClusterServer, (cluster.id, server.id)) is not None:
        if exist_ok:
            return
        raise Conflict(f"server '{server.name}' is already in cluster '{cluster.name}'")
    session.add(ClusterServer(cluster_id=cluster.id, server_id=server.id))
    flush_or_conflict(session, f"server '{server.name}' is already in cluster '{cluster.name}'")
    audit.record(
        session,
        "cluster.assign",
        "cluster",
        cluster.id,
        cluster.name,
        after={"server": server.name},
    )


def unassign_server(session: Session, cluster_ref: str | int, server_ref: str | int) -> None:
    cluster, server = get_cluster(session, cluster_ref), get_server(session, server_ref)
    membership = session.get(ClusterServer, (cluster.id, server.id))
    if membership is None:
        raise InvalidInput(f"server '{server.name}' is not in cluster '{cluster.name}'")
    session.delete(membership)
    session.flush()
    audit.record(
        session,
        "cluster.unassign",
        "cluster",
        cluster.id,
        cluster.name,
        before={"server": server.name},
    )


def cluster_servers(session: Session, cluster: Cluster) -> list[Server]:
    return list(
        session.scalars(
            select(Server)
            .join(ClusterServer, ClusterServer.server_id == Server.id)
            .where(ClusterServer.cluster_id == cluster.id)
            .order_by(Server.name)
        )
    )


def cluster_publics(session: Session, clusters: Sequence[Cluster]) -> list[ClusterPublic]:
    """Public views of many clusters, their server names fetched in one query."""
    names: dict[int, list[str]] = {cluster.id: [] for cluster in clusters}
    rows = session.execute(
        select(ClusterServer.cluster_id, Server.name)
        .join(Server, Server.id == ClusterServer.server_id)
        .where(ClusterServer.cluster_id.in_(names))
        .order_by(Server.name)
    )
    for cluster_id, name in rows:
        names[cluster_id].append(name)
    return [_cluster_public(cluster, names[cluster.id]) for cluster in clusters]


def cluster_public(session: Session, cluster: Cluster) -> ClusterPublic:
    return cluster_publics(session, [cluster])[0]


def _cluster_public(cluster: Cluster, server_names: list[str]) -> ClusterPublic:
    return ClusterPublic(
        id=cluster.id,
        name=cluster.name,
        subdomain=cluster.subdomain,
        max_instances=cluster.max_instances,
        owner_type=cluster.owner_type,
        owner_id=cluster.owner_id,
        servers=server_names,
        created_at=cluster.created_at,
        updated_at=cluster.updated_at,
    )
