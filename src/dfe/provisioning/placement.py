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

Each type's servers are kept in load order by an index (`ix_server_t_placement`),
so the choice walks it and stops at the first server of the cluster with room,
whatever the number of servers. PostgreSQL would still plan the choice anew at
every execution (1-1.5 ms, most of a decision), so there it is prepared once per
connection and runs on its generic plan.

Both statements go to the session's connection, not through the ORM: they read
columns, not objects, and the ORM's handling of a statement costs more than
running it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
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


def _lock_cluster(connection: Connection, cluster_id: int) -> PlacedCluster:
    sqlite = connection.dialect.name == "sqlite"
    statement = _WRITE_LOCK_CLUSTER if sqlite else _ROW_LOCK_CLUSTER
    return PlacedCluster(*connection.execute(statement, {"p_cluster": cluster_id}).one())


# A server's load, as SQL text: PostgreSQL and SQLite serve the ORDER BY from the
# expression index `ix_server_t_placement` (migrations 0010, 0011) only when the
# query's expression is the index's, constants included (a bound parameter would not
# match). MariaDB/MySQL index a generated column holding the same expression (0011).
LOAD_SQL = (
    "CASE WHEN server_t.max_instances IS NULL THEN 0.0 WHEN server_t.max_instances = 0 "
    "THEN 1.0 ELSE server_t.instance_count * 1.0 / server_t.max_instances END"
)
LOAD = {
    "sqlite": literal_column(LOAD_SQL, Numeric),
    "postgresql": literal_column(LOAD_SQL, Numeric),
    "mysql": literal_column("server_t.placement_load", Numeric),
}
_HAS_ROOM = or_(Server.max_instances.is_(None), Server.instance_count < Server.max_instances)


def _first_of_each_type(
    dialect: str, cluster: ColumnElement[Any] | None = None
) -> CompoundSelect[int, str, ServerType]:
    """The least loaded server with room of each type: three top-1 scans in one
    statement (cheaper than ranking every candidate), locking what they return
    where the engine has row locks. The cluster is the parameter `p_cluster`, or
    `cluster` (PostgreSQL's prepared form: `$1`)."""
    cluster = bindparam("p_cluster") if cluster is None else cluster
    parts = []
    for server_type in ServerType:
        first = (
            select(Server.id, Server.name, Server.server_type)
            .join(ClusterServer, ClusterServer.server_id == Server.id)
            .where(
                ClusterServer.cluster_id == cluster,
                Server.server_type == server_type,
                Server.is_enabled.is_(True),
                _HAS_ROOM,
            )
            .order_by(LOAD[dialect], Server.instance_count, Server.name, Server.id)
            .limit(1)
        )
        if dialect == "sqlite":  # no ORDER BY/LIMIT in a compound's parts: wrapped
            parts.append(select(*first.subquery().c))
        elif dialect == "postgresql":  # no locking clause in a compound's parts: wrapped
            parts.append(select(*first.with_for_update(of=Server).subquery().c))
        else:
            parts.append(first.with_for_update())
    return union_all(*parts)


FIRSTS = {dialect: _first_of_each_type(dialect) for dialect in ("sqlite", "mysql")}
# PostgreSQL's form, prepared with the cluster as its parameter $1.
PREPARED_CHOICE = "dfe_placement_choice"
_PREPARE_CHOICE = _first_of_each_type("postgresql", literal_column("$1"))


def _prepared_choice(connection: Connection, cluster_id: int) -> Sequence[Any]:
    """PostgreSQL's choice, prepared on first use by each connection (a prepared
    statement lives as long as its connection, through commits and rollbacks; the
    engine keeps psycopg from deallocating it, see `dfe.db.session`)."""
    known = connection.connection.info  # kept as long as the DBAPI connection
    if PREPARED_CHOICE not in known:
        choice = _PREPARE_CHOICE.compile(
            dialect=connection.dialect, compile_kwargs={"literal_binds": True}
        )
        connection.exec_driver_sql(f"PREPARE {PREPARED_CHOICE} (bigint) AS {choice}")
        known[PREPARED_CHOICE] = True
    # EXECUTE takes no bound parameters: the id, an int, is written in.
    return connection.exec_driver_sql(f"EXECUTE {PREPARED_CHOICE}({int(cluster_id)})").all()


def _least_loaded(connection: Connection, cluster_id: int) -> dict[ServerType, PlacedServer]:
    """The chosen server of each type (types without one with room are missing)."""
    dialect = connection.dialect.name
    rows: Sequence[Any]  # (id, name, server type)
    if dialect == "postgresql":
        rows = _prepared_choice(connection, cluster_id)
    else:
        statement = FIRSTS.get(dialect, FIRSTS["mysql"])  # "mysql" or "mariadb"
        rows = connection.execute(statement, {"p_cluster": cluster_id}).all()
    # By position: EXECUTE's rows come untyped (server_type as text).
    chosen = (PlacedServer(row[0], row[1], ServerType(row[2])) for row in rows)
    return {server.server_type: server for server in chosen}


def place(session: Session, cluster_id: int) -> Placement:
    """Choose servers for one new instance of the cluster, holding the locks until commit."""
    session.flush()  # as the ORM would before a query: the counters must count what is pending
    connection = session.connection()
    cluster = _lock_cluster(connection, cluster_id)
    if cluster.max_instances is not None and cluster.instance_count >= cluster.max_instances:
        raise NoCapacity(
            f"cluster '{cluster.name}' is full ({cluster.instance_count} of "
            f"{cluster.max_instances} instances)"
        )
    servers = _least_loaded(connection, cluster.id)
    for server_type in ServerType:
        if server_type not in servers:
            raise NoCapacity(
                f"cluster '{cluster.name}' has no enabled {server_type.value} server with room"
            )
    return Placement(cluster=cluster, servers=servers)
