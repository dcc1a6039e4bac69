"""Mounts, servers and clusters through `dfe.services.infrastructure`."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from dfe.db.session import Database
from dfe.models import AuditEntry, ClusterServer, Mount, Server, ServerType
from dfe.schemas import (
    MASK,
    ClusterCreate,
    ClusterUpdate,
    MountCreate,
    MountUpdate,
    ServerCreate,
    ServerUpdate,
    UserCreate,
)
from dfe.services import identity, infrastructure, instances
from dfe.services.errors import Conflict, InvalidInput, NotFound

ADMIN_PASSWORD = "s3cret-admin-password-for-the-db"


def last_audit(db: Database) -> AuditEntry:
    with db.session() as s:
        return s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).one()


def audit_count(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(AuditEntry)) or 0


def assert_audited(db: Database, action: str, name: str, actor: str = "ops") -> AuditEntry:
    entry = last_audit(db)
    assert (entry.action, entry.target_name, entry.actor) == (action, name, actor)
    assert entry.at is not None
    document = json.dumps([entry.before, entry.after], default=str)
    assert ADMIN_PASSWORD not in document
    return entry


def conflict(db: Database, call, *args) -> str:  # type: ignore[no-untyped-def]
    """`call` must raise Conflict without writing anything (audit included)."""
    before = audit_count(db)
    with pytest.raises(Conflict) as caught, db.transaction(actor="ops") as s:
        call(s, *args)
    assert audit_count(db) == before
    return caught.value.message


# Mounts


def test_mount_lifecycle(db, engine_name):
    with db.transaction(actor="ops") as s:
        created = infrastructure.create_mount(
            s, MountCreate(name=" Shared-1 ", root_path="/srv/shared", config={"quota": 10})
        )
    assert created.name == "shared-1"
    assert_audited(db, "mount.create", "shared-1")
    with db.session() as s:
        for ref in ("shared-1", "SHARED-1", created.id, str(created.id)):
            assert infrastructure.get_mount(s, ref).id == created.id
        public = infrastructure.mount_public(infrastructure.get_mount(s, "shared-1"))
        assert (public.root_path, public.config) == ("/srv/shared", {"quota": 10})
    with db.transaction(actor="ops") as s:
        infrastructure.update_mount(s, "shared-1", MountUpdate(root_path="/srv/other"))
    entry = assert_audited(db, "mount.update", "shared-1")
    assert (entry.before["root_path"], entry.after["root_path"]) == ("/srv/shared", "/srv/other")
    with db.transaction(actor="ops") as s:
        infrastructure.delete_mount(s, "shared-1")
    assert_audited(db, "mount.delete", "shared-1")
    with db.session() as s, pytest.raises(NotFound) as missing:
        infrastructure.get_mount(s, "shared-1")
    assert "shared-1" in missing.value.message
    with pytest.raises(NotFound), db.transaction(actor="ops") as s:
        infrastructure.delete_mount(s, "shared-1")


def test_mount_names_are_unique_whatever_the_case(db, engine_name):
    with db.transaction(actor="ops") as s:
        infrastructure.create_mount(s, MountCreate(name="foo", root_path="/a"))
    message = conflict(db, infrastructure.create_mount, MountCreate(name="Foo", root_path="/b"))
    assert "'foo'" in message
    conflict(db, infrastructure.create_mount, MountCreate(name="FOO", root_path="/b"))
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Mount)) == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "m", "root_path": "relative/path"},
        {"name": "bad name", "root_path": "/a"},
        {"name": "", "root_path": "/a"},
        {"name": "-lead", "root_path": "/a"},
        {"name": "x" * 65, "root_path": "/a"},
        {"name": "m", "root_path": "/a", "mount_type": "nfs"},
        {"name": "m", "root_path": "/a", "unknown": 1},
    ],
)
def test_bad_mount_input_is_rejected(fields):
    with pytest.raises(ValidationError):
        MountCreate(**fields)


def test_a_mount_used_by_a_server_cannot_be_deleted(db, engine_name):
    with db.transaction(actor="ops") as s:
        infrastructure.create_mount(s, MountCreate(name="mnt", root_path="/srv"))
        infrastructure.create_server(
            s, ServerCreate(name="web-1", server_type="web", host="h1", mount="MNT")
        )
    message = conflict(db, infrastructure.delete_mount, "mnt")
    assert "mnt" in message
    assert "web-1" in message
    with db.transaction(actor="ops") as s:
        infrastructure.update_server(s, "web-1", ServerUpdate(mount=None))
        infrastructure.delete_mount(s, "mnt")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Mount)) == 0


# Servers


def test_server_lifecycle_with_masked_credentials(db, engine_name):
    with db.transaction(actor="ops") as s:
        infrastructure.create_mount(s, MountCreate(name="mnt", root_path="/srv"))
        server = infrastructure.create_server(
            s,
            ServerCreate(
                name="DB-1",
                server_type="db",
                host="db.internal",
                config={"driver": "postgresql", "port": 5432, "admin_password": ADMIN_PASSWORD},
                max_instances=50,
            ),
        )
    assert (server.name, server.server_type) == ("db-1", ServerType.DB)
    entry = assert_audited(db, "server.create", "db-1")
    assert entry.after["config"]["admin_password"] == MASK
    assert entry.after["config"]["driver"] == "postgresql"
    with db.session() as s:
        loaded = infrastructure.get_server(s, "Db-1")
        assert loaded.config["admin_password"] == ADMIN_PASSWORD
        public = infrastructure.server_public(loaded)
        assert public.config["admin_password"] == MASK
        assert ADMIN_PASSWORD not in public.model_dump_json()
        assert [x.name for x in infrastructure.list_servers(s, ServerType.DB)] == ["db-1"]
        assert infrastructure.list_servers(s, ServerType.WEB) == []

    with db.transaction(actor="ops") as s:
        infrastructure.update_server(
            s, "db-1", ServerUpdate(host="db2.internal", max_instances=None, is_enabled=False)
        )
    entry = assert_audited(db, "server.update", "db-1")
    assert entry.before["host"] == "db.internal"
    assert entry.after["host"] == "db2.internal"
    with db.session() as s:
        loaded = infrastructure.get_server(s, "db-1")
        assert (loaded.host, loaded.max_instances, loaded.is_enabled) == (
            "db2.internal",
            None,
            False,
        )
        assert loaded.config["port"] == 5432  # untouched

    with db.transaction(actor="ops") as s:
        infrastructure.update_server(s, "db-1", ServerUpdate(mount="mnt"))
    with db.session() as s:
        assert infrastructure.server_public(infrastructure.get_server(s, "db-1")).mount == "mnt"

    with db.transaction(actor="ops") as s:
        infrastructure.delete_server(s, "db-1")
    assert_audited(db, "server.delete", "db-1")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Server)) == 0


def test_server_names_are_unique_whatever_the_case(db, engine_name):
    with db.transaction(actor="ops") as s:
        infrastructure.create_server(s, ServerCreate(name="foo", server_type="app", host="h"))
    message = conflict(
        db, infrastructure.create_server, ServerCreate(name="Foo", server_type="web", host="h")
    )
    assert "foo" in message


def test_server_with_an_unknown_mount_is_not_found(db, engine_name):
    before = audit_count(db)
    with pytest.raises(NotFound) as missing, db.transaction(actor="ops") as s:
        infrastructure.create_server(
            s, ServerCreate(name="web-1", server_type="web", host="h", mount="nowhere")
        )
    assert "mount 'nowhere'" in missing.value.message
    with db.transaction(actor="ops") as s:
        infrastructure.create_server(s, ServerCreate(name="web-1", server_type="web", host="h"))
    with pytest.raises(NotFound), db.transaction(actor="ops") as s:
        infrastructure.update_server(s, "web-1", ServerUpdate(mount="nowhere"))
    with pytest.raises(NotFound), db.transaction(actor="ops") as s:
        infrastructure.update_server(s, "no-such-server", ServerUpdate(host="x"))
    assert audit_count(db) == before + 1


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "s", "server_type": "mail", "host": "h"},
        {"name": "s", "server_type": "DB ", "host": "h"},
        {"name": "s", "server_type": "db", "host": ""},
        {"name": "s", "server_type": "db", "host": "bad host"},
        {"name": "s", "server_type": "db", "host": "h", "max_instances": -1},
        {"name": "s s", "server_type": "db", "host": "h"},
        {"name": "s", "server_type": "db", "host": "h", "extra": True},
    ],
)
def test_bad_server_input_is_rejected(fields):
    with pytest.raises(ValidationError):
        ServerCreate(**fields)


def _instance_on(db: Database) -> None:
    with db.transaction(actor="ops") as s:
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
        instances.create_instance_record(s, "alpha", user, cluster, servers)


def test_servers_and_clusters_with_instances_cannot_be_deleted(db, engine_name):
    _instance_on(db)
    for server in ("db-1", "web-1", "app-1"):
        message = conflict(db, infrastructure.delete_server, server)
        assert server in message
        assert "instance" in message
    message = conflict(db, infrastructure.delete_cluster, "clu")
    assert "clu" in message
    assert "instance" in message
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ClusterServer)) == 3
    with db.transaction(actor="ops") as s:
        instances.delete_instance_record(s, "alpha")
    with db.transaction(actor="ops") as s:
        infrastructure.delete_server(s, "web-1")
        infrastructure.delete_cluster(s, "clu")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ClusterServer)) == 0


# Clusters


def test_cluster_lifecycle_and_membership(db, engine_name):
    with db.transaction(actor="ops") as s:
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="EU-1", subdomain="Apps.Example.COM.", max_instances=10)
        )
        for name in ("web-1", "app-1"):
            infrastructure.create_server(s, ServerCreate(name=name, server_type="web", host="h"))
    assert (cluster.name, cluster.subdomain, cluster.owner_type) == (
        "eu-1",
        "apps.example.com",
        "system",
    )
    with db.transaction(actor="ops") as s:
        infrastructure.assign_server(s, "eu-1", "web-1")
    assert_audited(db, "cluster.assign", "eu-1")
    with db.transaction(actor="ops") as s:
        infrastructure.assign_server(s, cluster.id, "app-1")
    message = conflict(db, infrastructure.assign_server, "eu-1", "WEB-1")
    assert "web-1" in message
    with db.session() as s:
        public = infrastructure.cluster_public(s, infrastructure.get_cluster(s, "Eu-1"))
        assert public.servers == ["app-1", "web-1"]
    with db.transaction(actor="ops") as s:
        infrastructure.unassign_server(s, "eu-1", "app-1")
    assert_audited(db, "cluster.unassign", "eu-1")
    with pytest.raises(InvalidInput), db.transaction(actor="ops") as s:
        infrastructure.unassign_server(s, "eu-1", "app-1")
    with pytest.raises(NotFound), db.transaction(actor="ops") as s:
        infrastructure.assign_server(s, "eu-1", "ghost")
    with pytest.raises(NotFound), db.transaction(actor="ops") as s:
        infrastructure.assign_server(s, "ghost", "web-1")

    with db.transaction(actor="ops") as s:
        infrastructure.update_cluster(s, "eu-1", ClusterUpdate(subdomain="eu.example.net"))
    entry = assert_audited(db, "cluster.update", "eu-1")
    assert (entry.before["subdomain"], entry.after["subdomain"]) == (
        "apps.example.com",
        "eu.example.net",
    )
    with db.transaction(actor="ops") as s:
        infrastructure.update_cluster(s, "eu-1", ClusterUpdate(max_instances=None))
    with db.session() as s:
        loaded = infrastructure.get_cluster(s, "eu-1")
        assert (loaded.subdomain, loaded.max_instances) == ("eu.example.net", None)

    with db.transaction(actor="ops") as s:
        infrastructure.delete_cluster(s, "eu-1")
    assert_audited(db, "cluster.delete", "eu-1")
    with db.session() as s:
        assert infrastructure.list_clusters(s) == []
        assert s.scalar(select(func.count()).select_from(ClusterServer)) == 0
        assert {x.name for x in infrastructure.list_servers(s)} == {"web-1", "app-1"}


def test_cluster_names_are_unique_whatever_the_case(db, engine_name):
    with db.transaction(actor="ops") as s:
        infrastructure.create_cluster(s, ClusterCreate(name="foo", subdomain="a.test"))
    conflict(db, infrastructure.create_cluster, ClusterCreate(name="Foo", subdomain="b.test"))
    conflict(db, infrastructure.create_cluster, ClusterCreate(name="FOO ", subdomain="b.test"))


@pytest.mark.parametrize(
    "subdomain",
    [
        "",
        "-apps.example.com",
        "apps-.example.com",
        "apps..example.com",
        "apps example.com",
        "apps_x.example.com",
        "a" * 64 + ".example.com",
        ".".join(["abcdefghi"] * 26),  # 259 characters
        "https://apps.example.com",
    ],
)
def test_bad_subdomain_is_rejected(subdomain):
    with pytest.raises(ValidationError):
        ClusterCreate(name="c", subdomain=subdomain)
    with pytest.raises(ValidationError):
        ClusterUpdate(subdomain=subdomain)


def test_every_change_is_audited_with_its_actor(db, engine_name):
    with db.transaction(actor="alice") as s:
        infrastructure.create_mount(s, MountCreate(name="m", root_path="/m"))
        infrastructure.create_server(
            s,
            ServerCreate(
                name="s", server_type="db", host="h", config={"admin_password": ADMIN_PASSWORD}
            ),
        )
        infrastructure.create_cluster(s, ClusterCreate(name="c", subdomain="c.test"))
        infrastructure.assign_server(s, "c", "s")
    with db.transaction(actor="bob") as s:
        infrastructure.update_mount(s, "m", MountUpdate(config={"x": 1}))
        infrastructure.update_server(
            s, "s", ServerUpdate(config={"admin_password": ADMIN_PASSWORD + "2"})
        )
        infrastructure.update_cluster(s, "c", ClusterUpdate(max_instances=3))
        infrastructure.unassign_server(s, "c", "s")
        infrastructure.delete_server(s, "s")
        infrastructure.delete_cluster(s, "c")
        infrastructure.delete_mount(s, "m")
    with db.session() as s:
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.actor, e.action) for e in entries] == [
        ("alice", "mount.create"),
        ("alice", "server.create"),
        ("alice", "cluster.create"),
        ("alice", "cluster.assign"),
        ("bob", "mount.update"),
        ("bob", "server.update"),
        ("bob", "cluster.update"),
        ("bob", "cluster.unassign"),
        ("bob", "server.delete"),
        ("bob", "cluster.delete"),
        ("bob", "mount.delete"),
    ]
    for entry in entries:
        document = json.dumps([entry.before, entry.after], default=str)
        assert ADMIN_PASSWORD not in document, entry.action
        assert entry.target_id is not None
