"""`dfe.services.archive.restore`: bringing back clusters, servers and instances."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select

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
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import archive, identity, infrastructure, instances
from dfe.services.errors import Conflict, InvalidInput, NotFound

ARCH_CLUSTER = ARCHIVED_TABLES[Cluster.__table__]
ARCH_SERVER = ARCHIVED_TABLES[Server.__table__]
ARCH_INSTANCE = ARCHIVED_TABLES[Instance.__table__]
ARCH_GUEST = ARCHIVED_TABLES[InstanceGuest.__table__]
ARCH_MEMBERSHIP = ARCHIVED_TABLES[ClusterServer.__table__]
ARCH_ASSIGNMENT = ARCHIVED_TABLES[InstanceServer.__table__]


def build_estate(db: Database) -> dict[str, object]:
    with db.transaction(actor="builder") as s:
        mount = infrastructure.create_mount(s, MountCreate(name="mnt", root_path="/srv/mnt"))
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="clu", subdomain="apps.example.com")
        )
        servers = {}
        for server_type in ServerType:
            servers[server_type] = infrastructure.create_server(
                s,
                ServerCreate(
                    name=f"{server_type.value}-1",
                    server_type=server_type,
                    host="10.0.0.1",
                    mount=mount.name if server_type is ServerType.WEB else None,
                ),
            )
            infrastructure.assign_server(s, cluster.id, servers[server_type].id)
        user = identity.create_user(
            s, UserCreate(email="owner@example.com", password="a long enough pw")
        )
    return {"mount": mount, "cluster": cluster, "servers": servers, "user": user}


def new_instance(db: Database, estate: dict[str, object], name: str) -> Instance:
    with db.transaction(actor="builder") as s:
        return instances.create_instance_record(
            s,
            name,
            estate["user"],  # type: ignore[arg-type]
            estate["cluster"],  # type: ignore[arg-type]
            estate["servers"],  # type: ignore[arg-type]
        )


def table_counts(db: Database) -> dict[str, int]:
    """Rows per live and archive table, to prove a refused restore changed nothing."""
    tables = [*ARCHIVED_TABLES, *ARCHIVED_TABLES.values(), AppKey.__table__]
    with db.session() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) or 0 for t in tables}


def restore(db: Database, kind: str, ref: str, actor: str = "ops"):  # type: ignore[no-untyped-def]
    with db.transaction(actor=actor) as s:
        return archive.restore(s, kind, ref)


def refused(db: Database, error: type[Exception], kind: str, ref: str) -> str:
    """Restore must fail with `error` and change nothing; returns the message."""
    before = table_counts(db)
    with pytest.raises(error) as caught:
        restore(db, kind, ref)
    assert table_counts(db) == before
    message = str(caught.value)
    assert "Traceback" not in message
    assert "\n" not in message
    return message


def membership_names(db: Database, cluster: str) -> set[str]:
    with db.session() as s:
        found = infrastructure.get_cluster(s, cluster)
        return {server.name for server in infrastructure.cluster_servers(s, found)}


def test_restore_cluster_brings_back_its_server_memberships(db, engine_name):
    estate = build_estate(db)
    cluster = estate["cluster"]
    with db.transaction(actor="alice") as s:
        infrastructure.delete_cluster(s, "clu")
    with db.session() as s:
        row = s.execute(select(ARCH_CLUSTER)).one()
        members = s.execute(select(ARCH_MEMBERSHIP)).all()
        assert s.scalar(select(func.count()).select_from(ClusterServer)) == 0
    assert len(members) == 3
    assert {m.archive_batch for m in members} == {row.archive_batch}
    assert {m.archived_by for m in members} == {"alice"} == {row.archived_by}

    shown = restore(db, "cluster", "clu", actor="bob")

    assert (shown.id, shown.name) == (cluster.id, "clu")  # type: ignore[attr-defined]
    assert membership_names(db, "clu") == {"db-1", "web-1", "app-1"}
    counts = table_counts(db)
    assert counts[ARCH_CLUSTER.name] == counts[ARCH_MEMBERSHIP.name] == 0
    with db.session() as s:
        back = infrastructure.get_cluster(s, "clu")
        assert back.id == cluster.id  # type: ignore[attr-defined]
        assert back.subdomain == "apps.example.com"
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "cluster.restore")).one()
        assert (entry.actor, entry.target_name) == ("bob", "clu")


def test_restore_server_brings_back_its_memberships(db, engine_name):
    estate = build_estate(db)
    with db.transaction(actor="builder") as s:
        second = infrastructure.create_cluster(s, ClusterCreate(name="two", subdomain="two.test"))
        infrastructure.assign_server(s, second.id, "app-1")
        infrastructure.delete_server(s, "app-1")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ARCH_MEMBERSHIP)) == 2
    restore(db, "server", "app-1")
    assert membership_names(db, "clu") == {"db-1", "web-1", "app-1"}
    assert membership_names(db, "two") == {"app-1"}
    with db.session() as s:
        server = infrastructure.get_server(s, "app-1")
        assert server.id == estate["servers"][ServerType.APP].id  # type: ignore[index]
        assert server.server_type is ServerType.APP
    assert table_counts(db)[ARCH_MEMBERSHIP.name] == 0


def test_restore_instance_brings_guest_assignments_and_a_new_key(db, engine_name):
    estate = build_estate(db)
    instance = new_instance(db, estate, "alpha")
    with db.session() as s:
        guest = s.scalars(
            select(InstanceGuest).where(InstanceGuest.instance_id == instance.id)
        ).one()
        old_keys = s.scalars(
            select(AppKey.client_id).where(AppKey.instance_id == instance.id)
        ).all()
    assert len(old_keys) == 1
    with db.transaction(actor="builder") as s:
        instances.delete_instance_record(s, "alpha")

    restore(db, "instance", "alpha")

    with db.session() as s:
        back = instances.get_instance(s, "alpha")
        assert back.id == instance.id
        assert back.storage_key == instance.storage_key
        assert back.user_id == estate["user"].id  # type: ignore[attr-defined]
        guests = s.scalars(select(InstanceGuest).where(InstanceGuest.instance_id == back.id)).all()
        assert [(g.id, g.public_host) for g in guests] == [(guest.id, "alpha.apps.example.com")]
        servers = s.scalars(
            select(InstanceServer.server_id).where(InstanceServer.instance_id == back.id)
        ).all()
        assert set(servers) == {
            server.id
            for server in estate["servers"].values()  # type: ignore[attr-defined]
        }
        new_keys = s.scalars(select(AppKey.client_id).where(AppKey.instance_id == back.id)).all()
    assert len(new_keys) == 1
    assert new_keys[0] not in old_keys
    counts = table_counts(db)
    for table in ARCHIVED_TABLES.values():
        assert counts[table.name] == 0, table.name


def test_restore_refused_when_the_name_is_taken(db, engine_name):
    estate = build_estate(db)
    new_instance(db, estate, "alpha")
    with db.transaction(actor="builder") as s:
        instances.delete_instance_record(s, "alpha")
        infrastructure.unassign_server(s, "clu", "web-1")
        infrastructure.create_cluster(s, ClusterCreate(name="spare", subdomain="spare.test"))
        infrastructure.delete_cluster(s, "spare")
        infrastructure.create_cluster(s, ClusterCreate(name="spare", subdomain="other.test"))
    new_instance(db, estate, "alpha")

    message = refused(db, Conflict, "instance", "alpha")
    assert "instance 'alpha'" in message
    assert "taken" in message
    message = refused(db, Conflict, "cluster", "spare")
    assert "cluster 'spare'" in message
    assert "taken" in message


def test_restore_refused_while_a_parent_is_archived(db, engine_name):
    estate = build_estate(db)
    new_instance(db, estate, "alpha")
    with db.transaction(actor="builder") as s:
        instances.delete_instance_record(s, "alpha")
        infrastructure.delete_cluster(s, "clu")

    message = refused(db, Conflict, "instance", "alpha")
    assert "instance 'alpha'" in message
    assert "cluster 'clu' is archived" in message
    assert "dfe restore cluster clu" in message

    restore(db, "cluster", "clu")
    with db.transaction(actor="builder") as s:
        infrastructure.delete_server(s, "db-1")
    message = refused(db, Conflict, "instance", "alpha")
    assert "server 'db-1' is archived" in message
    assert "dfe restore server db-1" in message

    restore(db, "server", "db-1")
    assert membership_names(db, "clu") == {"db-1", "web-1", "app-1"}

    # A cluster whose member server is archived cannot come back with that membership.
    with db.transaction(actor="builder") as s:
        infrastructure.delete_cluster(s, "clu")
    with db.transaction(actor="builder") as s:
        infrastructure.delete_server(s, "web-1")
    message = refused(db, Conflict, "cluster", "clu")
    assert "server 'web-1' is archived" in message

    restore(db, "server", "web-1")
    restore(db, "cluster", "clu")
    restore(db, "instance", "alpha")
    assert membership_names(db, "clu") == {"db-1", "web-1", "app-1"}
    with db.session() as s:
        assert instances.get_instance(s, "alpha").cluster_id == estate["cluster"].id  # type: ignore[attr-defined]


def test_cluster_and_server_deleted_in_one_transaction_can_be_restored(db, engine_name):
    """Decommissioning a cluster and one of its servers together archives their
    membership once, in the shared batch; restoring one, then the other, must work."""
    build_estate(db)
    with db.transaction(actor="builder") as s:
        infrastructure.delete_cluster(s, "clu")
        infrastructure.delete_server(s, "web-1")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ARCH_MEMBERSHIP)) == 3

    refusal: Conflict | None = None
    try:
        restore(db, "cluster", "clu")
    except Conflict as first_refusal:
        refusal = first_refusal
    if refusal is None:
        restore(db, "server", "web-1")
    else:
        # Following the advice in the refusal must work.
        assert "dfe restore server web-1" in str(refusal)
        restore(db, "server", "web-1")
        restore(db, "cluster", "clu")
    assert membership_names(db, "clu") == {"db-1", "web-1", "app-1"}
    assert table_counts(db)[ARCH_MEMBERSHIP.name] == 0


def test_restore_refused_when_the_owner_user_was_deleted(db, engine_name):
    estate = build_estate(db)
    new_instance(db, estate, "alpha")
    with db.transaction(actor="builder") as s:
        instances.delete_instance_record(s, "alpha")
        identity.delete_user(s, "owner@example.com")
    message = refused(db, Conflict, "instance", "alpha")
    assert "instance 'alpha'" in message
    assert f"user id {estate['user'].id} was deleted" in message  # type: ignore[attr-defined]


def test_restore_of_nothing_archived_is_not_found(db, engine_name):
    build_estate(db)
    message = refused(db, NotFound, "instance", "ghost")
    assert "ghost" in message
    refused(db, NotFound, "cluster", "clu")  # live, never archived
    refused(db, NotFound, "server", "99999999")
    message = refused(db, InvalidInput, "mount", "mnt")
    assert "mount" in message


def test_the_most_recent_batch_of_a_name_is_restored(db, engine_name):
    ids = []
    for subdomain in ("first.test", "second.test", "third.test"):
        with db.transaction(actor="builder") as s:
            cluster = infrastructure.create_cluster(
                s, ClusterCreate(name="again", subdomain=subdomain)
            )
            ids.append(cluster.id)
        with db.transaction(actor="builder") as s:
            infrastructure.delete_cluster(s, "again")
    assert ids == sorted(set(ids))

    shown = restore(db, "cluster", "Again")

    assert shown.id == ids[-1]
    with db.session() as s:
        live = infrastructure.get_cluster(s, "again")
        assert (live.id, live.subdomain) == (ids[-1], "third.test")
        left = s.scalars(select(ARCH_CLUSTER.c.id).order_by(ARCH_CLUSTER.c.id)).all()
    assert left == ids[:2]
    refused(db, Conflict, "cluster", "again")
    # By id, an older one can be chosen once the name is free.
    with db.transaction(actor="builder") as s:
        infrastructure.delete_cluster(s, "again")
    restore(db, "cluster", str(ids[0]))
    with db.session() as s:
        assert infrastructure.get_cluster(s, "again").subdomain == "first.test"


def test_archived_by_records_the_session_actor_on_every_path(db, engine_name):
    estate = build_estate(db)
    new_instance(db, estate, "alpha")
    new_instance(db, estate, "bravo")
    with db.transaction(actor="alice") as s:
        instances.delete_instance_record(s, "alpha")  # service (ORM unit of work)
    with db.transaction(actor="bob") as s:
        s.execute(delete(Instance).where(Instance.name == "bravo"))  # ORM bulk delete
    with db.transaction(actor="carol") as s:
        infrastructure.unassign_server(s, "clu", "db-1")
    with db.session() as s:
        by_name = dict(s.execute(select(ARCH_INSTANCE.c.name, ARCH_INSTANCE.c.archived_by)).all())
        assert by_name == {"alpha": "alice", "bravo": "bob"}
        for table in (ARCH_GUEST, ARCH_ASSIGNMENT):
            rows = s.execute(select(table.c.instance_id, table.c.archived_by)).all()
            ids = dict(s.execute(select(ARCH_INSTANCE.c.id, ARCH_INSTANCE.c.archived_by)).all())
            assert rows
            for instance_id, archived_by in rows:
                assert archived_by == ids[instance_id]
        assert s.execute(select(ARCH_MEMBERSHIP.c.archived_by)).scalars().all() == ["carol"]
        batches = s.scalars(select(ARCH_INSTANCE.c.archive_batch)).all()
        assert len(set(batches)) == 2
        assert all(s.execute(select(t.c.archived_at)).scalars().all() for t in (ARCH_GUEST,))


def test_restore_by_name_of_a_cluster_named_with_digits(db, engine_name):
    """Resource names may be all digits ('2024'); restore by that name must find it."""
    with db.transaction(actor="builder") as s:
        infrastructure.create_cluster(s, ClusterCreate(name="2024", subdomain="y.test"))
    with db.transaction(actor="builder") as s:
        infrastructure.delete_cluster(s, "2024")
    shown = restore(db, "cluster", "2024")
    assert shown.name == "2024"
    with db.session() as s:
        assert infrastructure.get_cluster(s, "2024").subdomain == "y.test"
