"""Plain SQL typed into the real database shells: `sqlite3`, `psql` and `mariadb`.

An operator deleting a row by hand gets the same guarantees as the services:
the row and what belongs to it go to the archive with a batch and who did it,
its app keys are destroyed, the name is free at once and ids never come back.
A bare `sqlite3` shell runs with foreign keys OFF, which is the point.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from sqlalchemy import func, select

from dfe.db.session import Database
from dfe.models import (
    ARCHIVED_TABLES,
    AppKey,
    Cluster,
    ClusterServer,
    Instance,
    InstanceGuest,
    InstanceServer,
    OwnerType,
    Server,
    ServerType,
)
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import archive, identity, infrastructure, instances, keys
from dfe.services.errors import Conflict

CLIENTS = {"sqlite": "sqlite3", "postgresql": "psql", "mysql": "mariadb"}


def _client(engine: str) -> str:
    binary = shutil.which(CLIENTS[engine])
    if binary is None:
        message = f"the {CLIENTS[engine]} command-line client is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true)")
        pytest.skip(message)
    return binary


def shell(db: Database, sql: str) -> subprocess.CompletedProcess[str]:
    """Run `sql` through the engine's own command-line client, as an operator would."""
    url = db.engine.url
    engine = url.get_backend_name()
    binary = _client(engine)
    env = dict(os.environ)
    if engine == "sqlite":
        command = [binary, "-bail", str(url.database)]
    elif engine == "postgresql":
        command = [binary, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", url.host or "127.0.0.1"]
        command += ["-p", str(url.port or 5432), "-U", url.username or "root"]
        command += ["-d", str(url.database)]
        if url.password:
            env["PGPASSWORD"] = str(url.password)
    else:
        command = [binary, "-h", url.host or "127.0.0.1", "-P", str(url.port or 3306)]
        command += ["-u", url.username or "root", str(url.database)]
        if url.password:
            env["MYSQL_PWD"] = str(url.password)
    return subprocess.run(
        command, input=sql, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def run_ok(db: Database, sql: str) -> None:
    result = shell(db, sql)
    assert result.returncode == 0, f"{sql!r} failed: {result.stderr}"
    assert "error" not in result.stderr.lower(), result.stderr


def expected_sql_actor(engine: str, archived_by: str | None) -> bool:
    if engine == "postgresql":
        return archived_by == "sql:root"
    if engine == "mysql":
        return archived_by is not None and archived_by.startswith("sql:root@")
    return archived_by is not None and archived_by.startswith("sql")


def build_estate(db: Database, prefix: str = "") -> dict[str, object]:
    """A mount, a cluster, one server of each type in it, and a user."""
    with db.transaction(actor="builder") as s:
        mount = infrastructure.create_mount(
            s, MountCreate(name=f"{prefix}mnt", root_path="/srv/mnt")
        )
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name=f"{prefix}clu", subdomain="apps.example.com")
        )
        servers = {}
        for server_type in ServerType:
            servers[server_type] = infrastructure.create_server(
                s,
                ServerCreate(
                    name=f"{prefix}{server_type.value}-1",
                    server_type=server_type,
                    host="10.0.0.1",
                    mount=mount.name if server_type is ServerType.WEB else None,
                ),
            )
            infrastructure.assign_server(s, cluster.id, servers[server_type].id)
        user = identity.create_user(
            s, UserCreate(email=f"{prefix}owner@example.com", password="a long enough pw")
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


def count(db: Database, table, *where) -> int:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(table).where(*where)) or 0


def test_shell_delete_archives_instance_guest_and_assignments_and_destroys_keys(db, engine_name):
    estate = build_estate(db)
    instance = new_instance(db, estate, "alpha")
    other = new_instance(db, estate, "bravo")
    with db.transaction(actor="builder") as s:
        extra = keys.create_key(s, OwnerType.INSTANCE, instance.id, label="second key")
    assert count(db, AppKey, AppKey.instance_id == instance.id) == 2

    run_ok(db, "DELETE FROM instance_t WHERE name = 'alpha';\n")

    arch_instance = ARCHIVED_TABLES[Instance.__table__]
    arch_guest = ARCHIVED_TABLES[InstanceGuest.__table__]
    arch_asgn = ARCHIVED_TABLES[InstanceServer.__table__]
    with db.session() as s:
        assert s.get(Instance, instance.id) is None
        assert s.scalar(select(func.count()).where(InstanceGuest.instance_id == instance.id)) == 0
        assert s.scalar(select(func.count()).where(InstanceServer.instance_id == instance.id)) == 0
        row = s.execute(select(arch_instance)).one()
        assert (row.id, row.name) == (instance.id, "alpha")
        assert row.archived_at is not None
        assert row.archive_batch
        assert expected_sql_actor(engine_name, row.archived_by), row.archived_by
        guests = s.execute(select(arch_guest)).all()
        assert [g.instance_id for g in guests] == [instance.id]
        assignments = s.execute(select(arch_asgn)).all()
        assert {a.server_id for a in assignments} == {
            server.id
            for server in estate["servers"].values()  # type: ignore[attr-defined]
        }
        for child in (*guests, *assignments):
            assert child.archive_batch == row.archive_batch
            assert child.instance_id == instance.id
            assert expected_sql_actor(engine_name, child.archived_by), child.archived_by
        # Its keys are gone, not archived; the other instance's key is untouched.
        assert s.scalar(select(func.count()).where(AppKey.instance_id == instance.id)) == 0
        assert s.scalar(select(AppKey.id).where(AppKey.client_id == extra.client_id)) is None
        assert s.scalar(select(func.count()).where(AppKey.instance_id == other.id)) == 1
        assert instances.get_instance(s, "bravo").id == other.id


def test_deleted_name_is_reusable_at_once_and_ids_are_never_reused(db, engine_name):
    estate = build_estate(db)
    new_instance(db, estate, "bravo")
    old = new_instance(db, estate, "alpha")  # the highest instance and guest ids so far
    with db.session() as s:
        old_guest_id = s.scalar(select(InstanceGuest.id).where(InstanceGuest.instance_id == old.id))
        max_guest = s.scalar(select(func.max(InstanceGuest.id)))
        max_key = s.scalar(select(func.max(AppKey.id)))
        assert s.scalar(select(func.max(Instance.id))) == old.id
    assert old_guest_id == max_guest

    run_ok(db, "DELETE FROM instance_t WHERE name = 'alpha';\n")

    new = new_instance(db, estate, "alpha")
    assert new.id > old.id
    with db.session() as s:
        new_guest_id = s.scalar(select(InstanceGuest.id).where(InstanceGuest.instance_id == new.id))
        assert new_guest_id is not None and new_guest_id > max_guest
        new_key_ids = s.scalars(select(AppKey.id).where(AppKey.instance_id == new.id)).all()
        assert len(new_key_ids) == 1 and new_key_ids[0] > max_key

    # While the new one is live, the archived one cannot come back under its name.
    with pytest.raises(Conflict) as taken, db.transaction(actor="ops") as s:
        archive.restore(s, "instance", "alpha")
    assert "alpha" in taken.value.message
    assert "taken" in taken.value.message
    with pytest.raises(Conflict), db.transaction(actor="ops") as s:
        archive.restore(s, "instance", str(old.id))
    assert count(db, Instance, Instance.name == "alpha") == 1
    assert count(db, ARCHIVED_TABLES[Instance.__table__]) == 1

    run_ok(db, "DELETE FROM instance_t WHERE name = 'alpha';\n")
    newest = new_instance(db, estate, "charlie")
    assert newest.id > new.id

    # Now the old one (by id) comes back, with its own id, guest row and assignments.
    with db.transaction(actor="ops") as s:
        restored = archive.restore(s, "instance", str(old.id))
    assert (restored.id, restored.name) == (old.id, "alpha")
    with db.session() as s:
        back = instances.get_instance(s, "alpha")
        assert back.id == old.id
        assert s.scalar(select(InstanceGuest.id).where(InstanceGuest.instance_id == old.id)) == (
            old_guest_id
        )
        assert s.scalar(select(func.count()).where(InstanceServer.instance_id == old.id)) == 3
        assert s.scalar(select(func.count()).where(AppKey.instance_id == old.id)) == 1
    # The newer archived 'alpha' (id new.id) stays archived, under the live name.
    arch = ARCHIVED_TABLES[Instance.__table__]
    with db.session() as s:
        assert s.scalars(select(arch.c.id).where(arch.c.name == "alpha")).all() == [new.id]


def test_shell_delete_of_highest_id_then_insert_never_reuses_the_id(db, engine_name):
    estate = build_estate(db)
    ids = []
    for round_ in range(3):
        instance = new_instance(db, estate, f"inst-{round_}")
        assert all(instance.id > earlier for earlier in ids)
        ids.append(instance.id)
        run_ok(db, f"DELETE FROM instance_t WHERE id = {instance.id};\n")
    # Clusters and servers too (archived tables with their own ids).
    run_ok(db, "DELETE FROM cluster_server_asgn_t;\n")
    cluster_id = estate["cluster"].id  # type: ignore[attr-defined]
    run_ok(db, f"DELETE FROM cluster_t WHERE id = {cluster_id};\n")
    with db.transaction(actor="builder") as s:
        again = infrastructure.create_cluster(s, ClusterCreate(name="clu", subdomain="a.example"))
    assert again.id > cluster_id


def _shell_delete_refused(db: Database, sql: str) -> None:
    result = shell(db, sql)
    assert result.returncode != 0, f"{sql!r} should have been refused"


@pytest.mark.parametrize("what", ["cluster", "server"])
def test_shell_delete_of_cluster_or_server_with_instances_fails_and_changes_nothing(
    db, engine_name, what
):
    estate = build_estate(db)
    instance = new_instance(db, estate, "alpha")
    if what == "cluster":
        target = estate["cluster"]
        sql = f"DELETE FROM cluster_t WHERE name = '{target.name}';\n"  # type: ignore[attr-defined]
    else:
        target = estate["servers"][ServerType.DB]  # type: ignore[index]
        sql = f"DELETE FROM server_t WHERE name = '{target.name}';\n"
    before_memberships = count(db, ClusterServer)

    _shell_delete_refused(db, sql)

    model = Cluster if what == "cluster" else Server
    with db.session() as s:
        assert s.get(model, target.id) is not None
        assert s.get(Instance, instance.id) is not None
        assert s.scalar(select(func.count()).select_from(ClusterServer)) == before_memberships
        for table in ARCHIVED_TABLES.values():
            assert s.scalar(select(func.count()).select_from(table)) == 0, table.name
        assert s.scalar(select(func.count()).where(AppKey.instance_id == instance.id)) == 1


def _placeholders(sql: str, values: dict[str, object]) -> str:
    def literal(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        return str(value) if isinstance(value, int) else "'" + str(value) + "'"

    return re.sub(r"(?<!:):([a-z_]+)\b", literal, sql)


def test_documented_plain_sql_restore_works_in_the_shell(db, engine_name):
    estate = build_estate(db)
    instance = new_instance(db, estate, "alpha")
    with db.session() as s:
        guest_id = s.scalar(
            select(InstanceGuest.id).where(InstanceGuest.instance_id == instance.id)
        )
    run_ok(db, "DELETE FROM instance_t WHERE name = 'alpha';\n")
    with db.session() as s:
        shown = archive.show_archived(s, "instance", "alpha")
    statements = archive.restore_sql("instance")
    assert "INSERT INTO instance_t" in statements
    assert "SELECT" in statements
    assert ":archive_id" in statements
    script = _placeholders(
        statements,
        {"archive_id": shown.archive_id, "id": shown.id, "archive_batch": shown.archive_batch},
    )

    run_ok(db, "BEGIN;\n" + script + "\nCOMMIT;\n")

    with db.session() as s:
        back = instances.get_instance(s, "alpha")
        assert back.id == instance.id
        assert back.cluster_id == estate["cluster"].id  # type: ignore[attr-defined]
        assert s.scalar(select(InstanceGuest.id).where(InstanceGuest.instance_id == back.id)) == (
            guest_id
        )
        assert s.scalar(select(func.count()).where(InstanceServer.instance_id == back.id)) == 3
        for table in ARCHIVED_TABLES.values():
            assert s.scalar(select(func.count()).select_from(table)) == 0, table.name
    # The restored row is a normal live row again: deleting it archives it once more.
    run_ok(db, "DELETE FROM instance_t WHERE name = 'alpha';\n")
    assert count(db, ARCHIVED_TABLES[Instance.__table__]) == 1
    assert count(db, ARCHIVED_TABLES[InstanceGuest.__table__]) == 1


def test_separate_shell_statements_are_separate_archive_batches(db, engine_name):
    """An operator unassigns a cluster's server, then deletes the cluster, in two
    statements: restoring the cluster must not bring back the membership that was
    removed on its own (each statement outside a transaction is its own batch)."""
    with db.transaction(actor="builder") as s:
        server = infrastructure.create_server(
            s, ServerCreate(name="web-1", server_type=ServerType.WEB, host="10.0.0.1")
        )
        clusters = []
        for number in range(12):
            cluster = infrastructure.create_cluster(
                s, ClusterCreate(name=f"c{number}", subdomain="apps.example.com")
            )
            infrastructure.assign_server(s, cluster.id, server.id)
            clusters.append(cluster)
    script = "".join(
        f"DELETE FROM cluster_server_asgn_t WHERE cluster_id = {c.id};\n"
        f"DELETE FROM cluster_t WHERE id = {c.id};\n"
        for c in clusters
    )

    run_ok(db, script)

    arch_cluster = ARCHIVED_TABLES[Cluster.__table__]
    arch_membership = ARCHIVED_TABLES[ClusterServer.__table__]
    with db.session() as s:
        cluster_batches = s.scalars(select(arch_cluster.c.archive_batch)).all()
        membership_batches = s.scalars(select(arch_membership.c.archive_batch)).all()
    for cluster in clusters:
        with db.transaction(actor="ops") as s:
            archive.restore(s, "cluster", cluster.name)
    with db.session() as s:
        restored = s.execute(select(ClusterServer.cluster_id)).scalars().all()
    assert restored == [], "restore brought back memberships deleted by their own statement"
    assert len(set(cluster_batches)) == len(clusters), sorted(cluster_batches)
    assert not set(cluster_batches) & set(membership_batches)
