"""Placement: which db, web and app server of a cluster a new instance goes to.

Filter the cluster's enabled servers of each type that have room, pick the
least loaded (instances / capacity, then fewest instances, then name: a
deterministic tie-break), and claim the room in the same transaction as the
instance row. The cluster row is locked first, which serializes launches into
one cluster on every engine (a row lock on PostgreSQL and MySQL, the write
lock on SQLite); the chosen servers are locked too, since a server may serve
several clusters. Counts come from the counters the instance_t triggers keep.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, literal, or_, select, update
from sqlalchemy.orm import Session, lazyload

from dfe.enums import ServerType
from dfe.models import Cluster, ClusterServer, Server
from dfe.services.errors import DfeError


class NoCapacity(DfeError):
    """The cluster, or every server of one type in it, is full."""

    status = 409
    code = "insufficient_capacity"


@dataclass(frozen=True)
class Placement:
    cluster: Cluster
    servers: dict[ServerType, Server]


def _lock_cluster(session: Session, cluster_id: int) -> Cluster:
    # A no-op UPDATE: the row lock (or SQLite's write lock) is what we want, taken
    # before any read so the counts read next are the committed ones.
    session.execute(
        update(Cluster)
        .where(Cluster.id == cluster_id)
        .values(instance_count=Cluster.instance_count)
        .execution_options(synchronize_session=False)
    )
    # A locking read: on MySQL/MariaDB a plain SELECT would read the transaction's
    # snapshot, which may predate the lock.
    return session.scalars(
        select(Cluster)
        .where(Cluster.id == cluster_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


_LOAD = case(
    (Server.max_instances.is_(None), literal(0.0)),
    (Server.max_instances == 0, literal(1.0)),
    else_=Server.instance_count * 1.0 / Server.max_instances,
)


def _least_loaded(session: Session, cluster_id: int, server_type: ServerType) -> Server | None:
    query = (
        select(Server)
        .join(ClusterServer, ClusterServer.server_id == Server.id)
        .where(
            ClusterServer.cluster_id == cluster_id,
            Server.server_type == server_type,
            Server.is_enabled.is_(True),
            or_(Server.max_instances.is_(None), Server.instance_count < Server.max_instances),
        )
        .order_by(_LOAD, Server.instance_count, Server.name, Server.id)
        .limit(1)
        # Not the mount's joined load: PostgreSQL refuses FOR UPDATE on an outer join's side.
        .options(lazyload(Server.mount))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


def place(session: Session, cluster_id: int) -> Placement:
    """Choose servers for one new instance of the cluster, holding the locks until commit."""
    cluster = _lock_cluster(session, cluster_id)
    if cluster.max_instances is not None and cluster.instance_count >= cluster.max_instances:
        raise NoCapacity(
            f"cluster '{cluster.name}' is full ({cluster.instance_count} of "
            f"{cluster.max_instances} instances)"
        )
    servers = {}
    for server_type in ServerType:
        # PostgreSQL re-checks a row it waited to lock and may then return none (a
        # server shared with another cluster filled up meanwhile): ask again.
        server = None
        for _attempt in range(3):
            server = _least_loaded(session, cluster.id, server_type)
            if server is not None:
                break
        if server is None:
            raise NoCapacity(
                f"cluster '{cluster.name}' has no enabled {server_type.value} server with room"
            )
        servers[server_type] = server
    return Placement(cluster=cluster, servers=servers)
