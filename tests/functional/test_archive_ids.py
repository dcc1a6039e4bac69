"""Ids are never reused, on any table, also after the row with the highest id is deleted
(SQLite reuses rowids unless the table is AUTOINCREMENT, which a migration that
rebuilds a table in batch mode can silently drop)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from dfe.db.base import Base
from dfe.models import (
    AppKey,
    AuditEntry,
    Cluster,
    Instance,
    InstanceGuest,
    Mount,
    OwnerType,
    Server,
    ServerType,
    ServiceUser,
    User,
)
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, ServiceUserCreate, UserCreate
from dfe.services import identity, infrastructure, instances, keys

PASSWORD = "a long enough pw"


def _estate(s, suffix: str):  # type: ignore[no-untyped-def]
    cluster = infrastructure.create_cluster(
        s, ClusterCreate(name=f"base-{suffix}", subdomain="a.test")
    )
    servers = {
        t: infrastructure.create_server(
            s, ServerCreate(name=f"base-{t.value}-{suffix}", server_type=t, host="h")
        )
        for t in ServerType
    }
    user = identity.create_user(
        s, UserCreate(email=f"base-{suffix}@example.com", password=PASSWORD)
    )
    return cluster, servers, user


def _make(kind: str) -> Callable:  # type: ignore[type-arg]
    def make(s, n: int) -> int:  # type: ignore[no-untyped-def]
        if kind == "mount":
            return infrastructure.create_mount(s, MountCreate(name=f"m{n}", root_path="/m")).id
        if kind == "cluster":
            return infrastructure.create_cluster(
                s, ClusterCreate(name=f"c{n}", subdomain="c.test")
            ).id
        if kind == "server":
            return infrastructure.create_server(
                s, ServerCreate(name=f"s{n}", server_type="app", host="h")
            ).id
        if kind == "user":
            return identity.create_user(
                s, UserCreate(email=f"u{n}@example.com", password=PASSWORD)
            ).id
        if kind == "service_user":
            return identity.create_service_user(
                s, ServiceUserCreate(email=f"o{n}@example.com", password=PASSWORD)
            ).id
        if kind == "key":
            return keys.create_key(s, OwnerType.CONSOLE, label=f"k{n}").id
        cluster, servers, user = _estate(s, str(n))
        return instances.create_instance_record(s, f"inst-{n}", user, cluster, servers).id

    return make


def _remove(kind: str) -> Callable:  # type: ignore[type-arg]
    def remove(s, row_id: int) -> None:  # type: ignore[no-untyped-def]
        if kind == "mount":
            infrastructure.delete_mount(s, row_id)
        elif kind == "cluster":
            infrastructure.delete_cluster(s, row_id)
        elif kind == "server":
            infrastructure.delete_server(s, row_id)
        elif kind == "user":
            identity.delete_user(s, row_id)
        elif kind == "service_user":
            identity.delete_service_user(s, row_id)
        elif kind == "key":
            keys.revoke_key(s, s.get(AppKey, row_id).client_id)
        else:
            instances.delete_instance_record(s, row_id)

    return remove


MODELS: dict[str, type[Base]] = {
    "mount": Mount,
    "cluster": Cluster,
    "server": Server,
    "user": User,
    "service_user": ServiceUser,
    "key": AppKey,
    "instance": Instance,
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_highest_id_is_not_reused_after_a_delete(db, engine_name, kind):
    make, remove = _make(kind), _remove(kind)
    seen: list[int] = []
    for n in range(3):
        with db.transaction(actor="ops") as s:
            row_id = make(s, n)
        assert all(row_id > earlier for earlier in seen), (kind, seen, row_id)
        seen.append(row_id)
        with db.transaction(actor="ops") as s:
            remove(s, row_id)
    with db.session() as s:
        model = MODELS[kind]
        assert s.scalars(select(model.id).where(model.id.in_(seen))).all() == []  # type: ignore[attr-defined]
        if kind == "instance":
            guests = s.scalars(select(InstanceGuest.id)).all()
            assert guests == []
        audit_ids = s.scalars(select(AuditEntry.id).order_by(AuditEntry.id)).all()
    assert audit_ids == sorted(set(audit_ids))
