"""Deleting a cluster or server that instances still use is refused by every path,
with the path's own error, and changes nothing (no half-archived rows)."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from dfe.db.session import Database
from dfe.models import (
    ARCHIVED_TABLES,
    AppKey,
    AuditEntry,
    Cluster,
    ClusterServer,
    Instance,
    InstanceGuest,
    InstanceServer,
    Server,
    ServerType,
)
from dfe.schemas import ClusterCreate, ServerCreate, UserCreate
from dfe.services import identity, infrastructure, instances
from dfe.services.errors import Conflict

PATHS = ("service", "orm-unit", "orm-bulk", "sql")


def build(db: Database) -> dict[str, int]:
    with db.transaction(actor="builder") as s:
        cluster = infrastructure.create_cluster(s, ClusterCreate(name="clu", subdomain="a.test"))
        servers = {
            t: infrastructure.create_server(
                s, ServerCreate(name=f"{t.value}-1", server_type=t, host="h")
            )
            for t in ServerType
        }
        for server in servers.values():
            infrastructure.assign_server(s, cluster.id, server.id)
        user = identity.create_user(s, UserCreate(email="u@example.com", password="0123456789ab"))
        instance = instances.create_instance_record(s, "alpha", user, cluster, servers)
    return {
        "cluster": cluster.id,
        "server": servers[ServerType.WEB].id,
        "instance": instance.id,
    }


def snapshot(db: Database) -> dict[str, int]:
    tables = [
        Cluster.__table__,
        Server.__table__,
        Instance.__table__,
        InstanceGuest.__table__,
        ClusterServer.__table__,
        InstanceServer.__table__,
        AppKey.__table__,
        AuditEntry.__table__,
        *ARCHIVED_TABLES.values(),
    ]
    with db.session() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) or 0 for t in tables}


def attempt_delete(db: Database, model: type[Cluster | Server], target: int, path: str) -> None:
    if path == "service":
        with db.transaction(actor="ops") as s:
            if model is Cluster:
                infrastructure.delete_cluster(s, target)
            else:
                infrastructure.delete_server(s, target)
    elif path == "orm-unit":
        with db.transaction(actor="ops") as s:
            s.delete(s.get(model, target))
            s.flush()
    elif path == "orm-bulk":
        with db.transaction(actor="ops") as s:
            s.execute(delete(model).where(model.id == target))
    else:
        with db.engine.begin() as connection:
            connection.exec_driver_sql(f"DELETE FROM {model.__tablename__} WHERE id = {target}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["cluster", "server"])
def test_deleting_a_parent_still_in_use_is_refused_and_changes_nothing(db, engine_name, kind, path):
    ids = build(db)
    model = Cluster if kind == "cluster" else Server
    target = ids[kind]
    before = snapshot(db)

    expected = Conflict if path == "service" else IntegrityError
    with pytest.raises(expected) as refused:
        attempt_delete(db, model, target, path)
    if path == "service":
        assert "instance" in str(refused.value)

    assert snapshot(db) == before
    # And the database is still usable on that connection pool.
    with db.session() as s:
        assert instances.get_instance(s, "alpha").id == ids["instance"]
