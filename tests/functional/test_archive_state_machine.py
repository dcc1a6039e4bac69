"""A hypothesis state machine over the archive, on every engine.

Clusters, servers, memberships and instances are created, deleted by every path
(service, ORM unit of work, ORM bulk delete, plain SQL) and restored. A model
tracks what should be live and what archived; after every step the database
must agree with it: live plus archived rows account for every entity ever
created, nothing is both or archived twice, every archive row says when and in
which batch, children go and come back with their parent, and no app key
outlives its owner.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Table, delete, select
from sqlalchemy.exc import IntegrityError

from dfe.db.base import Base
from dfe.db.session import Database
from dfe.models import (
    ARCHIVED_TABLES,
    AppKey,
    Cluster,
    ClusterServer,
    Instance,
    InstanceGuest,
    InstanceServer,
    Server,
    ServerType,
    User,
)
from dfe.schemas import ClusterCreate, ServerCreate, UserCreate
from dfe.services import archive, identity, infrastructure, instances
from dfe.services.errors import Conflict, NotFound

CLUSTER_NAMES = ("east", "west")
SERVER_NAMES = ("s1", "s2", "s3", "s4", "s5", "s6")
INSTANCE_NAMES = ("alpha", "bravo", "charlie")
PATHS = ("service", "orm-unit", "orm-bulk", "sql")
SQL = "<sql>"  # archived by a plain SQL statement: the database user, not the app's actor

LIVE = {
    "cluster": Cluster.__table__,
    "server": Server.__table__,
    "instance": Instance.__table__,
    "guest": InstanceGuest.__table__,
}
ARCH = {kind: ARCHIVED_TABLES[table] for kind, table in LIVE.items()}  # type: ignore[index]
ARCH_MEMBERSHIP = ARCHIVED_TABLES[ClusterServer.__table__]  # type: ignore[index]
ARCH_ASSIGNMENT = ARCHIVED_TABLES[InstanceServer.__table__]  # type: ignore[index]


def wipe(db: Database) -> None:
    """Empty every table: live tables children first, then the archives they filled."""
    archives = set(ARCHIVED_TABLES.values())
    live = [t for t in reversed(Base.metadata.sorted_tables) if t not in archives]
    with db.engine.begin() as connection:
        for table in live:
            connection.execute(table.delete())
        for table in archives:
            connection.execute(table.delete())


@dataclass
class Entity:
    name: str
    live: bool = True
    archived_by: str | None = None
    archive_seq: int = 0  # order of archiving: restore by name takes the latest
    server_type: ServerType | None = None
    cluster_id: int | None = None
    server_ids: dict[ServerType, int] = field(default_factory=dict)
    guest_id: int | None = None


class ArchiveMachine(RuleBasedStateMachine):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.engine = db.dialect
        wipe(db)
        with db.transaction(actor="setup") as s:
            user = identity.create_user(
                s, UserCreate(email="owner@example.com", password="a long enough pw")
            )
            self.user_id = user.id
        self.clusters: dict[int, Entity] = {}
        self.servers: dict[int, Entity] = {}
        self.instances: dict[int, Entity] = {}
        self.memberships: set[tuple[int, int]] = set()
        # Archived memberships: (cluster id, server id, why, archived by); why is
        # ("cluster", id) or ("server", id) (archived with that parent) or ("unassign", n).
        self.archived_memberships: list[tuple[int, int, tuple[str, int], str]] = []
        self.counter = itertools.count(1)
        self.actor = "setup"
        # A placeable estate to start from: one cluster, two servers of each type in it.
        with db.transaction(actor="setup") as s:
            cluster = infrastructure.create_cluster(
                s, ClusterCreate(name=CLUSTER_NAMES[0], subdomain="east.example.com")
            )
            self.clusters[cluster.id] = Entity(cluster.name)
            for name, server_type in zip(SERVER_NAMES, [*ServerType, *ServerType], strict=True):
                server = infrastructure.create_server(
                    s, ServerCreate(name=name, server_type=server_type, host="10.0.0.1")
                )
                self.servers[server.id] = Entity(name, server_type=server_type)
                infrastructure.assign_server(s, cluster.id, server.id)
                self.memberships.add((cluster.id, server.id))

    # helpers

    def next_actor(self) -> str:
        self.actor = f"actor-{next(self.counter)}"
        return self.actor

    def by(self, path: str) -> str:
        return SQL if path == "sql" else self.actor

    @staticmethod
    def live_ids(entities: dict[int, Entity]) -> list[int]:
        return sorted(i for i, e in entities.items() if e.live)

    @staticmethod
    def archived_ids(entities: dict[int, Entity]) -> list[int]:
        return sorted(i for i, e in entities.items() if not e.live)

    def live_name(self, entities: dict[int, Entity], name: str) -> bool:
        return any(e.live and e.name == name for e in entities.values())

    def instances_using(self, cluster_id: int | None = None, server_id: int | None = None) -> int:
        return sum(
            1
            for e in self.instances.values()
            if e.live and (e.cluster_id == cluster_id or server_id in e.server_ids.values())
        )

    def archive(self, entity: Entity, path: str) -> None:
        entity.live = False
        entity.archived_by = self.by(path)
        entity.archive_seq = next(self.counter)

    def delete_row(self, model: type[Base], path: str, where, service) -> None:  # type: ignore[no-untyped-def]
        """Delete by one path; raises what that path raises on a refusal."""
        table: Table = model.__table__  # type: ignore[assignment]
        if path == "service":
            with self.db.transaction(actor=self.actor) as s:
                service(s)
        elif path == "orm-unit":
            with self.db.transaction(actor=self.actor) as s:
                for row in s.scalars(select(model).where(*where(model))).all():
                    s.delete(row)
                s.flush()
        elif path == "orm-bulk":
            with self.db.transaction(actor=self.actor) as s:
                s.execute(delete(model).where(*where(model)))
        else:
            condition = " AND ".join(
                f"{column} = {int(value)}" for column, value in where(None).items()
            )
            with self.db.engine.begin() as connection:
                connection.exec_driver_sql(f"DELETE FROM {table.name} WHERE {condition}")

    def refused(self, model: type[Base], path: str, where, service) -> None:  # type: ignore[no-untyped-def]
        expected = Conflict if path == "service" else IntegrityError
        with pytest.raises(expected):
            self.delete_row(model, path, where, service)

    # rules: clusters and servers

    @rule(name=st.sampled_from(CLUSTER_NAMES))
    def create_cluster(self, name: str) -> None:
        self.next_actor()
        data = ClusterCreate(name=name, subdomain=f"{name}.example.com")
        if self.live_name(self.clusters, name):
            with pytest.raises(Conflict), self.db.transaction(actor=self.actor) as s:
                infrastructure.create_cluster(s, data)
            return
        with self.db.transaction(actor=self.actor) as s:
            cluster = infrastructure.create_cluster(s, data)
        assert cluster.id not in self.clusters, "a cluster id came back"
        assert all(cluster.id > i for i in self.clusters)
        self.clusters[cluster.id] = Entity(name)

    @rule(name=st.sampled_from(SERVER_NAMES), server_type=st.sampled_from(list(ServerType)))
    def create_server(self, name: str, server_type: ServerType) -> None:
        self.next_actor()
        data = ServerCreate(name=name, server_type=server_type, host="10.0.0.1")
        if self.live_name(self.servers, name):
            with pytest.raises(Conflict), self.db.transaction(actor=self.actor) as s:
                infrastructure.create_server(s, data)
            return
        with self.db.transaction(actor=self.actor) as s:
            server = infrastructure.create_server(s, data)
        assert server.id not in self.servers, "a server id came back"
        assert all(server.id > i for i in self.servers)
        self.servers[server.id] = Entity(name, server_type=server_type)

    @precondition(lambda self: self.live_ids(self.clusters) and self.live_ids(self.servers))
    @rule(data=st.data())
    def assign(self, data: st.DataObject) -> None:
        self.next_actor()
        cluster_id = data.draw(st.sampled_from(self.live_ids(self.clusters)))
        server_id = data.draw(st.sampled_from(self.live_ids(self.servers)))
        if (cluster_id, server_id) in self.memberships:
            with pytest.raises(Conflict), self.db.transaction(actor=self.actor) as s:
                infrastructure.assign_server(s, cluster_id, server_id)
            return
        with self.db.transaction(actor=self.actor) as s:
            infrastructure.assign_server(s, cluster_id, server_id)
        self.memberships.add((cluster_id, server_id))

    @precondition(lambda self: self.memberships)
    @rule(data=st.data(), path=st.sampled_from(PATHS))
    def unassign(self, data: st.DataObject, path: str) -> None:
        self.next_actor()
        cluster_id, server_id = data.draw(st.sampled_from(sorted(self.memberships)))

        def where(model):  # type: ignore[no-untyped-def]
            if model is None:
                return {"cluster_id": cluster_id, "server_id": server_id}
            return (model.cluster_id == cluster_id, model.server_id == server_id)

        self.delete_row(
            ClusterServer,
            path,
            where,
            lambda s: infrastructure.unassign_server(s, cluster_id, server_id),
        )
        self.memberships.discard((cluster_id, server_id))
        self.archived_memberships.append(
            (cluster_id, server_id, ("unassign", next(self.counter)), self.by(path))
        )

    @precondition(lambda self: self.live_ids(self.clusters))
    @rule(data=st.data(), path=st.sampled_from(PATHS))
    def delete_cluster(self, data: st.DataObject, path: str) -> None:
        self.next_actor()
        cluster_id = data.draw(st.sampled_from(self.live_ids(self.clusters)))
        entity = self.clusters[cluster_id]

        def where(model):  # type: ignore[no-untyped-def]
            return {"id": cluster_id} if model is None else (model.id == cluster_id,)

        def service(s):  # type: ignore[no-untyped-def]
            infrastructure.delete_cluster(s, entity.name)

        if self.instances_using(cluster_id=cluster_id):
            self.refused(Cluster, path, where, service)
            return
        self.delete_row(Cluster, path, where, service)
        self.archive(entity, path)
        for pair in sorted(p for p in self.memberships if p[0] == cluster_id):
            self.memberships.discard(pair)
            self.archived_memberships.append((*pair, ("cluster", cluster_id), self.by(path)))

    @precondition(lambda self: self.live_ids(self.servers))
    @rule(data=st.data(), path=st.sampled_from(PATHS))
    def delete_server(self, data: st.DataObject, path: str) -> None:
        self.next_actor()
        server_id = data.draw(st.sampled_from(self.live_ids(self.servers)))
        entity = self.servers[server_id]

        def where(model):  # type: ignore[no-untyped-def]
            return {"id": server_id} if model is None else (model.id == server_id,)

        def service(s):  # type: ignore[no-untyped-def]
            infrastructure.delete_server(s, entity.name)

        if self.instances_using(server_id=server_id):
            self.refused(Server, path, where, service)
            return
        self.delete_row(Server, path, where, service)
        self.archive(entity, path)
        for pair in sorted(p for p in self.memberships if p[1] == server_id):
            self.memberships.discard(pair)
            self.archived_memberships.append((*pair, ("server", server_id), self.by(path)))

    @precondition(lambda self: self.live_ids(self.instances))
    @rule(
        data=st.data(),
        path=st.sampled_from(PATHS),
        kind=st.sampled_from(["cluster", "server"]),
    )
    def delete_parent_in_use(self, data: st.DataObject, path: str, kind: str) -> None:
        """Deleting a cluster or server an instance uses fails, by every path."""
        self.next_actor()
        instance = self.instances[data.draw(st.sampled_from(self.live_ids(self.instances)))]
        if kind == "cluster":
            model: type[Base] = Cluster
            target = instance.cluster_id
            name = self.clusters[target].name  # type: ignore[index]
        else:
            model = Server
            target = data.draw(st.sampled_from(sorted(instance.server_ids.values())))
            name = self.servers[target].name

        def where(model):  # type: ignore[no-untyped-def]
            return {"id": target} if model is None else (model.id == target,)

        def service(s):  # type: ignore[no-untyped-def]
            if kind == "cluster":
                infrastructure.delete_cluster(s, name)
            else:
                infrastructure.delete_server(s, name)

        self.refused(model, path, where, service)

    # rules: instances

    def placeable(self) -> bool:
        types = {e.server_type for e in self.servers.values() if e.live}
        return bool(self.live_ids(self.clusters)) and types == set(ServerType)

    @precondition(placeable)
    @rule(name=st.sampled_from(INSTANCE_NAMES), data=st.data())
    def create_instance(self, name: str, data: st.DataObject) -> None:
        self.next_actor()
        cluster_id = data.draw(st.sampled_from(self.live_ids(self.clusters)))
        server_ids = {
            server_type: data.draw(
                st.sampled_from(
                    [
                        i
                        for i, e in sorted(self.servers.items())
                        if e.live and e.server_type == server_type
                    ]
                )
            )
            for server_type in ServerType
        }
        with self.db.transaction(actor=self.actor) as s:
            user = s.get(User, self.user_id)
            cluster = s.get(Cluster, cluster_id)
            servers = {t: s.get(Server, i) for t, i in server_ids.items()}
            if self.live_name(self.instances, name):
                with pytest.raises(Conflict):
                    instances.create_instance_record(s, name, user, cluster, servers)  # type: ignore[arg-type]
                return
            instance = instances.create_instance_record(s, name, user, cluster, servers)  # type: ignore[arg-type]
            guest_id = s.scalar(
                select(InstanceGuest.id).where(InstanceGuest.instance_id == instance.id)
            )
        assert instance.id not in self.instances, "an instance id came back"
        assert all(instance.id > i for i in self.instances)
        assert all(guest_id > e.guest_id for e in self.instances.values())  # type: ignore[operator]
        self.instances[instance.id] = Entity(
            name, cluster_id=cluster_id, server_ids=server_ids, guest_id=guest_id
        )

    @precondition(lambda self: self.live_ids(self.instances))
    @rule(data=st.data(), path=st.sampled_from(PATHS))
    def delete_instance(self, data: st.DataObject, path: str) -> None:
        self.next_actor()
        instance_id = data.draw(st.sampled_from(self.live_ids(self.instances)))
        entity = self.instances[instance_id]

        def where(model):  # type: ignore[no-untyped-def]
            return {"id": instance_id} if model is None else (model.id == instance_id,)

        self.delete_row(
            Instance, path, where, lambda s: instances.delete_instance_record(s, entity.name)
        )
        self.archive(entity, path)

    # rules: restore

    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        self.next_actor()
        models = {"cluster": self.clusters, "server": self.servers, "instance": self.instances}
        with_archive = [k for k, found in models.items() if self.archived_ids(found)]
        kind = data.draw(st.sampled_from(with_archive + list(models)))
        entities = models[kind]
        names = {"cluster": CLUSTER_NAMES, "server": SERVER_NAMES, "instance": INSTANCE_NAMES}
        # Mostly names with something archived (restorable or refused), sometimes any name.
        archived_names = sorted({e.name for e in entities.values() if not e.live})
        name = data.draw(st.sampled_from(archived_names + list(names[kind])))
        archived = [
            (e.archive_seq, i) for i, e in entities.items() if not e.live and e.name == name
        ]
        if not archived:
            with pytest.raises(NotFound), self.db.transaction(actor=self.actor) as s:
                archive.restore(s, kind, name)
            return
        _, entity_id = max(archived)
        entity = entities[entity_id]
        children = self.children_of(kind, entity_id)
        if self.live_name(entities, name) or not self.parents_live(kind, entity, children):
            with pytest.raises(Conflict) as refused, self.db.transaction(actor=self.actor) as s:
                archive.restore(s, kind, name)
            assert f"{kind} '{name}'" in refused.value.message
            return
        with self.db.transaction(actor=self.actor) as s:
            shown = archive.restore(s, kind, name)
        assert shown.id == entity_id
        entity.live = True
        entity.archived_by = None
        for child in children:
            self.archived_memberships.remove(child)
            self.memberships.add(child[:2])

    def children_of(self, kind: str, entity_id: int) -> list[tuple[int, int, tuple[str, int], str]]:
        if kind == "instance":
            return []  # guest row and assignments: derived from the instance
        return [m for m in self.archived_memberships if m[2] == (kind, entity_id)]

    def parents_live(self, kind: str, entity: Entity, children) -> bool:  # type: ignore[no-untyped-def]
        if kind == "instance":
            return self.clusters[entity.cluster_id].live and all(  # type: ignore[index]
                self.servers[i].live for i in entity.server_ids.values()
            )
        if kind == "cluster":
            return all(self.servers[child[1]].live for child in children)
        return all(self.clusters[child[0]].live for child in children)

    # invariants

    def who(self, archived_by: str | None) -> str | None:
        """An archive row's archived_by, with the engine's SQL-user form read as SQL."""
        if archived_by is None:
            return None
        if self.engine == "postgresql" and archived_by == "sql:root":
            return SQL
        if self.engine == "mysql" and archived_by.startswith("sql:root@"):
            return SQL
        if self.engine == "sqlite" and archived_by.startswith("sql"):
            return SQL
        return archived_by

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        with self.db.engine.connect() as c:
            live = {k: sorted(c.scalars(select(t.c.id))) for k, t in LIVE.items()}
            arch = {
                k: c.execute(
                    select(
                        t.c.id,
                        t.c.name if "name" in t.c else t.c.instance_id,
                        t.c.archived_at,
                        t.c.archived_by,
                        t.c.archive_batch,
                    )
                ).all()
                for k, t in ARCH.items()
            }
            guests_live = dict(c.execute(select(InstanceGuest.id, InstanceGuest.instance_id)).all())
            memberships = set(
                c.execute(select(ClusterServer.cluster_id, ClusterServer.server_id)).all()
            )
            arch_memberships = c.execute(select(ARCH_MEMBERSHIP)).all()
            assignments = set(
                c.execute(select(InstanceServer.instance_id, InstanceServer.server_id)).all()
            )
            arch_assignments = c.execute(select(ARCH_ASSIGNMENT)).all()
            key_owners = c.execute(
                select(AppKey.instance_id, AppKey.cluster_id, AppKey.server_id, AppKey.user_id)
            ).all()

        models = {"cluster": self.clusters, "server": self.servers, "instance": self.instances}
        for kind, entities in models.items():
            archived_ids = sorted(row.id for row in arch[kind])
            # No id archived twice, none both live and archived, none lost.
            assert len(archived_ids) == len(set(archived_ids)), f"{kind} archived twice"
            assert not set(live[kind]) & set(archived_ids), f"{kind} both live and archived"
            assert sorted(live[kind] + archived_ids) == sorted(entities), f"{kind} lost"
            assert live[kind] == self.live_ids(entities), kind
            assert archived_ids == self.archived_ids(entities), kind
            for row in arch[kind]:
                entity = entities[row.id]
                assert row[1] == entity.name
                assert self.who(row.archived_by) == entity.archived_by, (kind, row.archived_by)

        every_archive_row = [*arch["guest"], *arch_memberships, *arch_assignments]
        every_archive_row += [*arch["cluster"], *arch["server"], *arch["instance"]]
        for row in every_archive_row:
            assert row.archived_at is not None
            assert row.archive_batch

        # Guest rows: live exactly when their instance is, archived in its batch.
        live_instances = set(self.live_ids(self.instances))
        assert sorted(guests_live.values()) == sorted(live_instances)
        assert guests_live == {self.instances[i].guest_id: i for i in live_instances}
        instance_batch = {row.id: row.archive_batch for row in arch["instance"]}
        archived_guests = {row.id: row for row in arch["guest"]}
        assert sorted(row[1] for row in arch["guest"]) == self.archived_ids(self.instances)
        for instance_id in self.archived_ids(self.instances):
            guest = archived_guests[self.instances[instance_id].guest_id]  # type: ignore[index]
            assert guest.archive_batch == instance_batch[instance_id]

        # Instance assignments: the instance's servers, live iff the instance is.
        def servers_of(ids: list[int] | set[int]) -> set[tuple[int, int]]:
            return {
                (i, server_id) for i in ids for server_id in self.instances[i].server_ids.values()
            }

        assert assignments == servers_of(live_instances)
        archived_pairs = [(row.instance_id, row.server_id) for row in arch_assignments]
        assert sorted(archived_pairs) == sorted(servers_of(self.archived_ids(self.instances)))
        for row in arch_assignments:
            assert row.archive_batch == instance_batch[row.instance_id]

        # Cluster memberships.
        assert memberships == self.memberships
        assert Counter(
            (r.cluster_id, r.server_id, self.who(r.archived_by)) for r in arch_memberships
        ) == Counter((m[0], m[1], m[3]) for m in self.archived_memberships)
        batch_of = {
            "cluster": {row.id: row.archive_batch for row in arch["cluster"]},
            "server": {row.id: row.archive_batch for row in arch["server"]},
        }
        with_parent = Counter()
        for cluster_id, server_id, (why, parent), _ in self.archived_memberships:
            if why != "unassign":
                with_parent[(cluster_id, server_id, batch_of[why][parent])] += 1
        found = Counter((r.cluster_id, r.server_id, r.archive_batch) for r in arch_memberships)
        assert not with_parent - found, "memberships not archived in their parent's batch"

        # No app key outlives its owner; every live instance has exactly one key.
        instance_keys = Counter(row.instance_id for row in key_owners if row.instance_id)
        assert set(instance_keys) == live_instances
        assert set(instance_keys.values()) <= {1}
        assert {r.cluster_id for r in key_owners if r.cluster_id} <= set(live["cluster"])
        assert {r.server_id for r in key_owners if r.server_id} <= set(live["server"])
        assert [r.user_id for r in key_owners if r.user_id] == [self.user_id]


def test_archive_state_machine(db, engine_name):
    run_state_machine_as_test(
        lambda: ArchiveMachine(db),
        settings=settings(
            max_examples=20,
            stateful_step_count=30,
            deadline=None,
            database=None,
            # No shrinking: on a real server it can take minutes. A failure prints the
            # whole (at most 30-step) sequence; add Phase.shrink locally to minimise it.
            phases=(Phase.explicit, Phase.reuse, Phase.generate),
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
