"""Parallel launches on every Console engine: one name wins once, capacities hold exactly.

The provisioning jobs are kept out: launches go through `engine.launch` on sessions of
their own (which only records), or through the API with a dispatcher that only keeps
the job ids. SQLite serializes the writes; PostgreSQL and MariaDB lock rows.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.functional.test_provisioning_api import RecordingDispatcher

from dfe.config import Settings
from dfe.console.app import create_app
from dfe.db.session import Database
from dfe.enums import ServerType
from dfe.models import Cluster, Instance, Job, Server
from dfe.provisioning import engine, placement
from dfe.provisioning.placement import NoCapacity
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, UserCreate
from dfe.services import identity, infrastructure, instances
from dfe.services.errors import Conflict

PASSWORD = "a-long-enough-password"
OWNER = "ann@example.com"


def build_cluster(
    db,
    root: Path,
    *,
    cluster_capacity: int | None = None,
    capacities: dict[ServerType, list[int | None]] | None = None,
) -> None:
    """Cluster `local` with servers of the given capacities (one unlimited of each type by
    default), plus a disabled db server with room that must never be chosen."""
    capacities = capacities or {}
    with db.transaction(actor="test") as s:
        infrastructure.create_mount(s, MountCreate(name="disk", root_path=str(root / "storage")))
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="local", subdomain="apps.test", max_instances=cluster_capacity)
        )
        for server_type in ServerType:
            for n, capacity in enumerate(capacities.get(server_type, [None])):
                name = f"{server_type.value}-{n}"
                extra: dict[str, Any] = {"mount": "disk"} if server_type is ServerType.WEB else {}
                if server_type is ServerType.DB:
                    extra["config"] = {"driver": "sqlite", "path": str(root / "instances")}
                infrastructure.create_server(
                    s,
                    ServerCreate(
                        name=name,
                        server_type=server_type,
                        host="localhost",
                        max_instances=capacity,
                        **extra,
                    ),
                )
                infrastructure.assign_server(s, cluster.id, name)
        infrastructure.create_server(
            s,
            ServerCreate(
                name="db-disabled",
                server_type="db",
                host="localhost",
                is_enabled=False,
                config={"driver": "sqlite", "path": str(root / "instances")},
            ),
        )
        infrastructure.assign_server(s, cluster.id, "db-disabled")
        identity.create_user(s, UserCreate(email=OWNER, password=PASSWORD))


def in_parallel(count: int, task: Callable[[int], str]) -> Counter[str]:
    """Run task(0..count-1) on `count` threads released together; count the outcomes."""
    barrier = threading.Barrier(count)

    def run(n: int) -> str:
        barrier.wait()
        return task(n)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return Counter(pool.map(run, range(count)))


def engine_launch(db, name: str, cluster_name: str = "local", owner: str = OWNER) -> str:
    """One launch in a transaction of its own; 'ok', or the refusal's class name."""
    try:
        with db.transaction(actor="test") as s:
            user = identity.get_user(s, owner)
            cluster = infrastructure.get_cluster(s, cluster_name)
            engine.launch(s, user, name, cluster.id)
    except (Conflict, NoCapacity) as refusal:
        return type(refusal).__name__
    return "ok"


def assert_counters_exact(db) -> None:
    """Every server's and the cluster's counter equals its real count, within capacity."""
    with db.session() as s:
        for server in s.scalars(select(Server)):
            column = {
                ServerType.DB: Instance.db_server_id,
                ServerType.WEB: Instance.web_server_id,
                ServerType.APP: Instance.app_server_id,
            }[server.server_type]
            real = s.scalar(select(func.count()).select_from(Instance).where(column == server.id))
            assert server.instance_count == real, server.name
            if server.max_instances is not None:
                assert real <= server.max_instances, server.name
        for cluster in s.scalars(select(Cluster)):
            real = s.scalar(
                select(func.count()).select_from(Instance).where(Instance.cluster_id == cluster.id)
            )
            assert cluster.instance_count == real
            if cluster.max_instances is not None:
                assert real <= cluster.max_instances


def live_instances(db) -> list[Instance]:
    with db.session() as s:
        return list(s.scalars(select(Instance)))


def job_count(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


def test_50_parallel_launches_of_one_name_through_the_api_make_one_instance(console, db, tmp_path):
    """Through the signed API. The app gets a Database of its own on the same URL whose
    connection pool gives up after 10 s instead of 30, so that a pool deadlock fails the
    test in seconds; the pool's size is SQLAlchemy's default, as in production."""
    build_cluster(db, tmp_path)
    dispatcher = RecordingDispatcher()
    database = Database(db.url, pool_timeout=10)
    app = create_app(Settings(data_dir=tmp_path), database)
    app.state.dispatcher = dispatcher
    errors: list[str] = []

    def post(_n: int) -> str:
        client = TestClient(app, base_url="http://console.test", raise_server_exceptions=False)
        client.auth = console.admin
        response = client.post("/api/v1/instances", json={"name": "same", "owner": OWNER})
        if response.status_code == 409:
            assert response.json()["code"] == "conflict", response.text
            assert "already exists" in response.json()["detail"]
        elif response.status_code != 202:
            errors.append(response.text[:300])
        return str(response.status_code)

    try:
        outcomes = in_parallel(50, post)
    finally:
        database.dispose()
    assert outcomes == Counter({"202": 1, "409": 49}), (outcomes, errors[:1])
    assert [i.name for i in live_instances(db)] == ["same"]
    assert len(dispatcher.jobs) == 1 and job_count(db) == 1
    assert_counters_exact(db)


def test_50_parallel_launches_of_one_name_on_sessions_make_one_instance(db, tmp_path):
    build_cluster(db, tmp_path)
    outcomes = in_parallel(50, lambda _n: engine_launch(db, "twin"))
    assert outcomes == Counter({"ok": 1, "Conflict": 49}), outcomes
    assert [i.name for i in live_instances(db)] == ["twin"]
    assert job_count(db) == 1
    assert_counters_exact(db)


def test_200_parallel_launches_into_a_cluster_with_room_for_100(db, tmp_path):
    """The cluster's capacity binds (its servers would take 120)."""
    build_cluster(
        db,
        tmp_path,
        cluster_capacity=100,
        capacities={ServerType.DB: [40, 40, 40], ServerType.WEB: [60, 60]},
    )
    outcomes = in_parallel(200, lambda n: engine_launch(db, f"c{n:03d}"))
    assert outcomes == Counter({"ok": 100, "NoCapacity": 100}), outcomes
    assert len(live_instances(db)) == 100 and job_count(db) == 100
    assert_counters_exact(db)
    with db.session() as s:
        assert s.scalars(select(Cluster)).one().instance_count == 100
        disabled = s.scalars(select(Server).where(Server.name == "db-disabled")).one()
        assert disabled.instance_count == 0


def test_200_parallel_launches_onto_db_servers_with_room_for_100(db, tmp_path):
    """The db servers' capacities bind (30 + 30 + 40); the placement fills each exactly."""
    build_cluster(db, tmp_path, capacities={ServerType.DB: [30, 30, 40]})
    outcomes = in_parallel(200, lambda n: engine_launch(db, f"s{n:03d}"))
    assert outcomes == Counter({"ok": 100, "NoCapacity": 100}), outcomes
    assert len(live_instances(db)) == 100
    assert_counters_exact(db)
    with db.session() as s:
        counts = {
            server.name: server.instance_count
            for server in s.scalars(select(Server).where(Server.server_type == ServerType.DB))
        }
    assert counts == {"db-0": 30, "db-1": 30, "db-2": 40, "db-disabled": 0}


def test_200_parallel_launches_into_two_clusters_sharing_servers_with_room_for_100(db, tmp_path):
    """A second cluster shares every server of `local`: launches into the two clusters
    do not wait for each other's cluster lock, only for the rows they choose, and the
    shared db servers (30 + 30 + 40) still take exactly 100."""
    build_cluster(db, tmp_path, capacities={ServerType.DB: [30, 30, 40]})
    with db.transaction(actor="test") as s:
        twin = infrastructure.create_cluster(s, ClusterCreate(name="twin", subdomain="twin.test"))
        for name in ("db-0", "db-1", "db-2", "web-0", "app-0"):
            infrastructure.assign_server(s, twin.id, name)
    clusters = ("local", "twin")
    outcomes = in_parallel(200, lambda n: engine_launch(db, f"t{n:03d}", clusters[n % 2]))
    assert outcomes == Counter({"ok": 100, "NoCapacity": 100}), outcomes
    assert_counters_exact(db)
    with db.session() as s:
        counts = {
            server.name: server.instance_count
            for server in s.scalars(select(Server).where(Server.server_type == ServerType.DB))
        }
        per_cluster = dict(
            s.execute(
                select(Cluster.name, Cluster.instance_count).where(Cluster.name.in_(clusters))
            ).all()
        )
    assert counts == {"db-0": 30, "db-1": 30, "db-2": 40, "db-disabled": 0}
    assert sum(per_cluster.values()) == 100


def test_a_server_shared_by_two_clusters_is_not_filled_twice(db, tmp_path):
    """A launch into `local` takes db-0's last room and has not committed yet; a launch
    by someone else into `twin`, which shares db-0, must wait for it and then choose
    db-1 (a plain read would see db-0 empty and fill it twice)."""
    build_cluster(db, tmp_path, capacities={ServerType.DB: [1, 2]})
    with db.transaction(actor="test") as s:
        identity.create_user(s, UserCreate(email="bob@example.com", password=PASSWORD))
        twin = infrastructure.create_cluster(s, ClusterCreate(name="twin", subdomain="twin.test"))
        for name in ("db-0", "db-1", "web-0", "app-0"):
            infrastructure.assign_server(s, twin.id, name)
    first = db.session(actor="test")
    try:
        user = identity.get_user(first, OWNER)
        engine.launch(first, user, "first", infrastructure.get_cluster(first, "local").id)
        outcome: list[str] = []
        second = threading.Thread(
            target=lambda: outcome.append(engine_launch(db, "second", "twin", "bob@example.com"))
        )
        second.start()
        second.join(timeout=1)  # time to reach its placement, where it must wait for `first`
        first.commit()
    finally:
        first.close()
    second.join()
    assert outcome == ["ok"]
    with db.session() as s:
        placed = dict(
            s.execute(
                select(Instance.name, Server.name).join(Server, Server.id == Instance.db_server_id)
            ).all()
        )
    assert placed == {"first": "db-0", "second": "db-1"}
    assert_counters_exact(db)


def wait_until_the_deletion_waits(db, timeout: float = 10) -> None:
    """Until the deletion's counter trigger waits for the cluster's row (on SQLite,
    which locks the whole database, a moment for the other thread to reach that lock).
    MariaDB shows this wait as a statement in progress, not as an InnoDB lock wait."""
    if db.dialect == "sqlite":
        time.sleep(0.3)
        return
    query = {
        "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        "mysql": "SELECT count(*) FROM information_schema.processlist"
        " WHERE INSTR(info, 'UPDATE cluster_t SET instance_count') = 1",
    }[db.dialect]
    deadline = time.monotonic() + timeout
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        while connection.exec_driver_sql(query).scalar() == 0:
            assert time.monotonic() < deadline, "the deletion never waited for the cluster"
            time.sleep(0.02)


def test_a_launch_and_a_deletion_in_its_cluster_wait_for_each_other_without_deadlock(db, tmp_path):
    """A launch locks its cluster's row, then the servers it chooses (db, web, app); the
    counter triggers of a deleted instance of that cluster take the same rows in the
    same order. So the deletion waits for the launch, and both go through (taking the
    servers first, PostgreSQL and MariaDB broke the cycle by failing one of them)."""
    build_cluster(db, tmp_path)
    assert engine_launch(db, "victim") == "ok"
    launch = db.session(actor="test")
    failures: list[Exception] = []

    def delete_victim() -> None:
        try:
            with db.transaction(actor="test") as s:
                instances.delete_instance_record(s, "victim")
        except Exception as error:
            failures.append(error)

    deletion = threading.Thread(target=delete_victim)
    try:
        cluster_id = infrastructure.get_cluster(launch, "local").id
        launch.rollback()  # the launch's transaction starts with its cluster's lock:
        connection = launch.connection()
        placement._lock_cluster(connection, cluster_id)
        deletion.start()
        wait_until_the_deletion_waits(db)
        chosen = placement._least_loaded(connection, cluster_id)  # ...then its servers
        launch.commit()
    finally:
        launch.close()
    deletion.join(timeout=60)
    assert not deletion.is_alive()
    assert failures == []
    assert set(chosen) == set(ServerType)
    assert [i.name for i in live_instances(db)] == []
    assert_counters_exact(db)
