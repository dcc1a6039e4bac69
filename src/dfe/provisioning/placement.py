"""Placement: which db, web and app server of a cluster a new instance goes to.

Filter the cluster's enabled servers of each type that have room, pick the
least loaded (instances / capacity, then fewest instances, then name: a
deterministic tie-break), and claim the room in the same transaction as the
instance row. Counts come from the counters the instance_t triggers keep.

One decision is two statements, whatever the cluster's size:

1. lock the cluster row, which serializes launches into one cluster on every
   engine (SQLite: an UPDATE takes the database's write lock, which excludes
   every other writer; PostgreSQL and MySQL: a locking read, which also reads
   the latest committed counts);
2. choose the first of each type in one statement, three top-1 scans joined by
   UNION ALL. On PostgreSQL and MySQL/MariaDB each scan is a locking read: a
   server may serve several clusters, so a launch into another cluster may be
   filling it meanwhile. The lock waits for that launch, and the row is judged
   on its latest version (PostgreSQL re-checks the locked row and, if it has no
   room left, goes on to the next one in load order; MySQL's locking read reads
   latest versions, where a plain one would read the transaction's REPEATABLE
   READ snapshot). The chosen rows stay locked until the launch commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    CompoundSelect,
    Numeric,
    bindparam,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from dfe.enums import ServerType
from dfe.models import Cluster, ClusterServer, Server
from dfe.services.errors import DfeError


class NoCapacity(DfeError):
    """The cluster, or every server of one type in it, is full."""

    status = 409
    code = "insufficient_capacity"


@dataclass(frozen=True)
class PlacedCluster:
    id: int
    name: str
    subdomain: str
    max_instances: int | None
    instance_count: int


@dataclass(frozen=True)
class PlacedServer:
    id: int
    name: str
    server_type: ServerType


@dataclass(frozen=True)
class Placement:
    cluster: PlacedCluster
    servers: dict[ServerType, PlacedServer]


# The statements are built once: building (and keying) them costs more than running them.
_CLUSTER_COLUMNS = (
    Cluster.id,
    Cluster.name,
    Cluster.subdomain,
    Cluster.max_instances,
    Cluster.instance_count,
)
# SQLite: a no-op UPDATE, for the database's write lock, taken before any read so the
# counts read next are the committed ones.
_WRITE_LOCK_CLUSTER = (
    update(Cluster)
    .where(Cluster.id == bindparam("p_cluster"))
    .values(instance_count=Cluster.instance_count)
    .returning(*_CLUSTER_COLUMNS)
    .execution_options(synchronize_session=False)
)
_ROW_LOCK_CLUSTER = (
    select(*_CLUSTER_COLUMNS).where(Cluster.id == bindparam("p_cluster")).with_for_update()
)


def _lock_cluster(session: Session, cluster_id: int, dialect: str) -> PlacedCluster:
    statement = _WRITE_LOCK_CLUSTER if dialect == "sqlite" else _ROW_LOCK_CLUSTER
    return PlacedCluster(*session.execute(statement, {"p_cluster": cluster_id}).one())


# A server's load, as SQL text: PostgreSQL serves the ORDER BY from the expression
# index of migration 0010 (`ix_server_t_placement`) only when the query's expression
# is the index's, constants included (a bound parameter would not match).
LOAD_SQL = (
    "CASE WHEN server_t.max_instances IS NULL THEN 0.0 WHEN server_t.max_instances = 0 "
    "THEN 1.0 ELSE server_t.instance_count * 1.0 / server_t.max_instances END"
)
_LOAD = literal_column(LOAD_SQL, Numeric)
_HAS_ROOM = or_(Server.max_instances.is_(None), Server.instance_count < Server.max_instances)


def _first_of_each_type(dialect: str) -> CompoundSelect[int, str, ServerType]:
    """The least loaded server with room of each type: three top-1 scans in one
    statement (cheaper than ranking every candidate), locking what they return
    where the engine has row locks."""
    parts = []
    for server_type in ServerType:
        first = (
            select(Server.id, Server.name, Server.server_type)
            .join(ClusterServer, ClusterServer.server_id == Server.id)
            .where(
                ClusterServer.cluster_id == bindparam("p_cluster"),
                Server.server_type == server_type,
                Server.is_enabled.is_(True),
                _HAS_ROOM,
            )
            .order_by(_LOAD, Server.instance_count, Server.name, Server.id)
            .limit(1)
        )
        if dialect == "sqlite":  # no ORDER BY/LIMIT in a compound's parts: wrapped
            parts.append(select(*first.subquery().c))
        elif dialect == "postgresql":  # no locking clause in a compound's parts: wrapped
            parts.append(select(*first.with_for_update(of=Server).subquery().c))
        else:
            parts.append(first.with_for_update())
    return union_all(*parts)


FIRSTS = {dialect: _first_of_each_type(dialect) for dialect in ("sqlite", "postgresql", "mysql")}


def _least_loaded(
    session: Session, cluster_id: int, dialect: str
) -> dict[ServerType, PlacedServer]:
    """The chosen server of each type (types without one with room are missing)."""
    statement = FIRSTS.get(dialect, FIRSTS["mysql"])  # "mysql" or "mariadb"
    rows = session.execute(statement, {"p_cluster": cluster_id})
    return {row.server_type: PlacedServer(row.id, row.name, row.server_type) for row in rows}


def place(session: Session, cluster_id: int) -> Placement:
    """Choose servers for one new instance of the cluster, holding the locks until commit."""
    dialect = session.get_bind().dialect.name
    cluster = _lock_cluster(session, cluster_id, dialect)
    if cluster.max_instances is not None and cluster.instance_count >= cluster.max_instances:
        raise NoCapacity(
            f"cluster '{cluster.name}' is full ({cluster.instance_count} of "
            f"{cluster.max_instances} instances)"
        )
    servers = _least_loaded(session, cluster.id, dialect)
    for server_type in ServerType:
        if server_type not in servers:
            raise NoCapacity(
                f"cluster '{cluster.name}' has no enabled {server_type.value} server with room"
            )
    return Placement(cluster=cluster, servers=servers)
